"""Key churn is bounded in SQL: new keys per account and UTC hour (the plan's
`api_keys_per_hour`), counted by api.create_api_key itself, so the gateway and
the RPC share one allowance that revoking keys does not give back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg
from starlette.testclient import TestClient

from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem, create_key, new_key
from tests.py.support.database import DatabaseUrls
from tests.py.support.tenant import act_as
from tests.py.support.tokens import TokenFactory

FREE_KEYS_PER_HOUR = 10
HALF_PAST_TEN = datetime(2030, 1, 1, 10, 30, tzinfo=UTC)


def free_user(admin: Admin, client: TestClient, tokens: TokenFactory) -> Api:
    tenant = admin.new_user()
    return Api(client, tokens.es256(tenant), tenant)


def rpc_create(database: DatabaseUrls, tenant: uuid.UUID, name: str) -> int:
    """api.create_api_key as supabase-js calls it; the HTTP status PostgREST would answer."""
    with psycopg.connect(database.tenant_url) as conn:
        act_as(conn, tenant)
        try:
            conn.execute("select api.create_api_key(%s)", (name,))
        except psycopg.Error as error:
            if error.sqlstate != "PGRST":
                raise
            return int(json.loads(error.diag.message_detail or "{}")["status"])  # the status PostgREST answers
    return 201


def test_the_eleventh_key_in_an_hour_is_a_429_with_retry_after(
    admin: Admin, keys_gateway: TestClient, tokens: TokenFactory, clock: Callable[[datetime | None], None]
) -> None:
    clock(HALF_PAST_TEN)
    api = free_user(admin, keys_gateway, tokens)
    for n in range(FREE_KEYS_PER_HOUR):
        assert create_key(api, f"bot {n}").status_code == 201

    refused = create_key(api, "one more")

    body = assert_problem(refused, 429, "rate-limited")
    assert refused.headers["Retry-After"] == "1800"
    assert {k: body[k] for k in ("limit", "limit_value", "used", "plan", "resets_at", "retry_after")} == {
        "limit": "api_keys_per_hour",
        "limit_value": FREE_KEYS_PER_HOUR,
        "used": FREE_KEYS_PER_HOUR,
        "plan": "free",
        "resets_at": "2030-01-01T11:00:00Z",
        "retry_after": 1800,
    }
    assert "10 new API keys per hour" in body["detail"]
    assert len(api.get("/api/keys").json()["data"]) == FREE_KEYS_PER_HOUR, "the refused key was not made"


def test_revoking_keys_gives_no_creation_back_and_the_next_hour_does(
    admin: Admin, keys_gateway: TestClient, tokens: TokenFactory, clock: Callable[[datetime | None], None]
) -> None:
    clock(HALF_PAST_TEN)
    api = free_user(admin, keys_gateway, tokens)
    for n in range(FREE_KEYS_PER_HOUR):
        key_id, _ = new_key(api, f"bot {n}")
        assert api.delete(f"/api/keys/{key_id}").status_code == 204

    assert_problem(create_key(api, "after revoking"), 429, "rate-limited")
    admin.execute("delete from app.api_keys where tenant_id = %s", api.tenant_id)
    assert_problem(create_key(api, "after deleting"), 429, "rate-limited")

    clock(datetime(2030, 1, 1, 11, 0, 1, tzinfo=UTC))
    assert create_key(api, "next hour").status_code == 201


def test_the_gateway_and_the_rpc_share_one_allowance(
    admin: Admin, keys_gateway: TestClient, tokens: TokenFactory, database: DatabaseUrls
) -> None:
    api = free_user(admin, keys_gateway, tokens)
    for n in range(FREE_KEYS_PER_HOUR // 2):
        assert rpc_create(database, api.tenant_id, f"rpc {n}") == 201
        assert create_key(api, f"gateway {n}").status_code == 201

    assert rpc_create(database, api.tenant_id, "rpc, one too many") == 429
    assert_problem(create_key(api, "gateway, one too many"), 429, "rate-limited")


def test_concurrent_creations_cannot_exceed_the_allowance(admin: Admin, database: DatabaseUrls) -> None:
    tenant = admin.new_user()
    attempts = FREE_KEYS_PER_HOUR + 6

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda n: rpc_create(database, tenant, f"racer {n}"), range(attempts)))

    assert sorted(statuses) == [201] * FREE_KEYS_PER_HOUR + [429] * (attempts - FREE_KEYS_PER_HOUR)
    assert admin.scalar("select count(*) from app.api_keys where tenant_id = %s", tenant) == FREE_KEYS_PER_HOUR


def test_pro_allows_more_keys_per_hour(admin: Admin, owner: Api, clock: Callable[[datetime | None], None]) -> None:
    clock(HALF_PAST_TEN)
    admin.execute(
        "insert into app.api_key_creations (tenant_id, window_start, created) values (%s, '2030-01-01 10:00Z', 49)",
        owner.tenant_id,
    )
    assert create_key(owner, "fiftieth").status_code == 201
    assert assert_problem(create_key(owner, "fifty-first"), 429, "rate-limited")["limit_value"] == 50
