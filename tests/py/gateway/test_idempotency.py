"""Idempotency-Key: a retried creation answers the first response and creates nothing more."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from gateway.operations import Call
from quarry.idempotency import IdempotencyKey
from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem


def upload(api: Api, key: str | None, content: bytes = b"An idempotent upload.", **fields: str) -> httpx2.Response:
    headers = {**api.headers, **({"Idempotency-Key": key} if key is not None else {})}
    response: httpx2.Response = api.client.post(
        "/api/documents", headers=headers, files={"file": ("same.txt", content)}, data=fields
    )
    return response


def documents(admin: Admin, api: Api) -> int:
    return admin.documents(api.tenant_id)


def test_the_same_upload_again_answers_the_first_response(alice: Api, admin: Admin) -> None:
    key = str(uuid.uuid4())
    before = documents(admin, alice)
    first, second = upload(alice, key), upload(alice, key)
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json() and second.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert documents(admin, alice) == before + 1


def test_a_quoted_key_is_the_same_key(alice: Api) -> None:
    key = str(uuid.uuid4())
    assert upload(alice, key).json()["id"] == upload(alice, f'"{key}"').json()["id"]


def test_the_same_key_with_another_request_is_422(alice: Api, admin: Admin) -> None:
    key = str(uuid.uuid4())
    assert upload(alice, key).status_code == 202
    before = documents(admin, alice)
    for other in (upload(alice, key, b"Other bytes."), upload(alice, key, title="Another title")):
        problem = assert_problem(other, 422, "invalid-parameter")
        assert problem["field"] == "Idempotency-Key"
    response = alice.client.post(
        "/api/keys", headers={**alice.headers, "Idempotency-Key": key}, json={"name": "same key, other operation"}
    )
    assert_problem(response, 422, "invalid-parameter")
    assert documents(admin, alice) == before


def test_concurrent_duplicates_create_one_document(alice: Api, admin: Admin) -> None:
    key = str(uuid.uuid4())
    before = documents(admin, alice)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: upload(alice, key, b"Sent six times at once."), range(6)))
    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["id"] for response in responses}) == 1
    assert sum(response.headers.get("Idempotent-Replayed") == "true" for response in responses) == 5
    assert documents(admin, alice) == before + 1


def test_keys_are_per_tenant(alice: Api, bob: Api) -> None:
    key = str(uuid.uuid4())
    mine, theirs = upload(alice, key), upload(bob, key)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"] and "Idempotent-Replayed" not in theirs.headers


def test_only_a_creation_that_committed_is_remembered(alice: Api) -> None:
    key = str(uuid.uuid4())
    assert_problem(upload(alice, key, b""), 422)  # refused: nothing created, nothing remembered
    assert upload(alice, key, b"Now with content.").status_code == 202


def test_a_record_expires_after_a_day(alice: Api, admin: Admin) -> None:
    key = str(uuid.uuid4())
    first = upload(alice, key).json()["id"]
    admin.execute(
        "update app.idempotency_keys set expires_at = now() - interval '1 second' where key_hash = %s",
        IdempotencyKey(key).lookup_hash(alice.tenant_id),
    )
    assert upload(alice, key).json()["id"] != first, "an expired key is a new key"
    admin.execute("update app.idempotency_keys set expires_at = now() - interval '1 second'")
    assert int(str(admin.scalar("select internal.purge_idempotency_keys()"))) >= 1
    assert admin.scalar("select count(*) from app.idempotency_keys where expires_at <= now()") == 0


def test_an_api_key_creation_replays_the_key_without_storing_it_readably(alice: Api, admin: Admin) -> None:
    key = str(uuid.uuid4())
    headers = {**alice.headers, "Idempotency-Key": key}
    first = alice.client.post("/api/keys", headers=headers, json={"name": "retried bot"})
    second = alice.client.post("/api/keys", headers=headers, json={"name": "retried bot"})
    assert first.status_code == second.status_code == 201
    assert second.json()["key"] == first.json()["key"] and second.headers["Idempotent-Replayed"] == "true"
    stored = admin.scalar(
        "select response_body from app.idempotency_keys where key_hash = %s",
        IdempotencyKey(key).lookup_hash(alice.tenant_id),
    )
    assert isinstance(stored, bytes) and first.json()["key"].encode() not in stored
    listed = alice.get("/api/keys").json()["data"]
    assert [k["id"] for k in listed].count(first.json()["id"]) == 1 and len({k["name"] for k in listed}) >= 1


@pytest.mark.parametrize("value", [b"", b"   ", b"x" * 256, "café".encode(), b"tab\there"])
def test_a_malformed_key_is_422(alice: Api, value: bytes) -> None:
    headers = [(name.encode(), header.encode()) for name, header in alice.headers.items()]
    headers.append((b"Idempotency-Key", value))
    response = alice.client.post("/api/documents", headers=headers, files={"file": ("x.txt", b"text")})
    assert assert_problem(response, 422, "invalid-parameter")["field"] == "Idempotency-Key"


def test_any_visible_ascii_is_a_key(alice: Api) -> None:
    assert upload(alice, 'a"b"c-' + uuid.uuid4().hex).status_code == 202


def test_the_key_is_described_in_the_contract(alice: Api) -> None:
    document = alice.client.get("/openapi.json").json()
    for path, method in (("/api/documents", "post"), ("/api/keys", "post")):
        parameters = {p["name"]: p for p in document["paths"][path][method]["parameters"]}
        assert parameters["Idempotency-Key"]["in"] == "header" and not parameters["Idempotency-Key"]["required"]


def test_a_replay_never_names_a_deleted_document(alice: Api) -> None:
    key = str(uuid.uuid4())
    first = upload(alice, key).json()["id"]
    assert alice.delete(f"/api/documents/{first}").status_code == 204
    again = upload(alice, key)
    assert again.status_code == 202 and again.json()["id"] != first
    assert "Idempotent-Replayed" not in again.headers


def test_a_retry_after_a_lost_response_creates_no_duplicate(
    alice: Api, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The creation committed but its answer never reached the client (here: the response fails)."""
    key = str(uuid.uuid4())
    before = documents(admin, alice)
    answer = Call.created

    def lost(self: Call, *args: object, **kwargs: object) -> object:
        monkeypatch.setattr(Call, "created", answer)  # only the first answer is lost
        raise ConnectionResetError("the client went away")

    monkeypatch.setattr(Call, "created", lost)
    assert upload(alice, key).status_code == 500  # the client saw no 202
    assert documents(admin, alice) == before + 1  # ... but the document exists
    retried = upload(alice, key)
    assert retried.status_code == 202 and retried.headers["Idempotent-Replayed"] == "true"
    assert documents(admin, alice) == before + 1
