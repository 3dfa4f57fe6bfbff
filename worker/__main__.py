"""Run the worker: `python -m worker` (make dev starts it for you).

It loads the embedding model once, then runs up to WORKER_CONCURRENCY ingest
jobs at a time, sharing model batches between them.  It re-queues the jobs of
workers that died mid-job (no heartbeat for STALLED_WORKER_SECONDS), and, when
the vector index is a Qdrant server, it also hosts the outbox relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import uuid
from contextlib import AsyncExitStack

import procrastinate
from procrastinate.jobs import Status

from gateway.db import Pool, TenantDatabase, create_pool
from gateway.embedding import DenseEmbedder, EmbeddingBatcher, SparseEmbedder
from gateway.outbox import OutboxRelay
from gateway.services import IndexHandle, open_blob_store
from gateway.settings import Settings, SettingsError
from worker.app import INGEST_MAX_ATTEMPTS, INGEST_QUEUE, procrastinate_app
from worker.chunking import Chunker
from worker.ingest import IngestPipeline

logger = logging.getLogger("quarry.worker")

CHUNK_OVERLAP_TOKENS = 32
HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "5"))
STALLED_WORKER_SECONDS = float(os.environ.get("STALLED_WORKER_SECONDS", "30"))


async def requeue_stalled_jobs(app: procrastinate.App, pipeline: IngestPipeline) -> int:
    """Jobs still 'doing' on a worker whose heartbeat stopped go back to the queue, up to
    the attempt limit: a document that keeps killing workers (out of memory, say) fails."""
    stalled = list(await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_WORKER_SECONDS))
    for job in stalled:
        if job.attempts + 1 >= INGEST_MAX_ATTEMPTS:
            logger.error("job %s stopped its worker %d times; giving up", job.id, job.attempts + 1)
            await app.job_manager.finish_job(job, Status.FAILED, delete_job=False)
            kwargs = job.task_kwargs
            await pipeline.fail(
                uuid.UUID(str(kwargs["tenant_id"])),
                uuid.UUID(str(kwargs["document_id"])),
                "Processing this file stopped the worker repeatedly (too large or too complex?).",
            )
            continue
        logger.warning("re-queueing job %s (%s): its worker stopped", job.id, job.task_name)
        await app.job_manager.retry_job(job)
    return len(stalled)


async def fail_abandoned_documents(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "select internal.fail_abandoned_documents(%s) as abandoned", (int(max(60, 2 * STALLED_WORKER_SECONDS)),)
            )
        ).fetchone()
    return int(row["abandoned"]) if row else 0


async def watch_stalled_work(app: procrastinate.App, pipeline: IngestPipeline, pool: Pool) -> None:
    while True:
        try:
            await requeue_stalled_jobs(app, pipeline)
            if abandoned := await fail_abandoned_documents(pool):
                logger.warning("%d abandoned document(s) marked failed", abandoned)
        except Exception:
            logger.exception("stalled-work check failed")
        await asyncio.sleep(max(1.0, STALLED_WORKER_SECONDS / 3))


async def run(settings: Settings) -> None:
    if settings.worker_database_url is None:
        raise SettingsError("WORKER_DATABASE_URL must be set when QUARRY_ENV=production")
    embedder = await asyncio.to_thread(DenseEmbedder, settings.embedding_model_dir)
    logger.info("embedding model %s loaded (%d dimensions)", embedder.model_name, embedder.dimensions)
    async with AsyncExitStack() as stack:
        # Jobs hold a connection only briefly (start, store), so the pool can stay small.
        pool = create_pool(settings.worker_database_url, min_size=1, max_size=min(settings.worker_concurrency + 2, 16))
        await pool.open(wait=True, timeout=30)
        stack.push_async_callback(pool.close)
        database = TenantDatabase(pool)
        blobs = open_blob_store(settings)
        batcher = EmbeddingBatcher(embedder)
        stack.push_async_callback(batcher.aclose)
        pipeline = IngestPipeline(
            database,
            blobs,
            Chunker(
                embedder.independent_tokenizer(),
                max_tokens=embedder.max_tokens - 2,
                overlap_tokens=CHUNK_OVERLAP_TOKENS,
            ),
            batcher,
            SparseEmbedder(),
            embedding_model=embedder.model_name,
        )
        app = procrastinate_app(settings.worker_database_url)
        await stack.enter_async_context(app.open_async())
        tasks = [asyncio.create_task(watch_stalled_work(app, pipeline, pool), name="stalled-work")]
        if not settings.relay_in_gateway:
            index = IndexHandle(settings)
            stack.callback(index.close)
            relay = OutboxRelay(
                pool,
                database,
                index,
                blobs,
                max_backoff_seconds=settings.outbox_max_backoff_seconds,
                optimize_when_idle=False,
            )
            tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        try:
            await app.run_worker_async(
                queues=[INGEST_QUEUE],
                concurrency=settings.worker_concurrency,
                additional_context={"pipeline": pipeline},
                update_heartbeat_interval=HEARTBEAT_SECONDS,
                stalled_worker_timeout=STALLED_WORKER_SECONDS,
                install_signal_handlers=True,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(settings))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
