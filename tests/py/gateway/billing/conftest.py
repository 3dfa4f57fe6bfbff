"""Fixtures for plan, quota and billing tests: fresh Free users, a gateway on the local Stripe, the webhook."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from quarry.dev.webhook import webhook_env
from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory
from tests.py.support.database import DatabaseUrls
from tests.py.support.fake_stripe import FakeStripe
from tests.py.support.net import free_port
from tests.py.support.tokens import TokenFactory
from tests.py.support.webhook import running_webhook


@pytest.fixture
def free_user(admin: Admin, make_gateway: GatewayFactory, tokens: TokenFactory) -> Api:
    """A new user with no subscription (Free), on a gateway of its own."""
    client: TestClient = make_gateway()
    tenant = admin.new_user()
    return Api(client, tokens.es256(tenant), tenant)


@pytest.fixture
def billing_gateway(make_gateway: GatewayFactory, fake_stripe: FakeStripe) -> TestClient:
    """A gateway whose billing talks to the local Stripe."""
    return make_gateway(**fake_stripe.gateway_env())


@pytest.fixture
def customer(admin: Admin, billing_gateway: TestClient, tokens: TokenFactory) -> Api:
    """A new Free user on the billing gateway."""
    tenant = admin.new_user()
    return Api(billing_gateway, tokens.es256(tenant, email=f"{tenant.hex[:8]}@example.com"), tenant)


@pytest.fixture(scope="module")
def webhook(database: DatabaseUrls, fake_stripe: FakeStripe, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stripe-webhook Edge Function under Deno, logging in as quarry_webhook; the fake sends to it."""
    env = webhook_env(
        database_url=database.gateway_url.replace("quarry_gateway@", "quarry_webhook@", 1),
        stripe_secret_key=fake_stripe.api_key,
        webhook_secret=fake_stripe.webhook_secret,
        previous_webhook_secret="whsec_previous_secret",
        stripe_api_base=fake_stripe.url,
        port=free_port(),
    )
    with running_webhook(env, tmp_path_factory.mktemp("webhook") / "webhook.log") as url:
        fake_stripe.webhook_url = url
        yield url
        fake_stripe.webhook_url = None
