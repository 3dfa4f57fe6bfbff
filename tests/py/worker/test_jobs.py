"""The job contract: what SQL defers, the worker runs, in the same queue.

Jobs enter the queue only through internal.defer_job (SQL), whose
internal.job_queue names each task's queue; the worker registers each
domain's tasks (worker/app.py).  Reads every function the migrations
created, so a new `internal.defer_job('…')` for a task nobody registered
fails here, not in production.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.py.support.database import DatabaseUrls
from worker.app import domain_tasks, procrastinate_app, queues

DEFERRED = re.compile(r"internal\.defer_job\(\s*'([^']+)'")


@pytest.fixture(scope="module")
def deferred_in_sql(database: DatabaseUrls) -> dict[str, str | None]:
    """Every task name some SQL function defers, with the queue SQL gives it."""
    with psycopg.connect(database.admin_url) as conn:
        sources = [row[0] for row in conn.execute("select prosrc from pg_proc where prosrc like '%defer_job(%'")]
        names = sorted({name for source in sources for name in DEFERRED.findall(source)})
        return {name: conn.execute("select internal.job_queue(%s)", (name,)).fetchone()[0] for name in names}  # type: ignore[index]


def test_sql_defers_at_least_the_ingest_job(deferred_in_sql: dict[str, str | None]) -> None:
    assert "documents:ingest" in deferred_in_sql


def test_every_task_deferred_in_sql_is_registered_in_the_worker_with_the_same_queue(
    deferred_in_sql: dict[str, str | None],
) -> None:
    tasks = procrastinate_app("postgresql://unused").tasks
    assert {name: tasks[name].queue if name in tasks else None for name in deferred_in_sql} == deferred_in_sql


def test_every_registered_task_has_its_queue_in_sql(database: DatabaseUrls) -> None:
    tasks = domain_tasks(procrastinate_app("postgresql://unused"))
    assert tasks, "no domain registered a task"
    with psycopg.connect(database.admin_url) as conn:
        sql_queues = {name: conn.execute("select internal.job_queue(%s)", (name,)).fetchone()[0] for name in tasks}  # type: ignore[index]
    assert sql_queues == {name: task.queue for name, task in tasks.items()}


def test_the_registry_is_the_same_however_often_it_is_built() -> None:
    first, second = procrastinate_app("postgresql://unused"), procrastinate_app("postgresql://unused")
    expected = [
        "account:delete",
        "account:resume",
        "billing:reconcile",
        "documents:ingest",
        "drive:schedule",
        "drive:sync",
        "exports:build",
        "exports:expire",
        "maintenance:purge_blobs",
        "maintenance:purge_idempotency_keys",
        "maintenance:purge_revoked_api_keys",
    ]
    assert sorted(domain_tasks(first)) == sorted(domain_tasks(second)) == expected
    assert queues(first) == ["account", "drive", "exports", "ingest", "maintenance"]
