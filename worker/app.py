"""The procrastinate app and its tasks.

Jobs are deferred in SQL (internal.enqueue_document_ingest, a trigger on
app.documents) in the transaction that creates the document; the task name
and queue here must match that function's.
"""

from __future__ import annotations

import logging
import uuid

import procrastinate
from procrastinate import JobContext, RetryStrategy

from worker.ingest import IngestPipeline, TransientIngestError

logger = logging.getLogger("quarry.worker")

INGEST_QUEUE = "ingest"
INGEST_TASK = "ingest_document"
INGEST_MAX_ATTEMPTS = 5

INGEST_RETRY = RetryStrategy(
    max_attempts=INGEST_MAX_ATTEMPTS,
    exponential_wait=2,
    retry_exceptions={TransientIngestError},
)


def procrastinate_app(conninfo: str) -> procrastinate.App:
    """procrastinate's tables live in the `procrastinate` schema (a migration installs them)."""
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo,
        kwargs={"options": "-c search_path=procrastinate"},
        min_size=1,
        max_size=4,
    )
    app = procrastinate.App(connector=connector)
    app.task(name=INGEST_TASK, queue=INGEST_QUEUE, retry=INGEST_RETRY, pass_context=True)(ingest_document)
    return app


async def ingest_document(context: JobContext, tenant_id: str, document_id: str) -> None:
    pipeline: IngestPipeline = context.additional_context["pipeline"]
    job = context.job
    final_attempt = job.attempts + 1 >= INGEST_MAX_ATTEMPTS
    await pipeline.ingest(uuid.UUID(tenant_id), uuid.UUID(document_id), final_attempt=final_attempt)
