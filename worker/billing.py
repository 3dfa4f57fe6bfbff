"""Billing jobs: `billing:reconcile` re-fetches every customer's subscriptions from Stripe every hour,
repairs drift (a missed webhook) and replays failed events (quarry.billing.reconcile).
By hand: `python -m quarry.billing reconcile`."""

from __future__ import annotations

from typing import Any

import procrastinate
from procrastinate import JobContext

from quarry.billing.reconcile import reconcile_all
from worker.context import WorkerContext

NAMESPACE = "billing"
QUEUE = "maintenance"
RECONCILE = f"{NAMESPACE}:reconcile"
RECONCILE_CRON = "41 * * * *"


def register(app: procrastinate.App) -> None:
    task = app.task(name=RECONCILE, queue=QUEUE, pass_context=True)(reconcile)
    app.periodic(cron=RECONCILE_CRON, periodic_id="billing_reconcile")(task)


async def reconcile(context: JobContext, timestamp: int) -> int:
    worker = WorkerContext.of(context)
    result = await reconcile_all(worker.core.database, worker.core.billing)
    return result.customers


async def abandon(worker: WorkerContext, task_name: str, job_id: int | None, kwargs: dict[str, Any]) -> None:
    """A reconciliation that keeps stopping its worker simply runs again at the next tick."""
