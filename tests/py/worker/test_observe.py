"""observe_job, the middleware every job runs in: the request id for the task's logs (and out of its
arguments), the outcome a retry strategy decides, the reason of a failed attempt in SQL."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from procrastinate import JobContext
from procrastinate.jobs import Job

from quarry.db import TenantDatabase
from quarry.logs import current_request_id
from quarry.storage.blobs import BlobStoreUnavailable
from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls
from worker.app import procrastinate_app
from worker.context import CONTEXT_KEY
from worker.observe import JOBS, observe_job


def run_observed(database: DatabaseUrls, job: Job, task: Any) -> Any:
    async def run() -> Any:
        db = TenantDatabase.connect(database.tenant_url, database.worker_url, min_size=1, max_size=1)
        await db.open(wait=True)
        try:
            app = procrastinate_app("postgresql://unused")
            context = JobContext(
                app=app,
                job=job,
                start_timestamp=0.0,
                abort_reason=lambda: None,
                additional_context={CONTEXT_KEY: SimpleNamespace(core=SimpleNamespace(database=db))},
            )
            worker = SimpleNamespace(app=app)
            return await observe_job(task, context, worker)  # type: ignore[arg-type]
        finally:
            await db.close()

    return asyncio.run(run())


def ingest_job(attempts: int) -> Job:
    kwargs: dict[str, Any] = {
        "tenant_id": str(uuid.uuid4()),
        "document_id": str(uuid.uuid4()),
        "request_id": "req-observed",
    }
    return Job(
        id=10**12 + uuid.uuid4().int % 10**12,  # no real job has an id this large
        queue="enterprise.ingest",
        lock=None,
        queueing_lock=None,
        task_name="documents:ingest",
        task_kwargs=kwargs,
        attempts=attempts,
    )


def test_the_task_runs_under_its_request_id_without_seeing_it(database: DatabaseUrls) -> None:
    job = ingest_job(0)
    seen: dict[str, Any] = {}

    async def task() -> str:
        seen["request_id"] = current_request_id()
        seen["kwargs"] = dict(job.task_kwargs)
        return "done"

    before = JOBS.labels("documents:ingest", "enterprise.ingest", "succeeded")._value.get()
    assert run_observed(database, job, task) == "done"
    assert seen["request_id"] == "req-observed" and "request_id" not in seen["kwargs"]
    assert job.task_kwargs["request_id"] == "req-observed"  # back, for procrastinate's own log line
    assert current_request_id() is None
    assert JOBS.labels("documents:ingest", "enterprise.ingest", "succeeded")._value.get() == before + 1


@pytest.mark.parametrize(
    ("attempts", "error", "outcome", "final"),
    [
        (0, BlobStoreUnavailable("The blob store is away."), "retried", False),  # the strategy retries it
        (5, BlobStoreUnavailable("The blob store is away."), "failed", True),  # no attempt left
        (0, ValueError("a bug"), "failed", True),  # not retryable
    ],
)
def test_a_failed_attempt_is_counted_and_its_reason_recorded(
    database: DatabaseUrls, admin: Admin, attempts: int, error: Exception, outcome: str, final: bool
) -> None:
    job = ingest_job(attempts)
    counter = JOBS.labels("documents:ingest", "enterprise.ingest", outcome)
    before = counter._value.get()

    async def task() -> None:
        raise error

    with pytest.raises(type(error)):
        run_observed(database, job, task)
    assert counter._value.get() == before + 1
    rows = admin.execute(
        "select attempt, task_name, queue_name, error, final from internal.job_failures where job_id = %s", job.id
    )
    admin.execute("delete from internal.job_failures where job_id = %s", job.id)
    assert rows == [(attempts, "documents:ingest", "enterprise.ingest", f"{type(error).__name__}: {error}", final)]
