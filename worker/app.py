"""The procrastinate app: every domain registers its own tasks.

A domain's jobs live in a module of their own, listed in DOMAINS, with a
NAMESPACE (its task names are `namespace:name`), `register(app)` (its tasks,
each with its queue and retry strategy) and `abandon(...)` (what it means for
the user when one of its jobs stopped its worker once too often).  Jobs are
deferred from SQL through internal.defer_job, whose internal.job_queue names
each task's queue; tests/py/worker/test_jobs.py checks that the two agree.

A job of a tenant whose plan has a job pool (Enterprise) goes to
`<pool>.<queue>` instead (internal.defer_job), so the same task runs from the
shared queue or from a pool's: `select_queues` turns `--queues` into the
queue names a worker serves.  Workers fetch through internal.fetch_job
(FairJobManager): the highest priority first, but one fetch in
internal.job_settings.oldest_job_every takes the oldest job, so no plan
starves another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from types import ModuleType
from typing import Any

import procrastinate
from procrastinate import jobs, manager

from worker import account, billing, drive, exports, ingest, maintenance
from worker.context import WorkerContext

DOMAINS: tuple[ModuleType, ...] = (ingest, maintenance, billing, drive, exports, account)

AbandonHook = Callable[[WorkerContext, str, int | None, dict[str, Any]], Awaitable[None]]


SHARED = "shared"  # `--queues shared`: the queues of tenants whose plan has no job pool
FETCH_JOB = """
select id, status, task_name, priority, lock, queueing_lock, args, scheduled_at, queue_name, attempts, worker_id
from internal.fetch_job(%(queues)s::varchar[], %(worker_id)s)
"""


class FairJobManager(manager.JobManager):
    """procrastinate's job manager, fetching through internal.fetch_job (priority, with a share for the oldest)."""

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> jobs.Job | None:
        row = await self.connector.execute_query_one_async(
            query=FETCH_JOB, queues=list(queues) if queues is not None else None, worker_id=worker_id
        )
        return None if row["id"] is None else jobs.Job.from_row(row)


def procrastinate_app(conninfo: str, *, max_size: int = 4) -> procrastinate.App:
    """procrastinate's tables live in the `procrastinate` schema (a migration installs them)."""
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo,
        kwargs={"options": "-c search_path=procrastinate"},
        min_size=1,
        max_size=max_size,
    )  # procrastinate checks each connection it takes from this pool (a restarted database costs nothing)
    app = procrastinate.App(connector=connector)
    app.job_manager = FairJobManager(connector)
    for domain in DOMAINS:
        domain.register(app)
    return app


class UnknownQueue(ValueError):
    pass


def select_queues(app: procrastinate.App, pools: Iterable[str], wanted: Iterable[str] | None) -> list[str] | None:
    """The queues a worker serves: None (every queue) when nothing is asked for; else each item of
    `wanted` is `shared` (the shared queues), a job pool's name (`enterprise`: that pool's queues) or
    a queue's own name (`ingest`, `enterprise.drive`).  Anything else is refused: a typo would
    leave jobs waiting for a worker that never comes."""
    if wanted is None:
        return None
    shared = queues(app)
    pool_queues = {pool: [f"{pool}.{queue}" for queue in shared] for pool in pools}
    known = set(shared) | {queue for names in pool_queues.values() for queue in names}
    chosen: list[str] = []
    for item in wanted:
        if item == SHARED:
            chosen += shared
        elif item in pool_queues:
            chosen += pool_queues[item]
        elif item in known:
            chosen.append(item)
        else:
            options = ", ".join([SHARED, *sorted(pool_queues), *sorted(known)])
            raise UnknownQueue(f"no queue or pool is named {item!r} (one of: {options})")
    if not chosen:
        raise UnknownQueue("--queues names no queue")
    return sorted(set(chosen))


def domain_tasks(app: procrastinate.App) -> dict[str, procrastinate.tasks.Task[Any, Any, Any]]:
    """The tasks our domains registered (procrastinate adds builtin ones of its own)."""
    return {name: task for name, task in app.tasks.items() if _domain_of(name) is not None}


def queues(app: procrastinate.App) -> list[str]:
    """Every queue a domain's task is in: what a worker listens to."""
    return sorted({task.queue for task in domain_tasks(app).values()})


def max_attempts(app: procrastinate.App, task_name: str) -> int:
    task = app.tasks.get(task_name)
    strategy = task.retry_strategy if task is not None else None
    attempts = getattr(strategy, "max_attempts", None)
    return attempts if isinstance(attempts, int) and attempts > 0 else 1


def abandon_hook(task_name: str) -> AbandonHook | None:
    """The hook of the domain whose task this is; None for a task of no domain."""
    domain = _domain_of(task_name)
    hook: AbandonHook | None = domain.abandon if domain is not None else None
    return hook


def _domain_of(task_name: str) -> ModuleType | None:
    return next((domain for domain in DOMAINS if task_name.startswith(f"{domain.NAMESPACE}:")), None)
