"""Reconciliation: Stripe's state of every customer, applied again (a webhook that never arrived).

For each customer the worker holds the customer's lock (the webhook takes
the same one), lists its subscriptions from Stripe, cancelled ones included,
and applies each, oldest first, through internal.apply_stripe_subscription,
the function the webhook writes through: that function alone decides what
wins (a newer live subscription over an older cancelled one; a cancelled one
stays cancelled).  Failed events are replayed the same way for their
customer, so a fixed cause (a price added to the map, a customer recorded
late) repairs them.  Run by the worker every hour (`billing:reconcile`) and
by hand: `python -m quarry.billing reconcile` / `replay [EVENT_ID]`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from quarry.billing.checkout import BillingService
from quarry.billing.stripe_api import BillingUnavailable, StripeApi
from quarry.db import TenantDatabase

logger = logging.getLogger("quarry.billing")


@dataclass
class Reconciliation:
    customers: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    unreachable: int = 0
    replayed: int = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def summary(self) -> str:
        outcomes = ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items())) or "nothing"
        return (
            f"{self.customers} customer(s) reconciled: {outcomes}; {self.replayed} failed event(s) replayed;"
            f" {self.unreachable} not reachable in Stripe"
        )


async def reconcile_customer(
    database: TenantDatabase, stripe: StripeApi, customer: str, *, event_id: str | None = None
) -> str:
    """Apply the customer's subscriptions as Stripe has them now; the last outcome ('none': it has none)."""
    async with database.service_transaction() as conn:
        await conn.execute("select internal.lock_stripe_customer(%s)", (customer,))
        subscriptions = sorted(await stripe.subscriptions_of(customer), key=lambda s: s.get("created") or 0)
        if not subscriptions:
            if event_id is not None:
                await conn.execute(
                    "select internal.fail_stripe_event(%s, %s)", (event_id, "Stripe has no subscription for it.")
                )
            return "none"
        outcome = "none"
        for subscription in subscriptions:
            cursor = await conn.execute(
                "select internal.apply_stripe_subscription(%s, %s, %s::jsonb) as outcome",
                (event_id, customer, json.dumps(subscription)),
            )
            row = await cursor.fetchone()
            outcome = str(row["outcome"]) if row else "none"
    return outcome


async def reconcile_all(database: TenantDatabase, billing: BillingService) -> Reconciliation:
    result = Reconciliation()
    if billing.stripe is None:
        logger.info("billing is not configured (no STRIPE_SECRET_KEY): nothing to reconcile")
        return result
    await billing.record_prices()
    for row in await database.fetch("select stripe_customer_id from internal.billing_customers_to_reconcile()"):
        result.customers += 1
        try:
            result.count(await reconcile_customer(database, billing.stripe, row["stripe_customer_id"]))
        except BillingUnavailable:
            result.unreachable += 1
    result.replayed = await replay_failed(database, billing)
    logger.info("billing reconciliation: %s", result.summary())
    return result


async def replay_failed(database: TenantDatabase, billing: BillingService, event_id: str | None = None) -> int:
    """Apply the failed events (or the one named) again; how many are no longer failed."""
    if billing.stripe is None:
        return 0
    replayed = 0
    events = await database.fetch(
        "select id, stripe_customer_id from internal.stripe_events_to_replay(%s)", (event_id,)
    )
    for event in events:
        try:
            outcome = await reconcile_customer(
                database, billing.stripe, event["stripe_customer_id"], event_id=event["id"]
            )
        except BillingUnavailable:
            continue
        if outcome in ("applied", "stale"):
            replayed += 1
    return replayed
