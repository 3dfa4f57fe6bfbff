"""Drive jobs: `drive:sync` runs one sync of one folder (quarry.drive.sync); `drive:schedule` queues the periodic ones.

`drive:sync` is deferred in SQL by internal.trigger_drive_sync (the trigger
endpoint, supabase-js) and internal.schedule_drive_syncs, with the lock
`drive-folder:<id>`: one run per folder at a time.  A worker killed mid-run
leaves the job to the stalled-job sweep, which runs it again; the sync
resumes from its last committed page.
"""

from __future__ import annotations

import uuid
from typing import Any

import procrastinate
from procrastinate import JobContext, RetryStrategy

from quarry.drive.sync import FolderSync
from quarry.errors import Unavailable
from worker.context import WorkerContext

NAMESPACE = "drive"
SYNC = f"{NAMESPACE}:sync"
SCHEDULE = f"{NAMESPACE}:schedule"
QUEUE = "drive"
SCHEDULE_QUEUE = "maintenance"
SCHEDULE_CRON = "*/5 * * * *"
MAX_ATTEMPTS = 5
GAVE_UP = "The sync stopped its worker repeatedly; it resumes from where it was at the next sync."


def register(app: procrastinate.App) -> None:
    app.task(
        name=SYNC,
        queue=QUEUE,
        retry=RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2, retry_exceptions={Unavailable}),
        pass_context=True,
    )(sync)
    schedule_task = app.task(name=SCHEDULE, queue=SCHEDULE_QUEUE, pass_context=True)(schedule)
    app.periodic(cron=SCHEDULE_CRON, periodic_id="drive_schedule")(schedule_task)


async def sync(context: JobContext, tenant_id: str, folder_id: str, run_id: str) -> str:
    worker = WorkerContext.of(context)
    drive = worker.core.drive
    session = worker.session(uuid.UUID(tenant_id), task=context.job.task_name, job_id=context.job.id)
    if drive is None:
        return "disabled"
    folder_sync = FolderSync(
        drive,
        worker.core.documents,
        session,
        uuid.UUID(folder_id),
        uuid.UUID(run_id),
        worker.pipeline.parsers,
        concurrency=drive.settings.concurrency,
    )
    return await folder_sync.run()


async def schedule(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    drive = worker.core.drive
    if drive is None:
        return 0
    row = await worker.core.database.fetch_one(
        "select internal.schedule_drive_syncs(make_interval(mins => %s)) as queued",
        (drive.settings.sync_interval_minutes,),
    )
    return int(row["queued"]) if row else 0


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """The run fails (its folder keeps its checkpoint); the next run resumes."""
    if task_name != SYNC:
        return
    session = worker.session(uuid.UUID(str(kwargs["tenant_id"])), task=task_name, job_id=job_id)
    async with session.transaction() as conn:
        await conn.execute(
            "select internal.drive_run_progress(%s, 'failed', array[0, 0, 0, 0, 0], %s, null::boolean)",
            (uuid.UUID(str(kwargs["run_id"])), GAVE_UP),
        )
