"""Housekeeping jobs, deferred by the worker's own clock (procrastinate periodic tasks).

`maintenance:purge_idempotency_keys` forgets idempotency records older than
24 hours (they are never consulted after that anyway: an expired record is
replaced when its key is used again).
"""

from __future__ import annotations

import logging
from typing import Any

import procrastinate
from procrastinate import JobContext

from worker.context import WorkerContext

logger = logging.getLogger("quarry.worker.maintenance")

NAMESPACE = "maintenance"
QUEUE = "maintenance"
PURGE_IDEMPOTENCY_KEYS = f"{NAMESPACE}:purge_idempotency_keys"
PURGE_CRON = "*/10 * * * *"


def register(app: procrastinate.App) -> None:
    task = app.task(name=PURGE_IDEMPOTENCY_KEYS, queue=QUEUE, pass_context=True)(purge_idempotency_keys)
    app.periodic(cron=PURGE_CRON, periodic_id="purge_idempotency_keys")(task)


async def purge_idempotency_keys(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    row = await worker.core.database.fetch_one("select internal.purge_idempotency_keys() as purged")
    purged = int(row["purged"]) if row else 0
    if purged:
        logger.info("purged %d expired idempotency record(s)", purged)
    return purged


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """A purge that keeps stopping its worker is simply run again at the next tick."""
