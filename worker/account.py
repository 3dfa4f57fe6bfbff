"""Account jobs: `account:delete` erases one account (quarry.account.deletion); `account:resume`
re-queues any deletion whose job is gone, so that every deletion ends.

`account:delete` is deferred in SQL when the deletion is requested, through
internal.defer_job like every task (the plan's job pool and priority), with
the lock `account:<tenant>`.  Every step is idempotent and recorded when done: a
retry, or the stalled-job sweep after a killed worker, resumes with the first
step not done.  A step that must wait (running jobs, the index relay) or
whose service is down is retried with a growing wait; past MAX_ATTEMPTS the
job fails and `account:resume` (every 10 minutes) starts it again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import procrastinate
from procrastinate import JobContext, RetryStrategy

from worker.context import WorkerContext

logger = logging.getLogger("quarry.worker.account")

NAMESPACE = "account"
DELETE = f"{NAMESPACE}:delete"
RESUME = f"{NAMESPACE}:resume"
QUEUE = "account"
RESUME_QUEUE = "maintenance"
RESUME_CRON = "*/10 * * * *"
MAX_ATTEMPTS = 8


def register(app: procrastinate.App) -> None:
    app.task(
        name=DELETE,
        queue=QUEUE,
        retry=RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2),
        pass_context=True,
    )(delete)
    resume_task = app.task(name=RESUME, queue=RESUME_QUEUE, pass_context=True)(resume)
    app.periodic(cron=RESUME_CRON, periodic_id="account_resume")(resume_task)


async def delete(context: JobContext, tenant_id: str | None = None, erased: bool = False) -> str:
    """`erased`: the job's own queue row was made anonymous at the end of an earlier run (nothing left)."""
    if tenant_id is None or erased:
        return "erased"
    worker = WorkerContext.of(context)
    return await worker.core.account_eraser().run(uuid.UUID(tenant_id), context.job.id)


async def resume(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    row = await worker.core.database.fetch_one("select internal.deletions_to_resume() as resumed")
    resumed = int(row["resumed"]) if row else 0
    if resumed:
        logger.warning("re-queued %d account deletion(s) whose job had stopped", resumed)
    return resumed


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """A deletion that kept stopping its worker stays recorded; `account:resume` starts it again."""
