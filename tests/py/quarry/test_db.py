"""quarry.db.act_as: the one way tenant work reaches Postgres."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from quarry.db import Connection, TenantDatabase, connection_lost, create_pool, request_settings, set_local
from quarry.errors import DatabaseUnavailable
from tests.py.support.database import ADMIN_SERVER_URL, DatabaseUrls, Users

pytestmark = pytest.mark.anyio

SETTINGS_QUERY = """
select current_user as role,
       current_setting('request.jwt.claims', true) as claims,
       current_setting('request.method', true) as method,
       current_setting('request.path', true) as path,
       current_setting('request.headers', true) as headers,
       current_setting('search_path') as search_path,
       current_setting('statement_timeout') as statement_timeout,
       current_setting('transaction_read_only') as read_only,
       auth.uid() as uid,
       auth.role() as auth_role
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def db(database: DatabaseUrls) -> AsyncIterator[TenantDatabase]:
    # One connection, so the leak test is sure to get back the connection act_as used.
    db = TenantDatabase(
        create_pool(database.tenant_url, min_size=1, max_size=1),
        create_pool(database.gateway_url, min_size=1, max_size=1),
    )
    await db.open(wait=True)
    yield db
    await db.close()


async def read_settings(conn: Connection) -> dict[str, Any]:
    row = await (await conn.execute(SETTINGS_QUERY)).fetchone()
    assert row is not None
    return dict(row)


async def test_sets_what_postgrest_sets(db: TenantDatabase, users: Users) -> None:
    claims = {"sub": str(users.alice), "aud": "authenticated", "email": "alice@example.com"}
    headers = {"User-Agent": "pytest", "Authorization": "Bearer secret", "Cookie": "sb=1", "apikey": "k"}
    async with db.act_as(claims, method="get", path="/api/me", headers=headers) as conn:
        settings = await read_settings(conn)
    assert settings["role"] == "authenticated"
    assert json.loads(settings["claims"]) == {**claims, "role": "authenticated"}
    assert settings["method"] == "GET"
    assert settings["path"] == "/api/me"
    assert settings["search_path"] == "api, extensions"
    assert settings["statement_timeout"] == "8s"  # Supabase's setting for authenticated
    assert settings["read_only"] == "on"  # GET, like PostgREST
    assert settings["uid"] == users.alice
    assert settings["auth_role"] == "authenticated"
    # Credentials never reach SQL; ordinary headers do, lower-cased like PostgREST's.
    assert json.loads(settings["headers"]) == {"user-agent": "pytest"}


async def test_matches_the_pgtap_helper(db: TenantDatabase, database: DatabaseUrls, users: Users) -> None:
    """tests.act_as (SQL) and quarry.db.act_as (Python) leave identical settings."""
    claims = {"sub": str(users.alice), "aud": "authenticated", "email": "alice@example.com"}
    async with db.act_as(claims, method="POST", path="/x", headers={"x-a": "1"}) as conn:
        from_python = await read_settings(conn)
    with psycopg.connect(database.admin_url, row_factory=dict_row) as admin, admin.transaction():
        admin.execute(
            "select tests.act_as(%s, %s::jsonb, 'POST', '/x', '{\"x-a\": \"1\"}')", (users.alice, json.dumps(claims))
        )
        from_sql = admin.execute(SETTINGS_QUERY).fetchone()
    assert from_sql is not None
    # The pgTAP twin keeps its own schema on the path so that pgTAP stays callable.
    from_sql["search_path"] = from_sql["search_path"].removesuffix(", tests")
    assert {**from_sql, "claims": json.loads(from_sql["claims"]), "headers": json.loads(from_sql["headers"])} == {
        **from_python,
        "claims": json.loads(from_python["claims"]),
        "headers": json.loads(from_python["headers"]),
    }


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_nothing_leaks_to_the_next_user_of_the_connection(db: TenantDatabase, users: Users, outcome: str) -> None:
    expectation = pytest.raises(RuntimeError) if outcome == "rollback" else nullcontext()
    with expectation:
        async with db.act_as({"sub": str(users.alice)}) as conn:
            await conn.execute("select 1")
            if outcome == "rollback":
                raise RuntimeError("boom")
    async with db.pool.connection() as conn:
        row = await (
            await conn.execute("select current_user as role, current_setting('request.jwt.claims', true) as claims")
        ).fetchone()
    assert row is not None
    assert row["role"] == "quarry_authenticator"
    assert not row["claims"]


async def test_rls_applies_inside(db: TenantDatabase, database: DatabaseUrls, users: Users) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        for owner in (users.alice, users.bob):
            conn.execute(
                "insert into app.documents (tenant_id, title, mime_type) values (%s, 'db-helper-test', 'text/plain')",
                (owner,),
            )
    async with db.act_as({"sub": str(users.alice)}) as conn:
        rows = await (
            await conn.execute("select tenant_id from app.documents where title = 'db-helper-test'")
        ).fetchall()
    assert [row["tenant_id"] for row in rows] == [users.alice]


async def test_without_act_as_the_gateway_role_reads_nothing(db: TenantDatabase) -> None:
    async with db.pool.connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("select * from app.documents")


def test_refuses_roles_that_bypass_rls() -> None:
    for role in ("service_role", "postgres", "quarry_gateway"):
        with pytest.raises(ValueError, match="role must be one of"):
            request_settings({"sub": str(uuid.uuid4())}, role=role, method="GET", path="/", headers=None)


def test_refuses_claims_that_disagree_with_the_role() -> None:
    with pytest.raises(ValueError, match="claims carry role"):
        request_settings({"role": "service_role"}, role="authenticated", method="GET", path="/", headers=None)


async def test_get_is_read_only_and_post_is_not(db: TenantDatabase, users: Users) -> None:
    async with db.act_as({"sub": str(users.alice)}, method="GET") as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("insert into app.documents (title) values ('from a GET')")
    async with db.act_as({"sub": str(users.alice)}, method="POST") as conn:
        await conn.execute("insert into app.documents (title, mime_type) values ('from a POST', 'text/plain')")
        await conn.execute("delete from app.documents where title = 'from a POST'")


async def test_each_role_gets_its_own_settings(db: TenantDatabase) -> None:
    async with db.act_as({}, role="anon") as conn:
        row = await (await conn.execute("select current_setting('statement_timeout') as timeout")).fetchone()
    assert row == {"timeout": "3s"}  # Supabase's setting for anon


# --- a lost connection (a database restart) ------------------------------------------------


@pytest.fixture
async def resilient(database: DatabaseUrls) -> AsyncIterator[TenantDatabase]:
    """One pooled connection, so the one that dies is the one the next call gets."""
    db = TenantDatabase.connect(database.tenant_url, database.gateway_url, min_size=1, max_size=1, service_max_size=1)
    await db.open(wait=True)
    yield db
    await db.close()


def terminate(database: DatabaseUrls, pid: int) -> None:
    """What a restart does to a pooled connection: the server ends it."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("select pg_terminate_backend(%s)", (pid,))


async def backend_pid(conn: Connection) -> int:
    row = await (await conn.execute("select pg_backend_pid() as pid")).fetchone()
    assert row is not None
    return int(row["pid"])


async def test_a_connection_lost_before_the_work_begins_is_replaced(
    resilient: TenantDatabase, database: DatabaseUrls, users: Users
) -> None:
    async with resilient.act_as({"sub": str(users.alice)}) as conn:
        first = await backend_pid(conn)
    terminate(database, first)
    assert not resilient.health.suspect
    async with resilient.act_as({"sub": str(users.alice)}) as conn:
        second = await backend_pid(conn)
        assert (await read_settings(conn))["uid"] == users.alice
    assert second != first and resilient.health.suspect


async def test_a_single_statement_is_retried_on_a_fresh_connection(
    resilient: TenantDatabase, database: DatabaseUrls
) -> None:
    row = await resilient.fetch_one("select pg_backend_pid() as pid")
    assert row is not None
    terminate(database, int(row["pid"]))
    again = await resilient.fetch_one("select pg_backend_pid() as pid")
    assert again is not None and again["pid"] != row["pid"]


async def test_a_connection_lost_during_the_work_is_a_503_to_retry(
    resilient: TenantDatabase, database: DatabaseUrls, users: Users
) -> None:
    async def lose_the_connection_midway() -> None:
        async with resilient.act_as({"sub": str(users.alice)}) as conn:
            terminate(database, await backend_pid(conn))
            await conn.execute("select 1")

    with pytest.raises(DatabaseUnavailable) as caught:
        await lose_the_connection_midway()
    assert caught.value.status == 503 and caught.value.headers["Retry-After"]
    async with resilient.act_as({"sub": str(users.alice)}) as conn:
        assert await backend_pid(conn)


async def test_no_database_at_all_is_a_503_not_a_500() -> None:
    nowhere = TenantDatabase.connect(
        "postgresql://quarry_authenticator@127.0.0.1:9/quarry",
        "postgresql://quarry_gateway@127.0.0.1:9/quarry",
        min_size=0,
        timeout=0.3,
    )
    await nowhere.open(wait=False)
    try:

        async def act() -> None:
            async with nowhere.act_as({"sub": str(uuid.uuid4())}):
                pass

        with pytest.raises(DatabaseUnavailable):
            await act()
        with pytest.raises(DatabaseUnavailable):
            await nowhere.fetch("select 1")
    finally:
        await nowhere.close()


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown(), True),
        (psycopg.errors.CannotConnectNow(), True),
        (psycopg.errors.ConnectionFailure(), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (PoolTimeout("couldn't get a connection"), False),
        (psycopg.errors.UniqueViolation(), False),
        (psycopg.errors.QueryCanceled(), False),
    ],
)
def test_what_counts_as_a_lost_connection(error: psycopg.Error, lost: bool) -> None:
    assert connection_lost(error) is lost


def test_settings_are_set_local_statements_with_quoted_values() -> None:
    """Claims travel as SET LOCAL (what Citus propagates to workers), each value a quoted literal."""
    settings = request_settings(
        {"sub": "x", "note": "'; reset role; --"}, role="authenticated", method="POST", path="/", headers=None
    )
    with psycopg.connect(ADMIN_SERVER_URL) as conn:
        rendered = set_local(settings).as_string(conn)
    statements = rendered.split("; set local ")
    assert rendered.startswith("set local ")
    assert len(statements) == len(settings)
    assert "set local \"role\" = 'authenticated'" in rendered
    assert "\"search_path\" = 'api', 'extensions'" in rendered
    assert "''; reset role; --" in rendered  # the quote is doubled inside the literal, not a statement end


async def test_hostile_claims_and_headers_arrive_verbatim(db: TenantDatabase, users: Users) -> None:
    hostile = "it's \\'; reset role; select 1; -- $$ \" \\x00 ünï"
    claims = {"sub": str(users.alice), "aud": "authenticated", "note": hostile}
    async with db.act_as(claims, headers={"x-evil": hostile}) as conn:
        settings = await read_settings(conn)
        row = await (await conn.execute("select current_user as role")).fetchone()
    assert row is not None and row["role"] == "authenticated"
    assert json.loads(settings["claims"])["note"] == hostile
    assert json.loads(settings["headers"]) == {"x-evil": hostile}


def test_list_settings_keep_their_elements() -> None:
    with psycopg.connect(ADMIN_SERVER_URL, autocommit=True) as conn, conn.transaction():
        conn.execute(set_local({"search_path": 'api, "$user", extensions'}))
        row = conn.execute("select current_setting('search_path')").fetchone()
    assert row == ('api, "$user", extensions',)
