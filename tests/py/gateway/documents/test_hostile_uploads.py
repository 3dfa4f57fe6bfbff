"""Acceptance for bounded parsing (issue 13, item 1): the hostile-file suite against a real gateway and worker.

A Free account uploads every hostile file at once. Free takes PDF, TXT, JSON
and Markdown only, so the ZIP formats, CSV and HTML are refused at upload
(415 format-not-in-plan) after a bounded sniff; a Pro attacker uploads those
too, so that every hostile file also reaches the worker's parse children.
Meanwhile another tenant uploads a document and searches it. The gateway's
RSS and the worker's (its parse children included) are sampled throughout.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from quarry.dev.hostile import MIB, write_hostile_files
from quarry.dev.memory import PeakRss, descendants
from tests.py.support.admin import Admin
from tests.py.support.api import FIXTURES
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.net import free_port
from tests.py.support.processes import running_gateway, running_worker, wait_for
from tests.py.support.tokens import JwksServer, TokenFactory

# `serial`: asserts latencies, so it runs alone, after the parallel pass (Makefile test-py).
pytestmark = [pytest.mark.slow, pytest.mark.serial]

EXTRACT_MEMORY_MIB = 1024
GATEWAY_GROWTH_LIMIT = 128 * 1000 * 1000
FREE_FORMATS = (".pdf", ".json", ".txt", ".md")


def gateway_pid(port: int) -> int:
    """The uvicorn process listening on port (running_gateway does not hand out its Popen)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
            inode = fields[9]
    assert inode is not None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(Path(fd).readlink().name == f"socket:[{inode}]" for fd in (entry / "fd").iterdir()):
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no process listens on :{port}")


IN_FLIGHT_REFUSALS: list[str] = []


def upload(base: str, token: str, path: Path, name: str) -> httpx.Response:
    """Sent again, after Retry-After, while the tenant has too many uploads in flight (as an attacker would)."""
    while True:
        with path.open("rb") as file:
            response = httpx.post(
                f"{base}/api/documents",
                headers={"Authorization": f"Bearer {token}"},
                files={"file": (name, file)},
                timeout=120,
            )
        if response.status_code != 429 or response.json().get("limit") != "uploads_in_flight":
            return response
        IN_FLIGHT_REFUSALS.append(name)
        time.sleep(float(response.headers["Retry-After"]))


def statuses(database: DatabaseUrls, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(database.admin_url) as conn:
        rows = conn.execute(
            "select id::text, status::text, error_reason from app.documents where id = any(%s::uuid[])", (ids,)
        ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_hostile_files_are_refused_within_the_budget_while_another_tenant_works(
    database: DatabaseUrls,
    jwks_server: JwksServer,
    tokens: TokenFactory,
    admin: Admin,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    files = write_hostile_files(tmp_path_factory.mktemp("hostile"))
    free, pro_attacker, neighbour = admin.new_user(), admin.new_user(), admin.new_user()
    admin.subscribe(pro_attacker, "pro", "active")
    admin.subscribe(neighbour, "pro", "active")
    env = gateway_env(
        database,
        jwks_server,
        tmp_path / "data",
        UPLOAD_MAX_BYTES=str(80 * MIB),
        EXTRACT_MEMORY_MIB=str(EXTRACT_MEMORY_MIB),
        EXTRACT_PROCESSES="2",
        EXTRACT_TIMEOUT_SECONDS="8",
        UPLOADS_IN_FLIGHT_PER_TENANT="4",  # as shipped
    )
    port = free_port()
    with (
        running_worker(env, tmp_path / "worker.log") as worker,
        running_gateway(env, port, tmp_path / "gateway.log") as base,
    ):
        # The worker is ready once its parse children are up (it warms them before taking jobs).
        wait_for(lambda: len(descendants(worker.pid)) >= 2, timeout=60, message="the worker's parse children")
        # The gateway loads its query model in the background; a first search waits for it, so
        # that the model's memory is in the baseline, not counted as growth.
        warm = httpx.post(
            f"{base}/api/query", headers={"Authorization": f"Bearer {tokens.es256(neighbour)}"},
            json={"query": "warm up"}, timeout=60,
        )  # fmt: skip
        assert warm.status_code == 200, warm.text
        sampler = PeakRss(gateway_pid(port), worker.pid)
        uploads: list[tuple[uuid.UUID, str, httpx.Response]] = []
        with sampler.running(), ThreadPoolExecutor(max_workers=16) as pool:
            attacks = [
                (free, name, pool.submit(upload, base, tokens.es256(free), path, name)) for name, path in files.items()
            ] + [
                (pro_attacker, name, pool.submit(upload, base, tokens.es256(pro_attacker), path, name))
                for name, path in files.items()
                if path.suffix not in FREE_FORMATS
            ]
            neighbour_result = pool.submit(neighbour_uploads_and_searches, base, tokens.es256(neighbour))
            uploads = [(tenant, name, future.result()) for tenant, name, future in attacks]
            accepted = {}
            for tenant, name, response in uploads:
                if response.status_code == 202:
                    accepted[response.json()["id"]] = (tenant, name)
                else:
                    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["detail"]

            def all_done() -> bool:
                return all(status in ("ready", "failed") for status, _ in statuses(database, list(accepted)).values())

            wait_for(all_done, timeout=120, interval=0.5, message="every hostile document to finish")
            neighbour_seconds = neighbour_result.result()
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]

    outcomes = statuses(database, list(accepted))
    free_refusals = sorted(name for tenant, name, response in uploads if tenant == free and response.status_code != 202)
    print(
        f"\ngateway: base {sampler.gateway_base / MIB:.0f} MiB, peak {sampler.gateway_peak / MIB:.0f} MiB; "
        f"worker tree: base {sampler.worker_base / MIB:.0f} MiB, peak {sampler.worker_peak / MIB:.0f} MiB; "
        f"{sampler.samples} samples; neighbour upload→ready→search {neighbour_seconds:.1f} s"
    )
    for document_id, (status, reason) in sorted(outcomes.items(), key=lambda item: accepted[item[0]][1]):
        print(f"  {accepted[document_id][1]:22} {status}: {reason}")
    print(f"  Free refused at upload: {', '.join(free_refusals)}")
    assert {name for name in files if name.endswith(FREE_FORMATS)} == {
        name for document_id, (tenant, name) in accepted.items() if tenant == free
    }
    # Nine uploads at once from one account: past its uploads in flight, the rest waited their turn.
    assert IN_FLIGHT_REFUSALS
    # Every file reached the worker, from the Free account or else from the Pro one.
    assert sorted(name for _, name in accepted.values()) == sorted(files)
    assert all(status == "failed" and reason for status, reason in outcomes.values()), outcomes
    assert sampler.gateway_peak - sampler.gateway_base <= GATEWAY_GROWTH_LIMIT
    assert sampler.worker_peak - sampler.worker_base <= EXTRACT_MEMORY_MIB * MIB


def neighbour_uploads_and_searches(base: str, token: str) -> float:
    """Another tenant's ordinary day during the attack: upload, wait until ready, search. Returns the seconds taken."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"}
    response = upload(base, token, FIXTURES / "sample.pdf", "sample.pdf")
    assert response.status_code == 202, response.text
    document_id = response.json()["id"]
    seen: dict[str, Any] = {}

    def ready() -> bool:
        seen.update(httpx.get(f"{base}/api/documents/{document_id}", headers=headers, timeout=30).json())
        assert seen["status"] != "failed", seen
        return bool(seen["status"] == "ready")

    wait_for(ready, timeout=90, interval=0.5, message="the neighbour's document")
    found = httpx.post(f"{base}/api/query", headers=headers, json={"query": "granite"}, timeout=30)
    assert found.status_code == 200, found.text
    assert document_id in {result["document"]["id"] for result in found.json()["results"]}
    return time.monotonic() - started
