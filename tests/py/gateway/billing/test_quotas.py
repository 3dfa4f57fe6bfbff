"""Quotas through the gateway: 402/415 bodies a client can act on, refusals
that leave nothing behind, concurrent callers that never overshoot, plan
changes that apply on the next request, and UTC period rollover."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quarry.search.service import SearchService
from tests.py.support.admin import Admin
from tests.py.support.api import FIXTURES, Api, assert_problem

DOCX = "sample.docx"
Clock = Callable[[datetime | None], None]


def in_parallel(count: int, call: Callable[[int], httpx2.Response]) -> list[httpx2.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(call, range(count)))


def statuses(responses: list[httpx2.Response]) -> list[int]:
    return sorted(response.status_code for response in responses)


def blobs_of(api: Api, data_dir: Path) -> int:
    folder = data_dir / "blobs" / "documents" / str(api.tenant_id)
    return len(list(folder.iterdir())) if folder.exists() else 0


def next_month_start(now: datetime) -> datetime:
    return (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) + timedelta(days=32)).replace(day=1)


def test_twenty_simultaneous_uploads_with_three_left(free_user: Api, admin: Admin, data_dir: Path) -> None:
    admin.prefill(free_user.tenant_id, "documents_per_month", 47)

    responses = in_parallel(20, lambda n: free_user.upload(f"note-{n}.txt", f"note {n}".encode()))

    assert statuses(responses) == [202] * 3 + [402] * 17
    refusal = next(r for r in responses if r.status_code == 402)
    body = assert_problem(refusal, 402)
    assert body["type"] == "https://quarry.dev/problems/quota-exceeded"
    assert (body["limit"], body["used"], body["limit_value"], body["plan"]) == ("documents_per_month", 50, 50, "free")
    assert body["resets_at"] == next_month_start(datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert admin.used(free_user.tenant_id, "documents_per_month") == 50
    assert admin.documents(free_user.tenant_id) == 3
    assert blobs_of(free_user, data_dir) == 3, "a refused upload leaves no stored file"


def test_storage_near_the_limit_admits_only_what_fits(free_user: Api, admin: Admin) -> None:
    admin.prefill(free_user.tenant_id, "storage_bytes", 500_000_000 - 250)

    responses = in_parallel(10, lambda n: free_user.upload(f"hundred-{n}.txt", b"x" * 99 + b"\n"))

    assert statuses(responses) == [202] * 2 + [402] * 8
    body = assert_problem(next(r for r in responses if r.status_code == 402), 402)
    assert (body["limit"], body["used"], body["limit_value"]) == ("storage_bytes", 500_000_000 - 50, 500_000_000)
    assert body["resets_at"] is None
    assert admin.used(free_user.tenant_id, "storage_bytes") == 500_000_000 - 50

    document_id = next(r for r in responses if r.status_code == 202).json()["id"]
    assert free_user.delete(f"/api/documents/{document_id}").status_code == 204
    assert admin.used(free_user.tenant_id, "storage_bytes") == 500_000_000 - 150, "deleting frees its storage"
    assert admin.used(free_user.tenant_id, "documents_per_month") == 2, "... but not the monthly count"


def test_an_upload_that_cannot_fit_is_refused_before_its_body_is_read(free_user: Api, admin: Admin) -> None:
    admin.prefill(free_user.tenant_id, "documents_per_month", 50)
    oversized = b"x" * (5 * 1024 * 1024)  # over the test gateway's 4 MiB cap: reading it would be a 413

    body = assert_problem(free_user.upload("big.txt", oversized), 402)
    assert body["limit"] == "documents_per_month"

    admin.prefill(free_user.tenant_id, "documents_per_month", 0)
    admin.prefill(free_user.tenant_id, "storage_bytes", 500_000_000 - 1024 * 1024)
    body = assert_problem(free_user.upload("big.txt", oversized), 402)
    assert (body["limit"], body["used"]) == ("storage_bytes", 500_000_000 - 1024 * 1024)
    assert admin.used(free_user.tenant_id, "documents_per_month") == 0, "the precheck counts nothing"

    admin.prefill(free_user.tenant_id, "storage_bytes", 0)
    assert_problem(free_user.upload("big.txt", oversized), 413)


def test_ten_simultaneous_queries_with_one_left(free_user: Api, admin: Admin) -> None:
    admin.prefill(free_user.tenant_id, "queries_per_day", 99)

    def search(n: int) -> httpx2.Response:
        response: httpx2.Response = free_user.client.post(
            "/api/query", headers=free_user.headers, json={"query": f"granite {n}", "mode": "sparse"}
        )
        return response

    responses = in_parallel(10, search)

    assert statuses(responses) == [200] + [402] * 9
    body = assert_problem(next(r for r in responses if r.status_code == 402), 402)
    assert (body["limit"], body["used"], body["limit_value"]) == ("queries_per_day", 100, 100)
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert body["resets_at"] == tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert admin.used(free_user.tenant_id, "queries_per_day") == 100
    logged = admin.scalar("select count(*) from app.query_log where tenant_id = %s", free_user.tenant_id)
    assert logged == 1, "refused queries are not logged"


def test_a_format_outside_the_plan_is_415_until_the_plan_includes_it(free_user: Api, admin: Admin) -> None:
    content = (FIXTURES / DOCX).read_bytes()

    body = assert_problem(free_user.upload(DOCX, content), 415)
    assert body["type"] == "https://quarry.dev/problems/format-not-in-plan"
    assert body["plans_allowing"] == ["pro", "enterprise"]
    assert body["plan"] == "free"
    assert "application/pdf" in body["allowed_formats"]

    admin.subscribe(free_user.tenant_id, "pro", "active")
    assert free_user.upload(DOCX, content).status_code == 202, "an active Pro subscription applies at once"

    admin.subscribe(free_user.tenant_id, "pro", "canceled")
    assert_problem(free_user.upload(DOCX, content), 415)


def test_plan_changes_apply_on_the_next_request(free_user: Api, admin: Admin, clock: Clock) -> None:
    def usage() -> dict[str, Any]:
        response = free_user.get("/api/billing/usage")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    assert (usage()["plan"], usage()["limits"]["documents_per_month"]["limit"]) == ("free", 50)

    admin.subscribe(free_user.tenant_id, "pro", "active")
    assert (usage()["plan"], usage()["subscription_status"]) == ("pro", "active")
    assert usage()["limits"]["queries_per_day"]["limit"] is None

    now = datetime.now(UTC)
    clock(now)
    admin.subscribe(free_user.tenant_id, "pro", "past_due")
    clock(now + timedelta(days=6, hours=23))
    assert usage()["plan"] == "pro", "past_due keeps Pro during the 7-day grace period"
    clock(now + timedelta(days=7, seconds=1))
    assert (usage()["plan"], usage()["subscription_status"]) == ("free", "past_due")

    admin.subscribe(free_user.tenant_id, "pro", "canceled")
    clock(None)
    assert usage()["plan"] == "free"


def test_counts_reset_at_the_utc_boundary(free_user: Api, admin: Admin, clock: Clock) -> None:
    almost_midnight = datetime(2031, 1, 31, 23, 59, 59, tzinfo=UTC)
    clock(almost_midnight)
    admin.prefill(free_user.tenant_id, "documents_per_month", 50)
    admin.prefill(free_user.tenant_id, "queries_per_day", 100)
    assert_problem(free_user.upload("late.txt", b"late"), 402)
    query = {"query": "granite", "mode": "sparse"}
    assert_problem(free_user.client.post("/api/query", headers=free_user.headers, json=query), 402)

    clock(almost_midnight + timedelta(seconds=1))

    assert free_user.upload("early.txt", b"early").status_code == 202
    assert free_user.client.post("/api/query", headers=free_user.headers, json=query).status_code == 200
    limits = free_user.get("/api/billing/usage").json()["limits"]
    assert limits["documents_per_month"] == {"used": 1, "limit": 50, "resets_at": "2031-03-01T00:00:00+00:00"}
    assert limits["queries_per_day"] == {"used": 1, "limit": 100, "resets_at": "2031-02-02T00:00:00+00:00"}


def test_usage_lists_every_limit(free_user: Api) -> None:
    assert free_user.upload("one.txt", b"one").status_code == 202

    response = free_user.get("/api/billing/usage")

    assert response.status_code == 200
    body = response.json()
    assert (body["plan"], body["subscription_status"]) == ("free", None)
    limits = body["limits"]
    assert set(limits) == {
        "documents_per_month",
        "storage_bytes",
        "drive_folders",
        "queries_per_day",
        "exports",
        "requests_per_hour",
    }
    assert limits["documents_per_month"]["used"] == 1
    assert limits["storage_bytes"] == {"used": 3, "limit": 500_000_000, "resets_at": None}
    assert limits["requests_per_hour"]["used"] == 2 and limits["requests_per_hour"]["limit"] == 50
    assert limits["exports"] == {"used": 0, "limit": 1, "resets_at": None}


def chunked_upload(api: Api, name: str, content: bytes, piece: int = 64 * 1024) -> httpx2.Response:
    """A multipart upload sent without Content-Length (Transfer-Encoding: chunked)."""
    boundary = "quarry-chunked-boundary"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def pieces() -> Iterator[bytes]:
        yield head
        for start in range(0, len(content), piece):
            yield content[start : start + piece]
        yield tail

    response: httpx2.Response = api.client.post(
        "/api/documents",
        headers={**api.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=pieces(),
    )
    return response


def block_blob_storage(api: Api, data_dir: Path) -> None:
    """Make storing any file of this tenant fail: its blob folder is a plain file."""
    folder = data_dir / "blobs" / "documents" / str(api.tenant_id)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_bytes(b"")


def test_a_chunked_upload_is_read_no_further_than_the_storage_left(
    free_user: Api, admin: Admin, data_dir: Path
) -> None:
    admin.prefill(free_user.tenant_id, "storage_bytes", 500_000_000 - 1024 * 1024)
    block_blob_storage(free_user, data_dir)  # were the file stored first, this would be a 503

    body = assert_problem(chunked_upload(free_user, "big.txt", b"granite " * (256 * 1024)), 402)  # 2 MiB

    assert (body["limit"], body["used"]) == ("storage_bytes", 500_000_000 - 1024 * 1024)
    assert admin.used(free_user.tenant_id, "documents_per_month") == 0
    assert admin.documents(free_user.tenant_id) == 0


def test_a_chunked_upload_that_fits_the_storage_left_is_taken(free_user: Api, admin: Admin) -> None:
    admin.prefill(free_user.tenant_id, "storage_bytes", 500_000_000 - 1024 * 1024)
    response = chunked_upload(free_user, "fits.txt", b"granite " * (64 * 1024))  # 512 KiB
    assert response.status_code == 202, response.text
    assert admin.used(free_user.tenant_id, "storage_bytes") == 500_000_000 - 1024 * 1024 + 512 * 1024


def test_a_format_outside_the_plan_is_refused_before_the_file_is_stored(
    free_user: Api, admin: Admin, data_dir: Path
) -> None:
    block_blob_storage(free_user, data_dir)  # were the file stored first, this would be a 503
    body = assert_problem(free_user.upload(DOCX, (FIXTURES / DOCX).read_bytes()), 415)
    assert body["type"] == "https://quarry.dev/problems/format-not-in-plan"
    assert admin.used(free_user.tenant_id, "documents_per_month") == 0


def test_a_query_over_the_daily_quota_is_refused_before_it_is_embedded(
    free_user: Api, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[str] = []
    original = SearchService._embed_and_search

    def spy(self: SearchService, tenant_id: uuid.UUID, query: str, *args: Any) -> Any:
        embedded.append(query)
        return original(self, tenant_id, query, *args)

    monkeypatch.setattr(SearchService, "_embed_and_search", spy)
    admin.prefill(free_user.tenant_id, "queries_per_day", 99)
    search = {"query": "granite", "mode": "hybrid"}

    assert free_user.client.post("/api/query", headers=free_user.headers, json=search).status_code == 200
    assert_problem(free_user.client.post("/api/query", headers=free_user.headers, json=search), 402)

    assert embedded == ["granite"], "the refused query never reached the model"
