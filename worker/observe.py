"""What the worker tells operators: metrics, failure reasons and logs that name the request.

Every job runs inside `observe_job` (a procrastinate worker middleware), so a
task gets all of it by being registered, whatever its domain:

- its log lines carry the request id of the request that deferred it
  (internal.defer_job puts it in the job's arguments as `request_id`; it is
  taken out before the task is called, so tasks never see it) and the job id;
- `quarry_jobs_total{task, queue, outcome}` and
  `quarry_job_duration_seconds{task, queue, outcome}`, outcome one of
  succeeded, retried (a failure the task's retry strategy retries), failed,
  aborted;
- a failed attempt's reason (exception type and message) in
  internal.job_failures, read in ops.failed_jobs;
- a Drive sync's outcome in `quarry_drive_sync_runs_total{outcome}`.

`sample_gauges` reads internal.queue_gauges every METRICS_SAMPLE_SECONDS:
waiting and running jobs per queue, the oldest waiting job's age per queue,
the outbox's backlog and lag, Stripe webhook events by outcome.  With several
workers each reports the same queue figures: aggregate them with max().

`serve_metrics` serves /metrics on WORKER_METRICS_HOST:WORKER_METRICS_PORT
(127.0.0.1:9108 by default; 0 turns it off): a port of its own, never
published with the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

from procrastinate import JobContext
from procrastinate.exceptions import JobAborted
from procrastinate.worker import Worker
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from quarry.db import is_transient, why
from quarry.errors import QuarryError
from quarry.logs import request_context
from quarry.metrics import bounded_label
from worker.context import CONTEXT_KEY, WorkerContext

logger = logging.getLogger("quarry.worker")

REQUEST_ID_ARG = "request_id"
MAX_REASON_CHARS = 1000
DRIVE_SYNC_TASK = "drive:sync"
DRIVE_SYNC_OUTCOMES = ("succeeded", "failed", "quota_reached", "paused", "disabled", "needs_reauth")

JOBS = Counter("quarry_jobs", "Job runs that ended, by task, queue and outcome.", ["task", "queue", "outcome"])
JOB_SECONDS = Histogram(
    "quarry_job_duration_seconds",
    "How long job runs took, by task, queue and outcome.",
    ["task", "queue", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
DRIVE_SYNCS = Counter("quarry_drive_sync_runs", "Drive folder syncs that ended, by outcome.", ["outcome"])
QUEUE_JOBS = Gauge("quarry_queue_jobs", "Jobs waiting (todo) or running (doing), per queue.", ["queue", "status"])
QUEUE_OLDEST = Gauge("quarry_queue_oldest_waiting_seconds", "Age of the oldest job waiting in each queue.", ["queue"])
OUTBOX_PENDING = Gauge("quarry_outbox_pending", "Index changes not yet applied to the vector index.")
OUTBOX_LAG = Gauge("quarry_outbox_lag_seconds", "Age of the oldest index change not yet applied.")
OUTBOX_FAILING = Gauge("quarry_outbox_failing", "Pending index changes whose last attempt failed.")
WEBHOOK_EVENTS = Gauge(
    "quarry_stripe_webhook_events",
    "Stripe webhook events recorded, by outcome (use delta() over a window).",
    ["outcome"],
)
GAUGE_SAMPLES = Counter("quarry_metrics_samples", "Reads of the queue and outbox figures, by result.", ["result"])

MiddlewareNext = Callable[[], Awaitable[Any]]


async def observe_job(call_next: MiddlewareNext, context: JobContext, worker: Worker) -> Any:
    """Run one job with its request id in the log context, counted, timed and, if it fails, explained."""
    job = context.job
    # The task never sees the request id; it is put back afterwards for procrastinate's own log line.
    request_id = job.task_kwargs.pop(REQUEST_ID_ARG, None)
    task_label = bounded_label(job.task_name)
    queue_label = bounded_label(job.queue)
    started = time.monotonic()
    outcome = "failed"
    try:
        with request_context(str(request_id) if request_id else f"job-{job.id}", job=(job.id or 0, job.task_name)):
            try:
                result = await call_next()
            except BaseException as error:
                outcome = failure_outcome(worker, context, error)
                if outcome in ("failed", "retried"):
                    await record_failure(context, error, final=outcome == "failed")
                    if job.task_name == DRIVE_SYNC_TASK and outcome == "failed":
                        DRIVE_SYNCS.labels("error").inc()
                raise
            outcome = "succeeded"
            if job.task_name == DRIVE_SYNC_TASK:
                DRIVE_SYNCS.labels(bounded_label(result, DRIVE_SYNC_OUTCOMES)).inc()
            logger.info("job %s (%s) succeeded in %.2f s", job.id, job.task_name, time.monotonic() - started)
            return result
    finally:
        if request_id is not None:
            job.task_kwargs[REQUEST_ID_ARG] = request_id
        JOBS.labels(task_label, queue_label, outcome).inc()
        JOB_SECONDS.labels(task_label, queue_label, outcome).observe(time.monotonic() - started)


def failure_outcome(worker: Worker, context: JobContext, error: BaseException) -> str:
    if isinstance(error, JobAborted | asyncio.CancelledError):
        return "aborted"
    task = worker.app.tasks.get(context.job.task_name)
    will_retry = task is not None and task.get_retry_exception(exception=error, job=context.job) is not None
    return "retried" if will_retry else "failed"


def reason(error: BaseException) -> str:
    """Why an attempt failed, for operators: the type and the message (a QuarryError's operator text)."""
    message = str(error).replace("\n", " ").strip()
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if isinstance(error, QuarryError) and error.sqlstate:
        text += f" (SQLSTATE {error.sqlstate})"
    return text[:MAX_REASON_CHARS]


async def record_failure(context: JobContext, error: BaseException, *, final: bool) -> None:
    job = context.job
    worker: WorkerContext | None = context.additional_context.get(CONTEXT_KEY)
    if worker is None or job.id is None:
        return
    try:
        await worker.core.database.fetch(
            "select internal.record_job_failure(%s, %s, %s, %s, %s, %s)",
            (job.id, job.attempts, job.task_name, job.queue, reason(error), final),
        )
    except Exception as failure:  # the job's own outcome matters more than its explanation
        if not is_transient(failure):
            logger.exception("could not record why job %s failed", job.id)
        else:
            logger.warning("could not record why job %s failed (%s)", job.id, why(failure))


async def sample_gauges(worker: WorkerContext, every_seconds: float) -> None:
    """Refresh the queue, outbox and webhook gauges until cancelled."""
    seen_queues: set[tuple[str, str]] = set()
    seen_oldest: set[str] = set()
    seen_outcomes: set[str] = set()
    while True:
        try:
            rows = await worker.core.database.fetch("select metric, labels, value from internal.queue_gauges()")
        except Exception as error:
            GAUGE_SAMPLES.labels("error").inc()
            if not is_transient(error):
                logger.exception("could not read the queue figures")
        else:
            GAUGE_SAMPLES.labels("ok").inc()
            queues, oldest, outcomes = _apply(rows)
            for stale in seen_queues - queues:
                QUEUE_JOBS.remove(*stale)
            for stale_queue in seen_oldest - oldest:
                QUEUE_OLDEST.remove(stale_queue)
            for stale_outcome in seen_outcomes - outcomes:
                WEBHOOK_EVENTS.remove(stale_outcome)
            seen_queues, seen_oldest, seen_outcomes = queues, oldest, outcomes
        await asyncio.sleep(every_seconds)


def _apply(rows: list[Any]) -> tuple[set[tuple[str, str]], set[str], set[str]]:
    queues: set[tuple[str, str]] = set()
    oldest: set[str] = set()
    outcomes: set[str] = set()
    queue_jobs = {"todo": 0.0, "doing": 0.0}
    for row in rows:
        labels = row["labels"] or {}
        value = float(row["value"] or 0)
        metric = row["metric"]
        if metric == "jobs":
            key = (bounded_label(labels.get("queue")), bounded_label(labels.get("status"), queue_jobs))
            QUEUE_JOBS.labels(*key).set(value)
            queues.add(key)
        elif metric == "oldest_waiting_seconds":
            queue = bounded_label(labels.get("queue"))
            QUEUE_OLDEST.labels(queue).set(value)
            oldest.add(queue)
        elif metric == "outbox_pending":
            OUTBOX_PENDING.set(value)
        elif metric == "outbox_lag_seconds":
            OUTBOX_LAG.set(value)
        elif metric == "outbox_failing":
            OUTBOX_FAILING.set(value)
        elif metric == "webhook_events":
            outcome = bounded_label(labels.get("outcome"))
            WEBHOOK_EVENTS.labels(outcome).set(value)
            outcomes.add(outcome)
    return queues, oldest, outcomes


def serve_metrics(host: str, port: int) -> WSGIServer | None:
    """/metrics on a port of its own (a daemon thread); None when off or the port is taken."""
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as error:
        logger.error("cannot serve metrics on %s:%d (%s); set WORKER_METRICS_PORT (0: off)", host, port, error)
        return None
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return server
