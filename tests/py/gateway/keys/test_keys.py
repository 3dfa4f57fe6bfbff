"""API keys end to end: create (gateway and RPC alike), use, list, revoke,
and every way a key is refused."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from quarry.keys.format import checksum
from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory, assert_problem, call, create_key, new_key
from tests.py.support.database import DatabaseUrls
from tests.py.support.tenant import act_as
from tests.py.support.tokens import TokenFactory


def rpc_create(database: DatabaseUrls, tenant: uuid.UUID, name: str) -> tuple[str | None, dict[str, Any] | None]:
    """api.create_api_key as supabase-js calls it (as the user, through the exposed schema)."""
    with psycopg.connect(database.tenant_url) as conn:
        act_as(conn, tenant)
        try:
            row = conn.execute("select (k).* from (select api.create_api_key(%s) as k) as issued", (name,)).fetchone()
        except psycopg.Error as error:
            return error.sqlstate, json.loads(error.diag.message_detail or "{}")
        assert row is not None
        return None, {"key": row[2]}


def test_create_returns_the_key_once_and_lists_never_show_it(owner: Api) -> None:
    response = create_key(owner, "support bot", expires_at="2099-01-01T00:00:00Z")

    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    issued = response.json()
    assert issued["key"].startswith("sk_live_") and len(issued["key"]) == 59
    assert issued["key"].endswith(issued["last4"]) and issued["key"].startswith(issued["prefix"] + "_")
    assert (issued["name"], issued["expires_at"]) == ("support bot", "2099-01-01T00:00:00+00:00")

    listing = owner.get("/api/keys")
    assert listing.status_code == 200
    (listed,) = listing.json()["data"]
    assert set(listed) == {
        "id", "name", "prefix", "last4", "status", "created_at", "expires_at", "revoked_at", "last_used_at",
        "requests_this_hour",
    }  # fmt: skip
    assert (listed["id"], listed["status"], listed["last_used_at"]) == (issued["id"], "active", None)
    assert issued["key"][len(issued["prefix"]) + 1 :][:-4] not in listing.text, "no part of the secret is listed"


def test_a_key_acts_for_its_owner_everywhere(owner: Api, stranger: Api, admin: Admin) -> None:
    key_id, key = new_key(owner)
    _, stranger_key = new_key(stranger)
    bearer, bare = f"Bearer {key}", key

    uploaded = call(owner.client, "POST", "/api/documents", bearer, files={"file": ("a.txt", b"quarry granite")})
    assert uploaded.status_code == 202, uploaded.text
    document_id = uploaded.json()["id"]
    listed = call(owner.client, "GET", "/api/documents", bare)
    assert [d["id"] for d in listed.json()["data"]] == [document_id]
    searched = call(owner.client, "POST", "/api/query", bearer, json={"query": "granite", "mode": "sparse"})
    assert searched.status_code == 200, searched.text
    assert admin.scalar("select api_key_id from app.query_log where tenant_id = %s", owner.tenant_id) == key_id

    assert call(owner.client, "GET", "/api/documents", f"Bearer {stranger_key}").json()["data"] == []
    assert call(owner.client, "GET", f"/api/documents/{document_id}", stranger_key).status_code == 404
    assert call(owner.client, "DELETE", f"/api/documents/{document_id}", stranger_key).status_code == 404
    assert admin.documents(owner.tenant_id) == 1


def test_keys_manage_keys_too_but_only_their_owners(owner: Api, stranger: Api) -> None:
    key_id, key = new_key(owner)
    stranger_key_id, _ = new_key(stranger)

    assert call(owner.client, "DELETE", f"/api/keys/{stranger_key_id}", f"Bearer {key}").status_code == 404
    assert [k["id"] for k in call(owner.client, "GET", "/api/keys", key).json()["data"]] == [str(key_id)]
    assert call(owner.client, "DELETE", f"/api/keys/{key_id}", key).status_code == 204
    assert call(owner.client, "GET", "/api/keys", key).status_code == 401
    assert owner.get("/api/keys").json()["data"][0]["status"] == "revoked"
    assert owner.delete(f"/api/keys/{key_id}").status_code == 204, "revoking again changes nothing"
    assert owner.delete(f"/api/keys/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize(
    ("name", "why"),
    [("x" * 10_000, "10,000 characters"), ("bell\x07", "a control character"), ("line\nbreak", "a newline"),
     ("", "empty")],
)  # fmt: skip
def test_bad_names_are_422_on_both_paths(owner: Api, database: DatabaseUrls, name: str, why: str) -> None:
    body = assert_problem(create_key(owner, name), 422)
    assert body["field"] == "name", why

    sqlstate, response = rpc_create(database, owner.tenant_id, name)
    assert (sqlstate, response) == ("PGRST", {"status": 422, "headers": {}}), "supabase-js gets the same 422"
    assert owner.get("/api/keys").json()["data"] == []


def test_bad_expiry_and_bodies_are_refused(owner: Api) -> None:
    assert assert_problem(create_key(owner, "old", expires_at="2001-01-01T00:00:00Z"), 422)["field"] == "expires_at"
    assert assert_problem(create_key(owner, "naive", expires_at="2099-01-01T00:00:00"), 422)["field"] == "expires_at"
    assert_problem(create_key(owner, "x", scopes=["all"]), 422)
    response = owner.client.post("/api/keys", headers=owner.headers, content=b"{not json")
    assert_problem(response, 400)


def test_the_rpc_path_issues_keys_that_work(owner: Api, database: DatabaseUrls) -> None:
    sqlstate, issued = rpc_create(database, owner.tenant_id, "from supabase-js")
    assert sqlstate is None and issued is not None
    assert call(owner.client, "GET", "/api/documents", issued["key"]).status_code == 200


def forge(key: str, *, lookup: str | None = None, secret: str | None = None) -> str:
    """A key with a valid checksum but other parts: past the checksum, it must fail in the database."""
    body = key[:-6]
    prefix, lookup_id, secret_part = body[:8], body[8:20], body[21:]
    new_body = f"{prefix}{lookup or lookup_id}_{secret or secret_part}"
    return new_body + checksum(new_body)


def refusals(owner: Api, admin: Admin, tokens: TokenFactory) -> dict[str, str]:
    """One Authorization header per way a credential must be refused."""
    _, good = new_key(owner, "good")
    revoked_id, revoked = new_key(owner, "revoked")
    expired_id, expired = new_key(owner, "expired")
    owner.delete(f"/api/keys/{revoked_id}")
    admin.execute("update app.api_keys set expires_at = now() - interval '1 second' where id = %s", expired_id)
    gone_user = admin.new_user()
    admin.subscribe(gone_user, "pro", "active")
    gone = Api(owner.client, tokens.es256(gone_user), gone_user)
    _, orphan = new_key(gone, "orphan")
    admin.execute("delete from auth.users where id = %s", gone_user)
    return {
        "bad checksum": f"Bearer {good[:-1]}{'0' if good[-1] != '0' else '1'}",
        "unknown id": f"Bearer {forge(good, lookup='ZZZZZZZZZZZZ')}",
        "wrong secret": f"Bearer {forge(good, secret='A' * 32)}",
        "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expired}",
        "deleted user": orphan,
        "empty bearer": "Bearer ",
        "bearer only": "Bearer",
        "jwt where a key goes": owner.token,
        "key in another scheme": f"Token {good}",
        "basic auth": "Basic dXNlcjpwYXNz",
    }


def test_every_bad_credential_is_a_401_problem(owner: Api, admin: Admin, tokens: TokenFactory) -> None:
    for why, authorization in refusals(owner, admin, tokens).items():
        response = call(owner.client, "GET", "/api/documents", authorization)
        body = assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), why
        assert "RateLimit-Limit" not in response.headers, why
        assert str(body["type"]).endswith("/unauthorized"), why


@pytest.mark.serial  # compares latencies: runs alone, after the parallel pass
def test_refusals_past_the_checksum_take_the_same_time(
    owner: Api, admin: Admin, tokens: TokenFactory, make_gateway: GatewayFactory
) -> None:
    cases = refusals(owner, admin, tokens)
    # Each credential fails 9 times from one address: more than the throttles allow by default.
    lenient = make_gateway(AUTH_FAILURES_PER_KEY="100", AUTH_FAILURES_PER_ADDRESS="100")
    timed = ("unknown id", "wrong secret", "revoked", "expired", "deleted user")
    medians: dict[str, float] = {}
    for _ in range(2):  # warm up
        for why in timed:
            call(lenient, "GET", "/api/documents", cases[why])
    samples: dict[str, list[float]] = {why: [] for why in timed}
    for _ in range(7):
        for why in timed:  # interleaved, so drift hits every case alike
            started = time.perf_counter()
            assert call(lenient, "GET", "/api/documents", cases[why]).status_code == 401
            samples[why].append((time.perf_counter() - started) * 1000)
    medians = {why: statistics.median(values) for why, values in samples.items()}
    # Each pays one bcrypt check (~50 ms); skipping it would show as a gap of about that size.
    assert max(medians.values()) - min(medians.values()) < 20, medians
    assert min(medians.values()) > 20, medians


def test_a_malformed_stored_hash_refuses_the_key_instead_of_failing(owner: Api, admin: Admin) -> None:
    key_id, key = new_key(owner)
    admin.execute("update app.api_keys set secret_hash = '$2a$04$' || repeat('x', 10) where id = %s", key_id)

    assert_problem(call(owner.client, "GET", "/api/documents", key), 401)


def test_last_used_is_written_at_most_once_a_minute(owner: Api, admin: Admin) -> None:
    key_id, key = new_key(owner)

    def last_used() -> object:
        return admin.scalar("select last_used_at from app.api_keys where id = %s", key_id)

    call(owner.client, "GET", "/api/documents", key)
    assert last_used() is not None, "the first use is recorded"
    # The gateway does not write again within a minute, though the database would allow it now.
    admin.execute("update app.api_keys set last_used_at = now() - interval '61 seconds' where id = %s", key_id)
    stale = last_used()
    call(owner.client, "GET", "/api/documents", key)
    assert last_used() == stale

    # Nor does the database, whichever gateway asks, within a minute of the last write.
    admin.execute("update app.api_keys set last_used_at = now() - interval '30 seconds' where id = %s", key_id)
    recent = last_used()
    admin.execute("select internal.touch_api_key(tenant_id, id) from app.api_keys where id = %s", key_id)
    assert last_used() == recent
    admin.execute("update app.api_keys set last_used_at = now() - interval '61 seconds' where id = %s", key_id)
    admin.execute("select internal.touch_api_key(tenant_id, id) from app.api_keys where id = %s", key_id)
    assert admin.scalar("select last_used_at > now() - interval '5 seconds' from app.api_keys where id = %s", key_id)


def test_keys_draw_on_the_accounts_hourly_allowance(owner: Api, admin: Admin) -> None:
    key_id, key = new_key(owner)
    other_id, other = new_key(owner, "other")
    call(owner.client, "GET", "/api/documents", key)
    call(owner.client, "GET", "/api/documents", key)
    counts = {k["id"]: k["requests_this_hour"] for k in owner.get("/api/keys").json()["data"]}
    assert counts == {str(key_id): 2, str(other_id): 0}, "each key's share is counted"

    admin.execute(
        """update app.rate_limit_windows set requests = 500
           where tenant_id = %s and subject_id = tenant_id""",
        owner.tenant_id,
    )
    refused = call(owner.client, "GET", "/api/documents", other)
    assert_problem(refused, 429)
    assert refused.headers["RateLimit-Limit"] == "500"
    assert_problem(owner.get("/api/documents"), 429)  # the user's own session shares the allowance


def test_a_key_cannot_create_keys(owner: Api) -> None:
    _, key = new_key(owner)

    response = call(owner.client, "POST", "/api/keys", key, json={"name": "minted by a key"})

    assert assert_problem(response, 403)["type"] == "https://quarry.dev/problems/forbidden"
    assert len(owner.get("/api/keys").json()["data"]) == 1


@pytest.mark.parametrize("escaped", [r"nul\u0000byte", r"lone\ud800surrogate"])
def test_unstorable_text_is_422_not_500(owner: Api, escaped: str) -> None:
    headers = {**owner.headers, "Content-Type": "application/json"}
    response = owner.client.post("/api/keys", headers=headers, content=f'{{"name": "{escaped}"}}'.encode())
    assert_problem(response, 422, "invalid-parameter")
    search = owner.client.post("/api/query", headers=headers, content=f'{{"query": "{escaped}"}}'.encode())
    assert_problem(search, 422)


def test_keys_are_never_logged(owner: Api, caplog: pytest.LogCaptureFixture, keys_gateway: TestClient) -> None:
    with caplog.at_level("DEBUG"):
        _, key = new_key(owner)
        call(keys_gateway, "GET", "/api/documents", key)
        call(keys_gateway, "GET", "/api/documents", key[:-1] + "x")
    secret = key[21:-6]
    assert secret not in caplog.text and key not in caplog.text
