"""Every failure leaves the gateway as RFC 9457 problem+json, mapped in one place."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from quarry.account import service as account_service
from quarry.errors import Unavailable
from tests.py.support.api import Api, assert_problem


def test_an_unknown_route_is_a_404_problem(gateway: TestClient) -> None:
    assert_problem(gateway.get("/api/nothing-here"), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/documents", {"GET", "HEAD", "POST"}),
        ("PATCH", "/api/documents/6a1f2d7c-0000-4000-8000-000000000000", {"GET", "HEAD", "DELETE"}),
        ("POST", "/api/keys/6a1f2d7c-0000-4000-8000-000000000000", {"DELETE"}),
        ("DELETE", "/api/query", {"POST"}),
        ("POST", "/openapi.json", {"GET", "HEAD"}),
    ],
)
def test_a_wrong_method_is_405_naming_every_method_of_the_path(
    gateway: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    response = gateway.request(method, path)
    body = assert_problem(response, 405, "method-not-allowed")
    assert {name.strip() for name in response.headers["Allow"].split(",")} == allowed
    assert method in body["detail"]


def test_a_quarry_error_keeps_its_status_slug_headers_and_members(alice: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unavailable(session: object) -> object:
        raise Unavailable("Down for a moment.", slug="database-unavailable", retry_after=7, extensions={"x": 1})

    monkeypatch.setattr("gateway.account.endpoints.get_me", unavailable)
    response = alice.get("/api/me")
    body = assert_problem(response, 503, "database-unavailable")
    assert response.headers["Retry-After"] == "7" and body["x"] == 1 and body["instance"] == "/api/me"


def test_an_unexpected_exception_is_a_500_that_says_nothing_of_it(
    alice: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    leaked = "-".join(["secret row", "42 of tenant x"])  # a value, as a message built from data would be

    async def broken(session: object) -> object:
        raise RuntimeError(leaked)

    monkeypatch.setattr("gateway.account.endpoints.get_me", broken)
    response = alice.get("/api/me")
    body = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.text and "tenant" not in body["detail"]
    assert "RuntimeError" in caplog.text and leaked not in caplog.text, "the log says where, not what"
    assert account_service.get_me is not broken
