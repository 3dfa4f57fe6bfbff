"""Checkout and the Billing Portal through the gateway, with stripe-python talking to the local Stripe:
one customer per tenant however many checkouts race, the session Stripe is asked for, no open
redirect, the caller's own customer only, one live subscription, and refusals that write nothing."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from quarry.billing.stripe_api import CHECKOUT_WINDOW_SECONDS, checkout_idempotency_key
from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem
from tests.py.support.fake_stripe import FakeStripe


def checkout(api: Api, **body: Any) -> httpx2.Response:
    response: httpx2.Response = api.client.post("/api/billing/checkout", headers=api.headers, json=body)
    return response


def session_of(fake: FakeStripe, response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    session_id = response.json()["url"].rsplit("/", 1)[1]
    return fake.sessions[session_id]


def customers_of(fake: FakeStripe, tenant: uuid.UUID) -> list[str]:
    return [c["id"] for c in fake.customers.values() if c["metadata"].get("tenant_id") == str(tenant)]


def recorded_customer(admin: Admin, tenant: uuid.UUID) -> object:
    return admin.scalar("select stripe_customer_id from app.billing_customers where tenant_id = %s", tenant)


def test_checkout_asks_stripe_for_a_subscription_session_of_the_plans_price(
    customer: Api, fake_stripe: FakeStripe, admin: Admin
) -> None:
    response = checkout(customer, plan="pro")

    assert response.headers["cache-control"] == "no-store"
    assert response.json()["url"].startswith(f"{fake_stripe.url}/checkout/cs_test_")
    session = session_of(fake_stripe, response)
    tenant = str(customer.tenant_id)
    assert session["mode"] == "subscription"
    assert session["line_items_price"] == "price_pro_test"
    assert session["client_reference_id"] == tenant
    assert session["subscription_metadata"] == {"tenant_id": tenant}
    assert (session["success_url"], session["cancel_url"]) == (
        "https://app.example.com/billing/done",
        "https://app.example.com/billing",
    )
    assert customers_of(fake_stripe, customer.tenant_id) == [session["customer"]]
    assert recorded_customer(admin, customer.tenant_id) == session["customer"]

    again = session_of(fake_stripe, checkout(customer, plan="enterprise"))
    assert again["customer"] == session["customer"], "the second checkout reuses the customer"
    assert again["line_items_price"] == "price_enterprise_test"


def test_ten_concurrent_first_checkouts_create_one_customer_and_one_session(
    customer: Api, fake_stripe: FakeStripe, admin: Admin
) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda _: checkout(customer, plan="pro"), range(10)))

    assert [r.status_code for r in responses] == [200] * 10
    created = customers_of(fake_stripe, customer.tenant_id)
    assert len(created) == 1
    assert {session_of(fake_stripe, r)["customer"] for r in responses} == set(created)
    assert admin.scalar("select count(*) from app.billing_customers where tenant_id = %s", customer.tenant_id) == 1
    # Ten clicks are one Checkout Session: paying it twice is impossible.
    assert len({r.json()["url"] for r in responses}) == 1
    other_plan = checkout(customer, plan="enterprise")
    assert other_plan.json()["url"] != responses[0].json()["url"], "another checkout is another session"


def test_the_same_checkout_is_a_new_session_in_a_later_window() -> None:
    tenant = uuid.uuid4()
    fields = ["cus_1", "pro", "price_pro", "https://a/done", "https://a/"]
    now = 1_800_000_000.0 - 1_800_000_000.0 % CHECKOUT_WINDOW_SECONDS
    first = checkout_idempotency_key(tenant, fields, now=now)
    assert checkout_idempotency_key(tenant, fields, now=now + CHECKOUT_WINDOW_SECONDS - 1) == first
    assert checkout_idempotency_key(tenant, fields, now=now + CHECKOUT_WINDOW_SECONDS) != first
    assert checkout_idempotency_key(uuid.uuid4(), fields, now=now) != first
    assert checkout_idempotency_key(tenant, [*fields[:1], "enterprise", *fields[2:]], now=now) != first


@pytest.mark.parametrize(
    "body",
    [
        {"plan": "free"},
        {"plan": "platinum"},
        {},
        {"plan": "pro", "customer": "cus_someone_else"},
        {"plan": "pro", "success_url": "https://evil.example.net/phish"},
        {"plan": "pro", "cancel_url": "javascript:alert(1)"},
        {"plan": "pro", "success_url": "https://app.example.com.evil.example.net/"},
        {"plan": "pro", "success_url": "https://user@app.example.com/"},
    ],
)
def test_a_bad_plan_or_a_redirect_off_the_allow_list_is_refused_before_stripe_is_asked(
    customer: Api, fake_stripe: FakeStripe, admin: Admin, body: dict[str, Any]
) -> None:
    sessions = len(fake_stripe.sessions)

    assert_problem(checkout(customer, **body), 422, "invalid-parameter")

    assert len(fake_stripe.sessions) == sessions
    assert customers_of(fake_stripe, customer.tenant_id) == []
    assert recorded_customer(admin, customer.tenant_id) is None


def test_redirects_on_an_allowed_origin_are_used(customer: Api, fake_stripe: FakeStripe) -> None:
    session = session_of(
        fake_stripe,
        checkout(
            customer, plan="pro", success_url="http://localhost:3000/thanks?x=1", cancel_url="https://app.example.com/"
        ),
    )
    assert (session["success_url"], session["cancel_url"]) == (
        "http://localhost:3000/thanks?x=1",
        "https://app.example.com/",
    )


def test_the_portal_is_for_the_callers_own_customer_only(
    customer: Api, billing_gateway: TestClient, admin: Admin, tokens: Any, fake_stripe: FakeStripe
) -> None:
    assert_problem(customer.get("/api/billing/portal"), 404, "not-found")

    other_tenant = admin.new_user()
    other = Api(billing_gateway, tokens.es256(other_tenant), other_tenant)
    session_of(fake_stripe, checkout(other, plan="pro"))
    assert_problem(customer.get("/api/billing/portal"), 404, "not-found")  # another tenant's customer is not ours

    own = session_of(fake_stripe, checkout(customer, plan="pro"))["customer"]
    response = customer.get("/api/billing/portal")
    assert response.status_code == 200, response.text
    portal = fake_stripe.portal_sessions[response.json()["url"].rsplit("/", 1)[1]]
    assert (portal["customer"], portal["return_url"]) == (own, "https://app.example.com/account")
    assert own != recorded_customer(admin, other_tenant)

    assert_problem(customer.get("/api/billing/portal?return_url=https://evil.example.net/"), 422)
    response = customer.get("/api/billing/portal?return_url=http://localhost:3000/back")
    assert fake_stripe.portal_sessions[response.json()["url"].rsplit("/", 1)[1]]["return_url"] == (
        "http://localhost:3000/back"
    )


def test_a_live_subscription_gets_the_portal_instead_of_a_second_checkout(
    customer: Api, fake_stripe: FakeStripe, admin: Admin
) -> None:
    own = session_of(fake_stripe, checkout(customer, plan="pro"))["customer"]
    admin.execute(
        "insert into app.subscriptions (tenant_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " values (%s, 'pro', 'past_due', %s, %s)",
        customer.tenant_id,
        own,
        f"sub_{uuid.uuid4().hex}",
    )
    sessions = len(fake_stripe.sessions)

    body = assert_problem(checkout(customer, plan="enterprise"), 409, "subscription-exists")

    assert (body["plan"], body["subscription_status"]) == ("pro", "past_due")
    portal = fake_stripe.portal_sessions[body["portal_url"].rsplit("/", 1)[1]]
    assert portal["customer"] == own
    assert len(fake_stripe.sessions) == sessions

    admin.execute("update app.subscriptions set status = 'canceled' where tenant_id = %s", customer.tenant_id)
    assert checkout(customer, plan="enterprise").status_code == 200, "after the cancellation a checkout is fine"


def test_stripe_down_is_a_503_and_records_no_customer(customer: Api, fake_stripe: FakeStripe, admin: Admin) -> None:
    fake_stripe.fail_requests = 10  # more than stripe-python's retries
    try:
        response = checkout(customer, plan="pro")
    finally:
        fake_stripe.fail_requests = 0
    assert_problem(response, 503, "billing-unavailable")
    assert int(response.headers["retry-after"]) > 0
    assert recorded_customer(admin, customer.tenant_id) is None
    assert checkout(customer, plan="pro").status_code == 200, "and works again once Stripe does"


def test_without_stripe_settings_billing_answers_503(gateway: TestClient, alice: Api) -> None:
    assert_problem(checkout(alice, plan="pro"), 503, "billing-unavailable")
    assert_problem(alice.get("/api/billing/portal"), 503, "billing-unavailable")
