"""Ingest jobs: a new document's file becomes text, chunks and vectors (quarry.documents.ingest).

`documents:ingest` is deferred in SQL by the trigger that creates the
document (internal.defer_job), in the same transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

import procrastinate
from procrastinate import JobContext, RetryStrategy

from quarry.errors import Unavailable
from worker.context import WorkerContext

NAMESPACE = "documents"
INGEST = f"{NAMESPACE}:ingest"
INGEST_QUEUE = "ingest"
MAX_ATTEMPTS = 5
GAVE_UP = "Processing this file stopped the worker repeatedly (too large or too complex?)."


def register(app: procrastinate.App) -> None:
    app.task(
        name=INGEST,
        queue=INGEST_QUEUE,
        # Retryable QuarryErrors (database, storage briefly away) are all Unavailable.
        retry=RetryStrategy(max_attempts=MAX_ATTEMPTS, exponential_wait=2, retry_exceptions={Unavailable}),
        pass_context=True,
    )(ingest)


async def ingest(context: JobContext, tenant_id: str, document_id: str) -> None:
    worker = WorkerContext.of(context)
    job = context.job
    session = worker.session(uuid.UUID(tenant_id), task=job.task_name, job_id=job.id)
    await worker.pipeline.ingest(session, uuid.UUID(document_id), final_attempt=job.attempts + 1 >= MAX_ATTEMPTS)


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """The job stopped its worker once too often: the document fails instead of hanging."""
    session = worker.session(uuid.UUID(str(kwargs["tenant_id"])), task=task_name, job_id=job_id)
    await worker.pipeline.fail(session, uuid.UUID(str(kwargs["document_id"])), GAVE_UP)
