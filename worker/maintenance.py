"""Keeping the queue honest: jobs of dead workers go back to the queue, and no document hangs.

A job still `doing` on a worker whose heartbeat stopped is re-queued, up to
its task's attempt limit; past it, the job fails and its domain's `abandon`
hook says what that means for the user (ingest: the document fails with a
reason).  internal.fail_abandoned_documents fails any document left
queued/processing with no job that will ever run it.
"""

from __future__ import annotations

import asyncio
import logging

import procrastinate
from procrastinate.jobs import Status

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
    async with worker.core.database.connection() as conn:
        row = await (
            await conn.execute("select internal.fail_abandoned_documents(%s) as abandoned", (grace_seconds,))
        ).fetchone()
    return int(row["abandoned"]) if row else 0


async def watch_stalled_work(app: procrastinate.App, worker: WorkerContext, stalled_seconds: float) -> None:
    while True:
        try:
            await requeue_stalled_jobs(app, worker, stalled_seconds)
            if abandoned := await fail_abandoned_documents(worker, int(max(60, 2 * stalled_seconds))):
                logger.warning("%d abandoned document(s) marked failed", abandoned)
        except Exception:
            logger.exception("stalled-work check failed")
        await asyncio.sleep(max(1.0, stalled_seconds / 3))
