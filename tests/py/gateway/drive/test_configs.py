"""Folder configs: POST /api/drive/configs takes an Idempotency-Key, as every creating POST does."""

from __future__ import annotations

import uuid

from starlette.testclient import TestClient

from tests.py.gateway.drive.conftest import connect, new_tenant
from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem
from tests.py.support.google import FakeGoogle
from tests.py.support.tokens import TokenFactory


def post_config(api: Api, folder_id: str, key: str | None) -> tuple[int, dict[str, object], bool]:
    headers = {**api.headers, **({"Idempotency-Key": key} if key else {})}
    response = api.client.post("/api/drive/configs", headers=headers, json={"folder_id": folder_id})
    return response.status_code, response.json(), response.headers.get("idempotent-replayed") == "true"


def test_a_retried_config_creation_answers_the_first_one(
    admin: Admin, drive_gateway: TestClient, tokens: TokenFactory, google: FakeGoogle
) -> None:
    tenant: Api = new_tenant(admin, drive_gateway, tokens)
    connect(tenant, google)
    folder, other = google.folder("Idempotent"), google.folder("Other")
    key = str(uuid.uuid4())

    status, first, replayed = post_config(tenant, folder.id, key)
    assert (status, replayed) == (201, False), first
    status, again, replayed = post_config(tenant, folder.id, key)
    assert (status, again, replayed) == (201, first, True), "the lost response, replayed"
    count = admin.scalar("select count(*) from app.drive_folders where tenant_id = %s", tenant.tenant_id)
    assert count == 1, "nothing created twice"
    assert_problem(
        tenant.client.post(
            "/api/drive/configs", headers={**tenant.headers, "Idempotency-Key": key}, json={"folder_id": other.id}
        ),
        422,
        "invalid-parameter",
    )
    # Without a key, the same folder again is the conflict it always was.
    assert post_config(tenant, folder.id, None)[0] == 409
    # A deleted config is forgotten: the same key creates it afresh.
    assert tenant.delete(f"/api/drive/configs/{first['id']}").status_code == 204
    status, fresh, replayed = post_config(tenant, folder.id, key)
    assert (status, replayed) == (201, False) and fresh["id"] != first["id"]
