"""Run the worker: `python -m worker` (make dev starts it for you).

It loads the embedding model once, then runs up to WORKER_CONCURRENCY jobs at
a time (ingest jobs share model batches).  It re-queues the jobs of workers
that died mid-job (no heartbeat for STALLED_WORKER_SECONDS), and, when the
vector index is a Qdrant server, it also hosts the outbox relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from contextlib import AsyncExitStack

from quarry.db import TenantDatabase, create_pool
from quarry.documents.chunking import Chunker
from quarry.documents.ingest import IngestPipeline
from quarry.embedding import DenseEmbedder, EmbeddingBatcher, SparseEmbedder
from quarry.outbox import OutboxRelay
from quarry.services import Core
from quarry.settings import Settings, SettingsError
from worker.app import procrastinate_app, queues
from worker.context import CONTEXT_KEY, WorkerContext
from worker.maintenance import watch_stalled_work

logger = logging.getLogger("quarry.worker")

CHUNK_OVERLAP_TOKENS = 32
HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "5"))
STALLED_WORKER_SECONDS = float(os.environ.get("STALLED_WORKER_SECONDS", "30"))


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
        core = Core.build(settings, TenantDatabase(pool))
        stack.callback(core.close)
        batcher = EmbeddingBatcher(embedder)
        stack.push_async_callback(batcher.aclose)
        pipeline = IngestPipeline(
            core.blobs,
            Chunker(
                embedder.independent_tokenizer(),
                max_tokens=embedder.max_tokens - 2,
                overlap_tokens=CHUNK_OVERLAP_TOKENS,
            ),
            batcher,
            SparseEmbedder(),
            embedding_model=embedder.model_name,
        )
        context = WorkerContext(core, pipeline)
        app = procrastinate_app(settings.worker_database_url)
        await stack.enter_async_context(app.open_async())
        tasks = [asyncio.create_task(watch_stalled_work(app, context, STALLED_WORKER_SECONDS), name="stalled-work")]
        if not settings.relay_in_gateway:
            relay = OutboxRelay(
                core.database,
                core.index,
                core.blobs,
                max_backoff_seconds=settings.outbox_max_backoff_seconds,
                optimize_when_idle=False,
            )
            tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        try:
            await app.run_worker_async(
                queues=queues(app),
                concurrency=settings.worker_concurrency,
                additional_context={CONTEXT_KEY: context},
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
