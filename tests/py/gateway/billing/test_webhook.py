"""End to end over HTTP: the gateway (stripe-python), the local Stripe, the real stripe-webhook Edge
Function under Deno writing to the real Postgres as quarry_webhook, and the next gateway request.

All three tiers, the grace period and the downgrade; events shuffled, duplicated and concurrent;
stale events; refused deliveries that write nothing."""

from __future__ import annotations

import json
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import httpx2

from quarry.dev.webhook import webhook_env
from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem
from tests.py.support.fake_stripe import Event, FakeStripe, sign
from tests.py.support.net import free_port
from tests.py.support.webhook import running_webhook

PRO, ENTERPRISE = "price_pro_test", "price_enterprise_test"


def start_checkout(api: Api, plan: str = "pro") -> str:
    response: httpx2.Response = api.client.post("/api/billing/checkout", headers=api.headers, json={"plan": plan})
    assert response.status_code == 200, response.text
    return str(response.json()["url"].rsplit("/", 1)[1])


def plan_of(api: Api) -> str:
    response = api.get("/api/me")
    assert response.status_code == 200, response.text
    return str(response.json()["plan"])


def usage(api: Api) -> dict[str, Any]:
    response = api.get("/api/billing/usage")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def subscription_row(admin: Admin, tenant: uuid.UUID) -> tuple[object, ...] | None:
    rows = admin.execute(
        "select plan_id, status::text, stripe_price_id, cancel_at_period_end from app.subscriptions"
        " where tenant_id = %s",
        tenant,
    )
    return rows[0] if rows else None


def outcomes(admin: Admin, events: list[Event]) -> dict[str, str]:
    rows = admin.execute(
        "select id, outcome from internal.stripe_events where id = any(%s)", [event.id for event in events]
    )
    return {str(event_id): str(outcome) for event_id, outcome in rows}


def test_free_to_pro_to_enterprise_through_past_due_to_canceled(
    customer: Api, fake_stripe: FakeStripe, webhook: str, admin: Admin, clock: Any
) -> None:
    admin.prefill(customer.tenant_id, "documents_per_month", 50)
    assert_problem(customer.upload("over.txt", b"one too many"), 402, "quota-exceeded")
    assert plan_of(customer) == "free"

    session = start_checkout(customer, "pro")
    events = fake_stripe.complete_checkout(session)  # each delivery answered 200

    assert plan_of(customer) == "pro", "the very next request sees Pro"
    pro = usage(customer)
    assert (pro["plan"], pro["subscription_status"]) == ("pro", "active")
    assert pro["limits"]["documents_per_month"]["limit"] == 1000
    assert customer.upload("fifty-first.txt", b"beyond Free's 50 this month").status_code == 202
    app_metadata = admin.scalar("select raw_app_meta_data from auth.users where id = %s", customer.tenant_id)
    assert isinstance(app_metadata, dict)
    assert (app_metadata["plan"], app_metadata["subscription_status"]) == ("pro", "active")
    assert set(outcomes(admin, events).values()) == {"applied"}

    subscription = str(fake_stripe.sessions[session]["subscription"])
    assert customer.get("/api/billing/portal").status_code == 200
    fake_stripe.change_price(subscription, ENTERPRISE)  # the plan change in the portal
    assert plan_of(customer) == "enterprise"
    assert usage(customer)["limits"]["documents_per_month"]["limit"] is None

    fake_stripe.fail_payment(subscription)
    past_due = usage(customer)
    assert (past_due["plan"], past_due["subscription_status"]) == ("enterprise", "past_due")
    clock(datetime.now(UTC) + timedelta(days=6, hours=23))
    assert plan_of(customer) == "enterprise", "past_due keeps Enterprise through the grace period"
    clock(None)

    fake_stripe.cancel(subscription)
    assert plan_of(customer) == "free"
    assert usage(customer)["subscription_status"] == "canceled"
    assert admin.documents(customer.tenant_id) == 1, "the downgrade deleted nothing"
    assert_problem(customer.upload("more.txt", b"over Free's limit again"), 402, "quota-exceeded")
    app_metadata = admin.scalar("select raw_app_meta_data from auth.users where id = %s", customer.tenant_id)
    assert isinstance(app_metadata, dict)
    assert (app_metadata["plan"], app_metadata["subscription_status"]) == ("free", "canceled")
    assert start_checkout(customer, "enterprise"), "a cancelled customer may check out again"


def lifecycle(api: Api, fake: FakeStripe) -> tuple[str, list[Event]]:
    """Checkout, upgrade, a failed payment and its recovery, none delivered yet."""
    session = start_checkout(api)
    events = fake.complete_checkout(session, deliver=False)
    subscription = str(fake.sessions[session]["subscription"])
    events += fake.change_price(subscription, ENTERPRISE, deliver=False)
    events += fake.fail_payment(subscription, deliver=False)
    events += fake.pay(subscription, deliver=False)
    return subscription, events


def test_shuffled_duplicated_concurrent_deliveries_end_as_in_order(
    customer: Api, fake_stripe: FakeStripe, webhook: str, admin: Admin, billing_gateway: Any, tokens: Any
) -> None:
    in_order_tenant = admin.new_user()
    in_order = Api(billing_gateway, tokens.es256(in_order_tenant), in_order_tenant)
    _, ordered_events = lifecycle(in_order, fake_stripe)
    assert fake_stripe.deliver_all(ordered_events) == [200] * len(ordered_events)

    _, events = lifecycle(customer, fake_stripe)
    deliveries = events * 5
    random.Random(14).shuffle(deliveries)  # noqa: S311 (a reproducible order, not a secret)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda event: fake_stripe.deliver(event).status_code, deliveries))

    assert statuses == [200] * len(deliveries)
    assert subscription_row(admin, customer.tenant_id) == subscription_row(admin, in_order_tenant)
    assert subscription_row(admin, customer.tenant_id) == ("enterprise", "active", ENTERPRISE, False)
    recorded = outcomes(admin, events)
    assert sorted(recorded) == sorted(event.id for event in events), "each event recorded once"
    assert "failed" not in recorded.values()
    assert plan_of(customer) == plan_of(in_order) == "enterprise"


def test_a_stale_created_incomplete_after_updated_active_leaves_it_active(
    customer: Api, fake_stripe: FakeStripe, webhook: str, admin: Admin
) -> None:
    session = start_checkout(customer)
    fake_stripe.complete_checkout(session, deliver=False)
    subscription = fake_stripe.subscriptions[str(fake_stripe.sessions[session]["subscription"])]
    stale = fake_stripe.event(
        "customer.subscription.created", {**subscription, "status": "incomplete"}, created=int(time.time()) - 60
    )
    updated = fake_stripe.pay(subscription["id"], deliver=False)

    assert fake_stripe.deliver_all([*updated, stale]) == [200, 200, 200]

    assert subscription_row(admin, customer.tenant_id) == ("pro", "active", PRO, False)


def test_deleted_then_a_late_updated_stays_canceled(
    customer: Api, fake_stripe: FakeStripe, webhook: str, admin: Admin
) -> None:
    session = start_checkout(customer)
    fake_stripe.complete_checkout(session)
    subscription = str(fake_stripe.sessions[session]["subscription"])
    late = fake_stripe.change_price(subscription, ENTERPRISE, deliver=False)
    fake_stripe.cancel(subscription)

    assert fake_stripe.deliver_all(late) == [200]

    assert subscription_row(admin, customer.tenant_id) == ("enterprise", "canceled", ENTERPRISE, False)
    assert plan_of(customer) == "free"


def test_cancel_at_period_end_keeps_the_plan(customer: Api, fake_stripe: FakeStripe, webhook: str) -> None:
    session = start_checkout(customer, "enterprise")
    fake_stripe.complete_checkout(session)
    fake_stripe.cancel(str(fake_stripe.sessions[session]["subscription"]), at_period_end=True)
    assert plan_of(customer) == "enterprise"
    assert usage(customer)["subscription_status"] == "active"


def assert_nothing_recorded(admin: Admin, event: Event) -> None:
    assert admin.scalar("select count(*) from internal.stripe_events where id = %s", event.id) == 0


def test_refused_deliveries_write_nothing(customer: Api, fake_stripe: FakeStripe, webhook: str, admin: Admin) -> None:
    session = start_checkout(customer)
    events = fake_stripe.complete_checkout(session, deliver=False)
    event = events[0]
    now = int(time.time())

    assert fake_stripe.deliver(event, secret="whsec_forged").status_code == 400
    assert fake_stripe.deliver(event, timestamp=now - 301).status_code == 400, "older than the tolerance"
    assert httpx.post(webhook, content=event.payload()).status_code == 400, "no signature"
    padded = json.dumps({**json.loads(event.payload()), "padding": "x" * (1024 * 1024)}).encode()
    assert fake_stripe.deliver(event, payload=padded).status_code == 400, "over 1 MB"
    assert fake_stripe.deliver(event, payload=b'{"id": "evt_x", "type": ').status_code == 400, "malformed"
    stripped = event.payload()
    forged = httpx.post(
        webhook,
        content=stripped.replace(b'"active"', b'"trialing"'),
        headers={"Stripe-Signature": sign(stripped, fake_stripe.webhook_secret)},
    )
    assert forged.status_code == 400, "a body changed after signing"

    assert_nothing_recorded(admin, event)
    assert subscription_row(admin, customer.tenant_id) is None
    assert plan_of(customer) == "free"

    rotated = fake_stripe.deliver(event, secret="whsec_previous_secret")
    assert rotated.status_code == 200, "the previous secret still works while rotating"
    assert plan_of(customer) == "pro"


def test_a_customer_that_is_not_ours_naming_our_tenant_is_refused(
    customer: Api, fake_stripe: FakeStripe, webhook: str, admin: Admin
) -> None:
    start_checkout(customer)  # the victim has a customer of its own
    intruder = fake_stripe.create_customer({"tenant_id": str(customer.tenant_id)})
    session = fake_stripe.create_session(intruder, ENTERPRISE, {"tenant_id": str(customer.tenant_id)})
    events = fake_stripe.complete_checkout(session, deliver=False)

    assert fake_stripe.deliver_all(events) == [200, 200, 200]

    assert set(outcomes(admin, events).values()) == {"failed"}
    assert subscription_row(admin, customer.tenant_id) is None
    assert plan_of(customer) == "free"
    errors = admin.execute("select error from ops.stripe_event_failures where id = %s", events[0].id)
    assert errors == [("The customer is not one of ours (app.billing_customers).",)]


def test_a_database_failure_answers_5xx_so_stripe_retries(
    customer: Api, fake_stripe: FakeStripe, admin: Admin, tmp_path: Path
) -> None:
    env = webhook_env(
        database_url="postgresql://quarry_webhook@127.0.0.1:1/nowhere",
        stripe_secret_key=fake_stripe.api_key,
        webhook_secret=fake_stripe.webhook_secret,
        stripe_api_base=fake_stripe.url,
        port=free_port(),
    )
    session = start_checkout(customer)
    event = fake_stripe.complete_checkout(session, deliver=False)[0]
    with running_webhook(env, tmp_path / "webhook.log") as unreachable:
        response = httpx.post(
            unreachable,
            content=event.payload(),
            headers={"Stripe-Signature": sign(event.payload(), fake_stripe.webhook_secret)},
            timeout=30,
        )
    assert response.status_code >= 500
    assert_nothing_recorded(admin, event)
