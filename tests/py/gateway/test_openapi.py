"""/openapi.json comes from the operations' own declarations, built once."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from gateway import openapi
from gateway.app import RESOURCES
from gateway.auth.throttles import HOLD_SECONDS
from tests.py.support.api import GatewayFactory, assert_problem


def test_every_operation_is_described_with_its_problems(gateway: TestClient) -> None:
    document = gateway.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    for resource in RESOURCES:
        for operation in resource.operations:
            described = document["paths"][resource.path][operation.method.lower()]
            assert described["summary"] and described["operationId"] == operation.operation_id
            statuses = set(described["responses"])
            assert {str(status) for status in operation.replies} <= statuses
            if not operation.public:
                assert {"401", "429", "503"} <= statuses, resource.path
            if operation.body is not None:
                assert {"400", "413", "422"} <= statuses, resource.path
            for status, response in described["responses"].items():
                if status >= "400":
                    assert list(response["content"]) == ["application/problem+json"], (resource.path, status)


def test_bodies_and_parameters_come_from_the_models(gateway: TestClient) -> None:
    document = gateway.get("/openapi.json").json()
    search = document["components"]["schemas"]["SearchRequest"]
    assert search["additionalProperties"] is False
    assert (search["properties"]["top_k"]["minimum"], search["properties"]["top_k"]["maximum"]) == (1, 50)
    listing = {p["name"]: p for p in document["paths"]["/api/documents"]["get"]["parameters"]}
    assert listing["limit"]["schema"]["type"] == "integer" and listing["limit"]["schema"]["maximum"] == 100
    assert listing["cursor"]["schema"] == {"type": "string", "maxLength": 200}
    document_path = document["paths"]["/api/documents/{document_id}"]["get"]["parameters"]
    assert document_path[0]["schema"] == {"type": "string", "format": "uuid"}


def test_public_routes_need_no_credentials(gateway: TestClient) -> None:
    paths = gateway.get("/openapi.json").json()["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/openapi.json"]["get"]["security"] == []
    assert "security" not in paths["/api/me"]["get"]  # inherits the global JWT / API-key requirement


def test_the_document_is_built_once_not_per_request(gateway: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def rebuild(*args: object) -> object:
        raise AssertionError("/openapi.json was rebuilt for a request")

    monkeypatch.setattr(openapi, "build", rebuild)
    first, second = gateway.get("/openapi.json"), gateway.get("/openapi.json")
    assert first.status_code == second.status_code == 200 and first.content == second.content


def test_reading_it_in_a_loop_is_throttled_per_address(make_gateway: GatewayFactory) -> None:
    gateway = make_gateway(OPENAPI_READS_PER_MINUTE="2", TRUSTED_PROXY_HEADER="X-Forwarded-For")
    reader = {"X-Forwarded-For": "198.51.100.3"}
    assert [gateway.get("/openapi.json", headers=reader).status_code for _ in range(2)] == [200, 200]

    started = time.perf_counter()
    refused = gateway.get("/openapi.json", headers=reader)
    assert time.perf_counter() - started >= HOLD_SECONDS / 2, "held before it is answered"
    body = assert_problem(refused, 429, "rate-limited")
    assert body["limit"] == "openapi_reads_per_minute" and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert gateway.get("/openapi.json", headers={"X-Forwarded-For": "198.51.100.4"}).status_code == 200
    described = gateway.get("/openapi.json", headers={"X-Forwarded-For": "198.51.100.5"}).json()
    assert "429" in described["paths"]["/openapi.json"]["get"]["responses"]
