from __future__ import annotations

from starlette.routing import Route
from starlette.testclient import TestClient


def test_every_route_is_described(gateway: TestClient) -> None:
    document = gateway.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for route in gateway.app.routes:  # type: ignore[attr-defined]
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method == "HEAD":
                continue
            operation = document["paths"].get(route.path, {}).get(method.lower())
            assert operation, f"{method} {route.path} is missing from /openapi.json"
            assert operation["summary"]
            assert operation["responses"]


def test_public_routes_need_no_credentials(gateway: TestClient) -> None:
    paths = gateway.get("/openapi.json").json()["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert "security" not in paths["/api/me"]["get"]  # inherits the global JWT requirement
