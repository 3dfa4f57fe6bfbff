"""End-to-end fixtures: the gateway in-process (owning the embedded index and
the outbox relay) and the real worker as a subprocess, on the test database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.storage.blobs import blob_key
from tests.py.conftest import DatabaseUrls, GatewayFactory, Users, gateway_env
from tests.py.support.processes import running_worker, wait_for
from tests.py.support.tokens import JwksServer, TokenFactory

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "documents"
TERMINAL = ("ready", "failed")


@pytest.fixture(scope="module")
def worker(
    database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(gateway_env(database, jwks_server, data_dir), log) as process:
        yield
        assert process.poll() is None, log.read_text()[-5000:]


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


@pytest.fixture
def gateway_e2e(make_gateway: GatewayFactory) -> TestClient:
    return make_gateway()


@pytest.fixture
def alice(gateway_e2e: TestClient, tokens: TokenFactory, users: Users) -> Api:
    return Api(gateway_e2e, tokens.es256(users.alice, email="alice@example.com"), users.alice)


@pytest.fixture
def bob(gateway_e2e: TestClient, tokens: TokenFactory, users: Users) -> Api:
    return Api(gateway_e2e, tokens.es256(users.bob, email="bob@example.com"), users.bob)


def index_count(client: TestClient, tenant_id: uuid.UUID, document_id: str | None = None) -> int:
    index = client.app.state.index.get()  # type: ignore[attr-defined]
    return int(index.count(tenant_id, uuid.UUID(document_id) if document_id else None))


def blob_exists(client: TestClient, tenant_id: uuid.UUID, document_id: str) -> bool:
    return bool(client.app.state.blobs.exists(blob_key(tenant_id, uuid.UUID(document_id))))  # type: ignore[attr-defined]


def admin_count(database: DatabaseUrls, sql: str, *params: object) -> int:
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])
