from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from gateway.health import endpoints
from gateway.paths import latest_migration_version
from tests.py.conftest import GatewayFactory


def test_healthz(gateway: TestClient) -> None:
    response = gateway.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_applied_schema(gateway: TestClient) -> None:
    response = gateway.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "schema_version": latest_migration_version()}


def test_readyz_is_503_when_the_database_is_unreachable(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(DATABASE_URL="postgresql://quarry_gateway@127.0.0.1:1/quarry_pytest?connect_timeout=1")
    assert gateway.get("/healthz").status_code == 200
    response = gateway.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "The database is unreachable."


def test_readyz_is_503_when_migrations_are_missing(gateway: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints, "latest_migration_version", lambda: "99991231235959")
    response = gateway.get("/readyz")
    assert response.status_code == 503
    assert "needs 99991231235959" in response.json()["detail"]


def test_unknown_routes_and_methods_are_problems(gateway: TestClient) -> None:
    missing = gateway.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["status"] == 404
    wrong_method = gateway.delete("/api/me")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"
