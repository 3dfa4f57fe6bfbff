"""Fixtures for API-key tests: users with keys on a gateway of their own."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory, pro_user
from tests.py.support.tokens import TokenFactory


@pytest.fixture
def keys_gateway(make_gateway: GatewayFactory) -> TestClient:
    return make_gateway()


@pytest.fixture
def owner(admin: Admin, keys_gateway: TestClient, tokens: TokenFactory) -> Api:
    return pro_user(admin, keys_gateway, tokens)


@pytest.fixture
def stranger(admin: Admin, keys_gateway: TestClient, tokens: TokenFactory) -> Api:
    return pro_user(admin, keys_gateway, tokens)
