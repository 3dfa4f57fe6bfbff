"""Run the worker: `python -m worker [--queues shared|enterprise|<queue>,…]` (make dev starts it for you).

Without --queues it serves every queue.  A dedicated pool for a plan's job
pool (Enterprise) is `python -m worker --queues enterprise`; the shared pool
beside it is `python -m worker --queues shared` (worker/app.py,
select_queues).

It loads the embedding model once, then runs up to WORKER_CONCURRENCY jobs at
a time (ingest jobs share model batches).  It re-queues the jobs of workers
that died mid-job (no heartbeat for STALLED_WORKER_SECONDS), and, when the
vector index is a Qdrant server, it also hosts the outbox relay.

It outlives the database: when the job queue loses its connection (a restart,
a failover), the procrastinate worker is started again with a capped
backoff, and the jobs the lost one held go back to the queue as soon as the
database answers again.  SIGTERM or Ctrl-C stops it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import TypeVar

import procrastinate
from procrastinate.worker import Worker

from quarry.db import TenantDatabase, is_transient, named, why
from quarry.documents.chunking import Chunker
from quarry.documents.ingest import IngestPipeline
from quarry.embedding import DenseEmbedder, EmbeddingBatcher, SparseEmbedder
from quarry.logs import configure_logging
from quarry.metrics import POOL_STATS
from quarry.outbox import OutboxRelay
from quarry.parsing.pool import ParsePool
from quarry.services import Core
from quarry.settings import Settings, SettingsError
from worker.app import UnknownQueue, procrastinate_app, select_queues
from worker.context import CONTEXT_KEY, WorkerContext
from worker.observe import observe_job, sample_gauges, serve_metrics
from worker.stalled import QuietTransientErrors, requeue_stalled_jobs, watch_stalled_work

logger = logging.getLogger("quarry.worker")
T = TypeVar("T")
APPLICATION_NAME = "quarry-worker"  # its connections in pg_stat_activity

CHUNK_OVERLAP_TOKENS = 32
HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "2"))
STALLED_WORKER_SECONDS = float(os.environ.get("STALLED_WORKER_SECONDS", "10"))
MIN_RESTART_SECONDS = 0.5
# A job is fetched when its insert is notified, or at this poll.  One whose lock another job
# still held when it was notified (a folder's next sync, a document's next ingest) is not
# notified again when that job ends: procrastinate's default 5 s poll made it wait that long.
FETCH_POLLING_SECONDS = 0.5
MAX_RESTART_SECONDS = 10.0
STEADY_SECONDS = 60.0  # a worker that ran this long before failing starts again from the shortest wait


async def run(settings: Settings, wanted_queues: Sequence[str] | None = None) -> None:
    settings.require_worker_settings()
    assert settings.worker_database_url is not None  # dev and test default it
    async with AsyncExitStack() as stack:
        parsers = ParsePool(settings.extraction_budget)
        stack.callback(parsers.close)
        # The parse children import their parsers while the model loads.
        warming = asyncio.create_task(asyncio.to_thread(parsers.warm))
        embedder = await asyncio.to_thread(DenseEmbedder, settings.embedding_model_dir)
        logger.info("embedding model %s loaded (%d dimensions)", embedder.model_name, embedder.dimensions)
        await warming
        # The model and the libraries behind it are millions of long-lived objects: out of the
        # collector's way (as in the gateway), so that no full collection walks them while jobs
        # run, nor at exit (where collecting them took 5 to 8 s of every stop).
        gc.collect()
        gc.freeze()
        # Jobs hold a connection only briefly (start, store), so the pool can stay small.
        ops = settings.ops
        database = TenantDatabase.connect(
            named(settings.tenant_database_url, APPLICATION_NAME),
            named(settings.worker_database_url, APPLICATION_NAME),
            min_size=1,
            max_size=ops.worker_pool(settings.worker_concurrency),
            service_max_size=ops.worker_service_pool_size,
            timeout=ops.db_pool_timeout_seconds,
        )
        # Connections come as the database allows; the worker waits for it rather than exit.
        await database.open(wait=False)
        stack.push_async_callback(database.close)
        POOL_STATS.watch(database)
        stack.callback(POOL_STATS.unwatch, database)
        logger.info(
            "database connections: at most %d (WORKER_DB_POOL_SIZE %d + WORKER_SERVICE_POOL_SIZE %d + "
            "WORKER_QUEUE_POOL_SIZE %d + listeners)",
            ops.worker_budget(settings.worker_concurrency, relay_in_gateway=settings.relay_in_gateway),
            ops.worker_pool(settings.worker_concurrency),
            ops.worker_service_pool_size,
            ops.worker_queue_pool_size,
        )
        core = Core.build(settings, database)
        stack.callback(core.close)
        stack.push_async_callback(core.billing.aclose)
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
            parsers=parsers,
        )
        context = WorkerContext(core, pipeline)
        app = procrastinate_app(
            named(settings.worker_database_url, APPLICATION_NAME), max_size=ops.worker_queue_pool_size
        )
        await open_queue(app, stack)
        served = await served_queues(app, database, wanted_queues)
        metrics_server = serve_metrics(ops.worker_metrics_host, ops.worker_metrics_port)
        if metrics_server is not None:
            stack.callback(metrics_server.shutdown)
        tasks = [
            asyncio.create_task(watch_stalled_work(app, context, STALLED_WORKER_SECONDS), name="stalled-work"),
            asyncio.create_task(sample_gauges(context, ops.metrics_sample_seconds), name="metrics-gauges"),
        ]
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
            await run_jobs(app, context, concurrency=settings.worker_concurrency, queues=served)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def once_the_database_answers(work: Callable[[], Awaitable[T]], what: str) -> T:
    """`work`, tried again with a capped backoff while the database is not reachable yet."""
    backoff = MIN_RESTART_SECONDS
    while True:
        try:
            return await work()
        except Exception as error:
            if not is_transient(error):
                raise
            logger.warning("%s cannot reach the database yet (%s); retrying in %.1f s", what, why(error), backoff)
            await asyncio.sleep(backoff)
            backoff = min(MAX_RESTART_SECONDS, backoff * 2)


async def open_queue(app: procrastinate.App, stack: AsyncExitStack) -> None:
    """procrastinate's connection pool, opened once the database answers (waiting for it, with backoff)."""
    await once_the_database_answers(lambda: stack.enter_async_context(app.open_async()), "the job queue")


async def served_queues(
    app: procrastinate.App, database: TenantDatabase, wanted: Sequence[str] | None
) -> list[str] | None:
    """The queues this worker serves (None: all), once the job pools can be read."""
    if wanted is None:
        logger.info("serving every queue")
        return None
    row = await once_the_database_answers(
        lambda: database.fetch_one("select internal.job_pools() as pools"), "reading the job pools"
    )
    pools = list(row["pools"]) if row else []
    try:
        chosen = select_queues(app, pools, wanted)
    except UnknownQueue as error:
        raise SettingsError(f"--queues: {error}") from None
    logger.info("serving the queues %s", ", ".join(chosen or []))
    return chosen


async def run_jobs(
    app: procrastinate.App, context: WorkerContext, *, concurrency: int, queues: list[str] | None = None
) -> None:
    """The procrastinate worker until SIGTERM/SIGINT, started again whenever it loses the database."""
    stopping = asyncio.Event()
    current: list[Worker] = []

    def stop() -> None:
        stopping.set()
        for worker in current:
            worker.stop()  # type: ignore[no-untyped-call]

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    lost_worker_id: int | None = None
    backoff = MIN_RESTART_SECONDS
    while not stopping.is_set():
        if lost_worker_id is not None and await release_lost_worker(app, context, lost_worker_id):
            lost_worker_id = None
        worker = Worker(
            app,
            queues=queues,
            name="quarry",
            concurrency=concurrency,
            additional_context={CONTEXT_KEY: context},
            install_signal_handlers=False,
            update_heartbeat_interval=HEARTBEAT_SECONDS,
            fetch_job_polling_interval=FETCH_POLLING_SECONDS,
            stalled_worker_timeout=STALLED_WORKER_SECONDS,
            worker_middleware=[observe_job],
        )
        current[:] = [worker]
        started = time.monotonic()
        try:
            await worker.run()  # type: ignore[no-untyped-call]
        except Exception as error:
            if is_transient(error):
                logger.warning("the job queue lost the database (%s); restarting in %.1f s", why(error), backoff)
            else:
                logger.exception("the job worker failed; restarting in %.1f s", backoff)
        else:
            if stopping.is_set():
                return
            # procrastinate stops a worker whose side task (its listener, its heartbeat) failed.
            logger.warning("the job worker stopped (its database connection was lost); restarting in %.1f s", backoff)
        lost_worker_id = worker.worker_id or lost_worker_id
        if time.monotonic() - started > STEADY_SECONDS:
            backoff = MIN_RESTART_SECONDS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff):
                await stopping.wait()
        backoff = min(MAX_RESTART_SECONDS, backoff * 2)


async def release_lost_worker(app: procrastinate.App, context: WorkerContext, worker_id: int) -> bool:
    """The jobs a lost worker of this process held go back to the queue now, not after the stall timeout.

    Unregistering it leaves its jobs without a worker, which the stalled-job
    check re-queues at once.  False if the database is not answering yet.
    """
    try:
        await app.job_manager.unregister_worker(worker_id)
        requeued = await requeue_stalled_jobs(app, context, STALLED_WORKER_SECONDS)
    except Exception as error:
        if not is_transient(error):
            raise
        return False
    if requeued:
        logger.info("re-queued %d job(s) of the lost worker %d", requeued, worker_id)
    return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker", description="Run Quarry's job worker.")
    parser.add_argument(
        "--queues",
        action="append",
        metavar="NAME[,NAME…]",
        help="serve only these: `shared` (the shared queues), a job pool (`enterprise`) or queue names "
        "(`ingest`, `enterprise.drive`); repeatable. Default: every queue.",
    )
    args = parser.parse_args(argv)
    if args.queues is not None:
        args.queues = [name.strip() for item in args.queues for name in item.split(",") if name.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.ops.log_format, os.environ.get("LOG_LEVEL", "INFO"), filters=(QuietTransientErrors(),))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(settings, args.queues))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
