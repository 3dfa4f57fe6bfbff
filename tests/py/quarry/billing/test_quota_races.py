"""The SQL checks under real contention: parallel connections, each in its
own transaction acting as the tenant (as the gateway and PostgREST do), all
released at once by a barrier and holding their row locks a moment before
committing, so a read-then-write check would overshoot here."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg

from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls
from tests.py.support.tenant import act_as

HOLD_SECONDS = 0.05


def race(database: DatabaseUrls, tenant: uuid.UUID, statements: list[str]) -> list[str]:
    """Run each statement on its own connection as the tenant, all at once; 'ok' or the SQLSTATE."""
    barrier = threading.Barrier(len(statements))

    def attempt(statement: str) -> str:
        with psycopg.connect(database.tenant_url) as conn:
            act_as(conn, tenant)
            barrier.wait()
            try:
                conn.execute(statement)
                conn.execute("select pg_sleep(%s)", (HOLD_SECONDS,))
                conn.commit()
                return "ok"
            except psycopg.Error as error:
                conn.rollback()
                return error.sqlstate or "?"

    with ThreadPoolExecutor(max_workers=len(statements)) as pool:
        return sorted(pool.map(attempt, statements))


def times(count: int, statement: Callable[[int], str]) -> list[str]:
    return [statement(n) for n in range(count)]


def test_twenty_parallel_inserts_with_three_documents_left(database: DatabaseUrls, admin: Admin) -> None:
    tenant = admin.new_user()
    admin.prefill(tenant, "documents_per_month", 47)

    outcomes = race(database, tenant, times(20, lambda n: f"insert into app.documents (title, mime_type, size_bytes) "
                                                          f"values ('race {n}', 'text/plain', 10)"))  # fmt: skip

    assert outcomes == ["PGRST"] * 17 + ["ok"] * 3
    assert admin.used(tenant, "documents_per_month") == 50
    assert admin.used(tenant, "storage_bytes") == 30
    assert admin.documents(tenant) == 3


def test_ten_parallel_queries_with_one_left(database: DatabaseUrls, admin: Admin) -> None:
    tenant = admin.new_user()
    admin.prefill(tenant, "queries_per_day", 99)

    outcomes = race(database, tenant, times(10, lambda n: f"select app.record_query('q{n}', 'hybrid')"))

    assert outcomes == ["PGRST"] * 9 + ["ok"]
    assert admin.used(tenant, "queries_per_day") == 100


def test_parallel_uploads_never_overrun_storage(database: DatabaseUrls, admin: Admin) -> None:
    tenant = admin.new_user()
    admin.prefill(tenant, "storage_bytes", 500_000_000 - 250)

    outcomes = race(database, tenant, times(10, lambda n: f"insert into app.documents (title, mime_type, size_bytes) "
                                                          f"values ('s{n}', 'text/plain', 100)"))  # fmt: skip

    assert outcomes == ["PGRST"] * 8 + ["ok"] * 2
    assert admin.used(tenant, "storage_bytes") == 500_000_000 - 50


def test_parallel_deletes_and_uploads_keep_storage_exact(database: DatabaseUrls, admin: Admin) -> None:
    tenant = admin.new_user()
    admin.subscribe(tenant, "pro", "active")
    race(database, tenant, times(10, lambda n: f"insert into app.documents (title, mime_type, size_bytes) "
                                               f"values ('keep {n}', 'text/plain', 1000)"))  # fmt: skip

    deletes = times(10, lambda n: f"delete from app.documents where title = 'keep {n}'")
    uploads = times(10, lambda n: f"insert into app.documents (title, mime_type, size_bytes) "
                                  f"values ('new {n}', 'text/plain', 7)")  # fmt: skip
    deletes.append("delete from app.documents where title = 'keep 0'")  # the same row twice: freed once
    outcomes = race(database, tenant, deletes + uploads)

    assert outcomes == ["ok"] * 21
    assert admin.used(tenant, "storage_bytes") == 70
    assert admin.used(tenant, "documents_per_month") == 20, "deletes do not give the monthly count back"
    drift = admin.execute("select * from internal.reconcile_storage() where tenant_id = %s", tenant)
    assert drift == [], "the counter matches the real sum"
