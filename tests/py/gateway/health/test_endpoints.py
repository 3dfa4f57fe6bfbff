from __future__ import annotations

import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.health import endpoints
from quarry.dev.database import with_database
from quarry.paths import latest_migration_version
from quarry.schema import SCHEMA_VERSION
from tests.py.support.api import GatewayFactory
from tests.py.support.database import ADMIN_SERVER_URL, TEST_DATABASE

EMPTY_DATABASE = f"{TEST_DATABASE}_empty"


def test_healthz(gateway: TestClient) -> None:
    response = gateway.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_the_applied_schema(gateway: TestClient) -> None:
    response = gateway.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "status": "ready",
        "schema_version": latest_migration_version(),
        "api_key_cache": body["api_key_cache"],
    }


def test_readyz_is_503_when_the_database_is_unreachable(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(DATABASE_URL="postgresql://quarry_gateway@127.0.0.1:1/quarry_pytest?connect_timeout=1")
    assert gateway.get("/healthz").status_code == 200
    response = gateway.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "The database is unreachable."


def test_readyz_is_503_when_migrations_are_missing(gateway: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints, "SCHEMA_VERSION", "99991231235959")
    response = gateway.get("/readyz")
    assert response.status_code == 503
    assert "needs 99991231235959" in response.json()["detail"]


def test_schema_version_matches_the_newest_migration() -> None:
    assert latest_migration_version() == SCHEMA_VERSION, "bump quarry/schema.py with each new migration"


def test_readyz_is_503_on_a_database_without_migrations(make_gateway: GatewayFactory) -> None:
    with psycopg.connect(ADMIN_SERVER_URL, autocommit=True) as conn:
        conn.execute(f"drop database if exists {EMPTY_DATABASE} with (force)")
        conn.execute(f"create database {EMPTY_DATABASE}")
    gateway = make_gateway(
        DATABASE_URL=with_database(ADMIN_SERVER_URL.replace("postgres@", "quarry_gateway@", 1), EMPTY_DATABASE)
    )
    response = gateway.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("The database schema is at nothing")


def test_unknown_routes_and_methods_are_problems(gateway: TestClient) -> None:
    missing = gateway.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["status"] == 404
    wrong_method = gateway.delete("/api/me")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"
