"""Export jobs: `exports:build` builds one export's archive (quarry.exports.build); `exports:expire`
deletes the archives whose link has expired and marks them `expired`, and queues the build of any
queued export that has no job (internal.requeue_exports).

`exports:build` is deferred in SQL when an export is requested
(internal.queue_export, in the requesting transaction), through
internal.defer_job like every task (the plan's job pool and priority), with
the lock `export:<tenant>`: one build per tenant at a time.  Storage or
database outages are retried (MAX_ATTEMPTS, exponential wait); after the
last attempt, or at once for anything else, the export fails with a reason
and its owner is emailed, and the job itself fails with the error, so the
worker's metrics and ops.failed_jobs count it (worker.observe).  A worker
killed mid-build leaves the job to the stalled-job sweep: the build starts
again from the beginning (a partial archive is never visible).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import procrastinate
from procrastinate import JobContext, RetryStrategy

from quarry.errors import Unavailable
from quarry.exports.build import ExportCancelled, expire_exports
from worker.context import WorkerContext

logger = logging.getLogger("quarry.worker.exports")

NAMESPACE = "exports"
BUILD = f"{NAMESPACE}:build"
EXPIRE = f"{NAMESPACE}:expire"
QUEUE = "exports"
EXPIRE_QUEUE = "maintenance"
EXPIRE_CRON = "*/15 * * * *"
MAX_ATTEMPTS = 4
REQUEUE_GRACE_SECONDS = 300  # a queued export older than this without a build job gets one
UNEXPECTED = "The export failed unexpectedly; request a new one (it does not count against your plan)."
UNAVAILABLE = "File storage or the database was unavailable for too long; request a new export."
GAVE_UP = "The export stopped its worker repeatedly; request a new one."


def register(app: procrastinate.App) -> None:
    app.task(
        name=BUILD,
        queue=QUEUE,
        retry=RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2, retry_exceptions={Unavailable}),
        pass_context=True,
    )(build)
    expire_task = app.task(name=EXPIRE, queue=EXPIRE_QUEUE, pass_context=True)(expire)
    app.periodic(cron=EXPIRE_CRON, periodic_id="exports_expire")(expire_task)


async def build(context: JobContext, tenant_id: str, export_id: str) -> str:
    worker = WorkerContext.of(context)
    session = worker.session(uuid.UUID(tenant_id), task=context.job.task_name, job_id=context.job.id)
    builder = worker.core.export_builder
    try:
        return await builder.build(session, uuid.UUID(export_id))
    except ExportCancelled:
        return "cancelled"
    except Unavailable:
        if context.job.attempts + 1 < MAX_ATTEMPTS:
            raise  # procrastinate retries it
        await builder.fail(session, uuid.UUID(export_id), UNAVAILABLE)
        raise  # the last attempt: the job fails with it (metrics, ops.failed_jobs)
    except Exception:
        logger.exception("export %s failed", export_id)
        await builder.fail(session, uuid.UUID(export_id), UNEXPECTED)
        raise


async def expire(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    expired = await expire_exports(worker.core.database, worker.core.archives)
    if expired:
        logger.info("%d export archive(s) expired and deleted", expired)
    row = await worker.core.database.fetch_one(
        "select internal.requeue_exports(%s) as requeued", (REQUEUE_GRACE_SECONDS,)
    )
    if row and row["requeued"]:
        logger.warning("queued the build of %d export(s) that had no job", row["requeued"])
    return expired


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """A build that kept stopping its worker fails, and its owner is told."""
    if task_name != BUILD:
        return
    session = worker.session(uuid.UUID(str(kwargs["tenant_id"])), task=task_name, job_id=job_id)
    await worker.core.export_builder.fail(session, uuid.UUID(str(kwargs["export_id"])), GAVE_UP)
