"""A tenant's view of the gateway, and the assertions every HTTP test shares."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from starlette.testclient import TestClient

from quarry.storage.blobs import blob_key
from tests.py.support.admin import Admin
from tests.py.support.processes import wait_for
from tests.py.support.tokens import TokenFactory

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "documents"
TERMINAL = ("ready", "failed")

GatewayFactory = Callable[..., TestClient]


@dataclass
class Api:
    """A tenant's view of the gateway."""

    client: TestClient
    token: str
    tenant_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def upload(self, name: str, content: bytes, **fields: str) -> httpx2.Response:
        response: httpx2.Response = self.client.post(
            "/api/documents", headers=self.headers, files={"file": (name, content)}, data=fields
        )
        return response

    def upload_fixture(self, name: str) -> dict[str, Any]:
        response = self.upload(name, (FIXTURES / name).read_bytes())
        assert response.status_code == 202, response.text
        document: dict[str, Any] = response.json()
        return document

    def get(self, path: str) -> httpx2.Response:
        response: httpx2.Response = self.client.get(path, headers=self.headers)
        return response

    def delete(self, path: str) -> httpx2.Response:
        response: httpx2.Response = self.client.delete(path, headers=self.headers)
        return response

    def wait_until_done(self, document_id: str, timeout: float = 90) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def done() -> bool:
            seen.update(self.get(f"/api/documents/{document_id}").json())
            return seen.get("status") in TERMINAL

        wait_for(done, timeout=timeout, message=f"document {document_id} to finish")
        return seen


def pro_user(admin: Admin, client: TestClient, tokens: TokenFactory) -> Api:
    """A fresh Pro user: any format, room for many requests."""
    tenant = admin.new_user()
    admin.subscribe(tenant, "pro", "active")
    return Api(client, tokens.es256(tenant), tenant)


def assert_problem(response: httpx2.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with this status (and slug, when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    if slug is not None:
        assert body["type"] == f"https://quarry.dev/problems/{slug}", body
    return body


def create_key(api: Api, name: str = "bot", **fields: Any) -> httpx2.Response:
    response: httpx2.Response = api.client.post("/api/keys", headers=api.headers, json={"name": name, **fields})
    return response


def new_key(api: Api, name: str = "bot") -> tuple[uuid.UUID, str]:
    response = create_key(api, name)
    assert response.status_code == 201, response.text
    body = response.json()
    return uuid.UUID(body["id"]), body["key"]


def call(client: TestClient, method: str, path: str, authorization: str, **kwargs: Any) -> httpx2.Response:
    response: httpx2.Response = client.request(method, path, headers={"Authorization": authorization}, **kwargs)
    return response


def index_count(client: TestClient, tenant_id: uuid.UUID, document_id: str | None = None) -> int:
    index = client.app.state.index.get()  # type: ignore[attr-defined]
    return int(index.count(tenant_id, uuid.UUID(document_id) if document_id else None))


def blob_exists(client: TestClient, tenant_id: uuid.UUID, document_id: str, revision: int = 0) -> bool:
    key = blob_key(tenant_id, uuid.UUID(document_id), revision)
    return bool(client.app.state.blobs.exists(key))  # type: ignore[attr-defined]
