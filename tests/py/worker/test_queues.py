"""Which queues a worker serves (`--queues`), and how it fetches from them.

The routing itself (plan → queue and priority, the oldest-job share of
fetches, no starvation) is SQL and proven in tests/sql/23_job_routing.sql;
here: the worker asks SQL for its jobs, names its queues right, refuses a
name that would leave jobs waiting forever, and a dedicated pool's worker
takes an Enterprise tenant's job.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from tests.py.support.database import DatabaseUrls
from worker.__main__ import parse_args
from worker.app import FairJobManager, UnknownQueue, procrastinate_app, select_queues

POOLS = ["enterprise"]


@pytest.fixture(scope="module")
def app() -> object:
    return procrastinate_app("postgresql://unused")


def test_the_worker_fetches_through_internal_fetch_job(app: object) -> None:
    assert isinstance(app.job_manager, FairJobManager)  # type: ignore[attr-defined]


def test_without_queues_a_worker_serves_every_queue(app: object) -> None:
    assert select_queues(app, POOLS, None) is None  # type: ignore[arg-type]


def test_shared_pool_and_queue_names(app: object) -> None:
    shared = ["account", "drive", "exports", "ingest", "maintenance"]
    assert select_queues(app, POOLS, ["shared"]) == shared  # type: ignore[arg-type]
    # The export and account-deletion jobs follow the same rule: an Enterprise pool serves them too.
    assert select_queues(app, POOLS, ["enterprise"]) == [f"enterprise.{queue}" for queue in shared]  # type: ignore[arg-type]
    assert select_queues(app, POOLS, ["ingest", "enterprise.ingest", "ingest"]) == [  # type: ignore[arg-type]
        "enterprise.ingest",
        "ingest",
    ]


@pytest.mark.parametrize("name", ["enterprize", "premium", "enterprise.ingst", ""])
def test_a_name_that_is_no_queue_or_pool_is_refused(app: object, name: str) -> None:
    with pytest.raises(UnknownQueue):
        select_queues(app, POOLS, [name])  # type: ignore[arg-type]


def test_queues_are_comma_separated_and_repeatable() -> None:
    assert parse_args(["--queues", "enterprise, ingest", "--queues", "drive"]).queues == [
        "enterprise",
        "ingest",
        "drive",
    ]
    assert parse_args([]).queues is None


def test_a_dedicated_pool_takes_an_enterprise_tenants_job(database: DatabaseUrls, admin: object) -> None:
    """Real SQL end to end: defer as the trigger does, fetch as the worker does (FairJobManager)."""
    tenant = admin.new_user()  # type: ignore[attr-defined]
    admin.subscribe(tenant, "enterprise", "active")  # type: ignore[attr-defined]
    marker = str(uuid.uuid4())
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        row = conn.execute(
            "select internal.defer_job('documents:ingest', %s, jsonb_build_object('document_id', %s::text))",
            (tenant, marker),
        ).fetchone()
    assert row is not None
    job_id = row[0]

    async def fetch(queues: list[str]) -> tuple[int | None, str | None]:
        app = procrastinate_app(database.worker_url)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            try:
                job = await app.job_manager.fetch_job(queues, worker_id)
                return (job.id, job.queue) if job is not None else (None, None)
            finally:
                await app.job_manager.unregister_worker(worker_id)

    try:
        assert asyncio.run(fetch(["enterprise.ingest"])) == (job_id, "enterprise.ingest")
    finally:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            conn.execute("delete from procrastinate.procrastinate_jobs where id = %s", (job_id,))
