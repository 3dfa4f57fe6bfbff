"""Reconciliation against the local Stripe: drift from missed webhooks is repaired, failed events
are replayed once their cause is fixed, and it runs by hand (`python -m quarry.billing`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from quarry.billing.checkout import BillingService
from quarry.billing.reconcile import Reconciliation, reconcile_all, replay_failed
from quarry.db import TenantDatabase
from quarry.paths import REPO_ROOT
from quarry.settings import BillingSettings
from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls
from tests.py.support.fake_stripe import FakeStripe

PRO = "price_pro_test"


@pytest.fixture
def billing_env(fake_stripe: FakeStripe, database: DatabaseUrls) -> dict[str, str]:
    return {
        **fake_stripe.gateway_env(),
        "QUARRY_ENV": "test",
        "TENANT_DATABASE_URL": database.tenant_url,
        "WORKER_DATABASE_URL": database.worker_url,
        "DATABASE_URL": database.gateway_url,
    }


Run = Callable[..., "Reconciliation | int"]


@pytest.fixture
def run(billing_env: dict[str, str], database: DatabaseUrls) -> Run:
    """Run a reconciliation step as the worker does (its login role, its settings)."""
    settings = BillingSettings.from_env(billing_env)
    assert settings is not None

    async def step(action: str, event: str | None = None) -> Reconciliation | int:
        db = TenantDatabase.connect(database.tenant_url, database.worker_url, min_size=1)
        await db.open(wait=True)
        billing = BillingService(db, settings)
        try:
            if action == "reconcile":
                return await reconcile_all(db, billing)
            return await replay_failed(db, billing, event)
        finally:
            await billing.aclose()
            await db.close()

    return lambda action, event=None: asyncio.run(step(action, event))


def subscribed_customer(admin: Admin, fake: FakeStripe) -> tuple[uuid.UUID, str, str]:
    """A tenant with a customer recorded and a paid subscription in Stripe, whose webhooks never arrived."""
    tenant = admin.new_user()
    customer = fake.create_customer({"tenant_id": str(tenant)})
    admin.execute("select internal.record_billing_customer(%s, %s)", tenant, customer)
    session = fake.create_session(customer, PRO, {"tenant_id": str(tenant)})
    fake.complete_checkout(session, deliver=False)
    return tenant, customer, str(fake.sessions[session]["subscription"])


def state(admin: Admin, tenant: uuid.UUID) -> tuple[object, ...] | None:
    rows = admin.execute("select plan_id, status::text from app.subscriptions where tenant_id = %s", tenant)
    return rows[0] if rows else None


def test_reconciliation_repairs_missed_webhooks(admin: Admin, fake_stripe: FakeStripe, run: Run) -> None:
    tenant, _, subscription = subscribed_customer(admin, fake_stripe)
    assert state(admin, tenant) is None

    result = run("reconcile")
    assert isinstance(result, Reconciliation) and result.customers >= 1
    assert state(admin, tenant) == ("pro", "active")

    fake_stripe.set_status(subscription, "canceled")  # cancelled in Stripe; the webhook was lost
    run("reconcile")
    assert state(admin, tenant) == ("pro", "canceled")
    assert admin.scalar("select app.effective_plan(%s)", tenant) == "free"


def test_an_older_cancelled_subscription_does_not_override_the_live_one(
    admin: Admin, fake_stripe: FakeStripe, run: Run
) -> None:
    tenant, customer, old = subscribed_customer(admin, fake_stripe)
    fake_stripe.set_status(old, "canceled")
    fake_stripe.subscriptions[old]["created"] -= 100
    session = fake_stripe.create_session(customer, "price_enterprise_test", {"tenant_id": str(tenant)})
    fake_stripe.complete_checkout(session, deliver=False)

    run("reconcile")

    assert state(admin, tenant) == ("enterprise", "active")


def test_a_failed_event_is_replayed_once_its_cause_is_fixed(
    admin: Admin, fake_stripe: FakeStripe, run: Run, billing_env: dict[str, str]
) -> None:
    tenant = admin.new_user()
    customer = fake_stripe.create_customer({"tenant_id": str(tenant)})
    session = fake_stripe.create_session(customer, PRO, {"tenant_id": str(tenant)})
    event = fake_stripe.complete_checkout(session, deliver=False)[0]
    subscription = fake_stripe.subscriptions[str(fake_stripe.sessions[session]["subscription"])]
    # What the webhook did when the customer was not recorded yet:
    admin.execute(
        "select internal.claim_stripe_event(%s, %s, %s, %s, now())", event.id, event.type, customer, subscription["id"]
    )
    outcome = admin.scalar(
        "select internal.apply_stripe_subscription(%s, %s, %s::jsonb)", event.id, customer, json.dumps(subscription)
    )
    assert outcome == "failed"
    assert admin.scalar("select count(*) from ops.stripe_event_failures where id = %s", event.id) == 1

    assert run("replay", event.id) == 0, "still failing: the cause is not fixed"
    admin.execute("select internal.record_billing_customer(%s, %s)", tenant, customer)
    replayed = subprocess.run(
        [sys.executable, "-m", "quarry.billing", "replay", event.id],
        cwd=REPO_ROOT,
        env={**os.environ, **billing_env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert replayed.returncode == 0, replayed.stderr
    assert "1 event(s) replayed" in replayed.stdout
    assert state(admin, tenant) == ("pro", "active")
    assert admin.scalar("select outcome from internal.stripe_events where id = %s", event.id) == "applied"
    assert admin.scalar("select count(*) from ops.stripe_event_failures where id = %s", event.id) == 0
