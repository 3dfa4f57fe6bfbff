"""The procrastinate app: every domain registers its own tasks.

A domain's jobs live in a module of their own, listed in DOMAINS, with a
NAMESPACE (its task names are `namespace:name`), `register(app)` (its tasks,
each with its queue and retry strategy) and `abandon(...)` (what it means for
the user when one of its jobs stopped its worker once too often).  Jobs are
deferred from SQL through internal.defer_job, whose internal.job_queue names
each task's queue; tests/py/worker/test_jobs.py checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import procrastinate

from worker import account, billing, drive, exports, ingest, maintenance
from worker.context import WorkerContext

DOMAINS: tuple[ModuleType, ...] = (ingest, maintenance, billing, drive, exports, account)

AbandonHook = Callable[[WorkerContext, str, int | None, dict[str, Any]], Awaitable[None]]


def procrastinate_app(conninfo: str) -> procrastinate.App:
    """procrastinate's tables live in the `procrastinate` schema (a migration installs them)."""
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo,
        kwargs={"options": "-c search_path=procrastinate"},
        min_size=1,
        max_size=4,
    )  # procrastinate checks each connection it takes from this pool (a restarted database costs nothing)
    app = procrastinate.App(connector=connector)
    for domain in DOMAINS:
        domain.register(app)
    return app


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
