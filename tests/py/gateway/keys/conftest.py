"""Fixtures for API-key tests: users with keys, and helpers to call the gateway with them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.py.conftest import GatewayFactory
from tests.py.gateway.documents.conftest import Api
from tests.py.support.admin import Admin
from tests.py.support.tokens import TokenFactory


def create_key(api: Api, name: str = "bot", **fields: Any) -> httpx2.Response:
    response: httpx2.Response = api.client.post("/api/keys", headers=api.headers, json={"name": name, **fields})
    return response


def call(client: TestClient, method: str, path: str, authorization: str, **kwargs: Any) -> httpx2.Response:
    response: httpx2.Response = client.request(method, path, headers={"Authorization": authorization}, **kwargs)
    return response


@pytest.fixture
def keys_gateway(make_gateway: GatewayFactory) -> TestClient:
    return make_gateway()


def pro_user(admin: Admin, client: TestClient, tokens: TokenFactory) -> Api:
    """A fresh Pro user: any format, room for many requests."""
    tenant = admin.new_user()
    admin.subscribe(tenant, "pro", "active")
    return Api(client, tokens.es256(tenant), tenant)


@pytest.fixture
def owner(admin: Admin, keys_gateway: TestClient, tokens: TokenFactory) -> Api:
    return pro_user(admin, keys_gateway, tokens)


@pytest.fixture
def stranger(admin: Admin, keys_gateway: TestClient, tokens: TokenFactory) -> Api:
    return pro_user(admin, keys_gateway, tokens)


def new_key(api: Api, name: str = "bot") -> tuple[uuid.UUID, str]:
    response = create_key(api, name)
    assert response.status_code == 201, response.text
    body = response.json()
    return uuid.UUID(body["id"]), body["key"]
