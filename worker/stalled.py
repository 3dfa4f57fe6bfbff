"""Keeping the queue honest: jobs of dead workers go back to the queue, and no document hangs.

A job still `doing` on a worker whose heartbeat stopped (or that is gone) is
re-queued, up to its task's attempt limit; past it, the job fails and its
domain's `abandon` hook says what that means for the user (ingest: the
document fails with a reason).  internal.fail_abandoned_documents fails any
document left queued/processing with no job that will ever run it.

A lost database is expected here too: one warning line, no traceback.
"""

from __future__ import annotations

import asyncio
import logging

import procrastinate
from procrastinate.jobs import Status

from quarry.db import is_transient, why
from worker.app import abandon_hook, max_attempts
from worker.context import WorkerContext

logger = logging.getLogger("quarry.worker")


async def requeue_stalled_jobs(app: procrastinate.App, worker: WorkerContext, stalled_seconds: float) -> int:
    stalled = list(await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds))
    for job in stalled:
        if job.attempts + 1 >= max_attempts(app, job.task_name):
            logger.error("job %s (%s) stopped its worker %d times; giving up", job.id, job.task_name, job.attempts + 1)
            await app.job_manager.finish_job(job, Status.FAILED, delete_job=False)
            hook = abandon_hook(job.task_name)
            if hook is not None:
                await hook(worker, job.task_name, job.id, dict(job.task_kwargs))
            continue
        logger.warning("re-queueing job %s (%s): its worker stopped", job.id, job.task_name)
        await app.job_manager.retry_job(job)
    return len(stalled)


async def fail_abandoned_documents(worker: WorkerContext, grace_seconds: int) -> int:
    row = await worker.core.database.fetch_one(
        "select internal.fail_abandoned_documents(%s) as abandoned", (grace_seconds,)
    )
    return int(row["abandoned"]) if row else 0


async def watch_stalled_work(app: procrastinate.App, worker: WorkerContext, stalled_seconds: float) -> None:
    while True:
        try:
            await requeue_stalled_jobs(app, worker, stalled_seconds)
            if abandoned := await fail_abandoned_documents(worker, int(max(60, 2 * stalled_seconds))):
                logger.warning("%d abandoned document(s) marked failed", abandoned)
        except Exception as error:
            if is_transient(error):
                logger.warning("stalled-work check skipped: the database is unavailable (%s)", why(error))
            else:
                logger.exception("stalled-work check failed")
        await asyncio.sleep(max(1.0, stalled_seconds / 3))


class QuietTransientErrors(logging.Filter):
    """procrastinate logs a lost database (its listener, a job to retry) with a traceback, some at
    ERROR; an expected transient failure is one WARNING line, with its SQLSTATE, and no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.name.startswith("procrastinate") and error is not None and is_transient(error):
            record.msg = f"{record.getMessage()} ({why(error)})".replace("\n", " ")
            record.args = None
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
