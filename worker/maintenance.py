"""Housekeeping jobs, deferred by the worker's own clock (procrastinate periodic tasks).

`maintenance:purge_idempotency_keys` forgets idempotency records older than
24 hours (they are never consulted after that anyway: an expired record is
replaced when its key is used again).

`maintenance:purge_revoked_api_keys` deletes API keys revoked more than 30
days ago (the retention is internal.purge_revoked_api_keys's), in batches so
that no run holds many row locks for long; the audit log keeps each key's
history.

`maintenance:purge_blobs` (every minute) deletes the stored files listed in
app.blob_deletions once they are due and no document refers to them: the
file a new revision replaced, a deleted revised document's file, and a
revision's file whose revision never committed (an hour after it was drawn).
A file is forgotten only after it is deleted, so a purge that stops midway
deletes it again next time (deleting a missing file is fine).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import procrastinate
from procrastinate import JobContext

from quarry.db import TenantDatabase
from quarry.storage import BlobStore
from worker.context import WorkerContext

logger = logging.getLogger("quarry.worker.maintenance")

NAMESPACE = "maintenance"
QUEUE = "maintenance"
PURGE_IDEMPOTENCY_KEYS = f"{NAMESPACE}:purge_idempotency_keys"
PURGE_CRON = "*/10 * * * *"
PURGE_REVOKED_API_KEYS = f"{NAMESPACE}:purge_revoked_api_keys"
PURGE_REVOKED_API_KEYS_CRON = "17 * * * *"
API_KEY_PURGE_BATCH = 1000
PURGE_BLOBS = f"{NAMESPACE}:purge_blobs"
PURGE_BLOBS_CRON = "* * * * *"
BLOB_PURGE_BATCH = 200


def register(app: procrastinate.App) -> None:
    task = app.task(name=PURGE_IDEMPOTENCY_KEYS, queue=QUEUE, pass_context=True)(purge_idempotency_keys)
    app.periodic(cron=PURGE_CRON, periodic_id="purge_idempotency_keys")(task)
    keys_task = app.task(name=PURGE_REVOKED_API_KEYS, queue=QUEUE, pass_context=True)(purge_revoked_api_keys)
    app.periodic(cron=PURGE_REVOKED_API_KEYS_CRON, periodic_id="purge_revoked_api_keys")(keys_task)
    blobs_task = app.task(name=PURGE_BLOBS, queue=QUEUE, pass_context=True)(purge_blobs)
    app.periodic(cron=PURGE_BLOBS_CRON, periodic_id="purge_blobs")(blobs_task)


async def purge_idempotency_keys(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    row = await worker.core.database.fetch_one("select internal.purge_idempotency_keys() as purged")
    purged = int(row["purged"]) if row else 0
    if purged:
        logger.info("purged %d expired idempotency record(s)", purged)
    return purged


async def purge_revoked_api_keys(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    purged = 0
    while True:  # one transaction per batch
        row = await worker.core.database.fetch_one(
            "select internal.purge_revoked_api_keys(%s) as purged", (API_KEY_PURGE_BATCH,)
        )
        batch = int(row["purged"]) if row else 0
        purged += batch
        if batch < API_KEY_PURGE_BATCH:
            break
    if purged:
        logger.info("purged %d API key(s) revoked more than 30 days ago", purged)
    return purged


async def purge_blobs(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    return await purge_listed_blobs(worker.core.database, worker.core.blobs)


async def purge_listed_blobs(database: TenantDatabase, blobs: BlobStore) -> int:
    """Delete the stored files app.blob_deletions lists as due, then forget them; how many."""
    purged = 0
    while True:
        due = await database.fetch(
            "select tenant_id, blob_key from internal.due_blob_deletions(%s)", (BLOB_PURGE_BATCH,)
        )
        for row in due:
            await asyncio.to_thread(blobs.delete, row["blob_key"])
        if due:
            await database.fetch(
                "select internal.blob_deletions_done(%s, %s)",
                ([row["tenant_id"] for row in due], [row["blob_key"] for row in due]),
            )
        purged += len(due)
        if len(due) < BLOB_PURGE_BATCH:
            break
    if purged:
        logger.info("deleted %d stored file(s) no document refers to", purged)
    return purged


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """A purge that keeps stopping its worker is simply run again at the next tick."""
