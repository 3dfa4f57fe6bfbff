"""Fixtures for plan and quota tests: fresh Free users, subscriptions, the quota clock."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory
from tests.py.support.tokens import TokenFactory


@pytest.fixture
def free_user(admin: Admin, make_gateway: GatewayFactory, tokens: TokenFactory) -> Api:
    """A new user with no subscription (Free), on a gateway of its own."""
    client: TestClient = make_gateway()
    tenant = admin.new_user()
    return Api(client, tokens.es256(tenant), tenant)
