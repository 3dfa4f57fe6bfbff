"""Every state change through the gateway is in the audit log, with who did it and the request id.

The request id is the caller's `X-Request-Id` when it is a sensible one, or
one the gateway makes; either way it is answered in `X-Request-Id` and
recorded with the change, in the same transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx2

from tests.py.support.api import Api, new_key
from tests.py.support.database import DatabaseUrls, exposed_schema


def audit(database: DatabaseUrls, api: Api, action: str) -> list[dict[str, Any]]:
    """The tenant's own entries for an action, read as supabase-js would (api.audit_log)."""
    return exposed_schema(
        database,
        api.tenant_id,
        "select actor_type, actor_id, target_id, request_id, details from api.audit_log where action = %s order by id",
        action,
    )


def upload(api: Api, name: str, headers: dict[str, str]) -> httpx2.Response:
    response: httpx2.Response = api.client.post(
        "/api/documents", headers={**api.headers, **headers}, files={"file": (name, b"An audited file.")}
    )
    assert response.status_code == 202, response.text
    return response


def test_uploads_and_deletes_record_the_user_and_the_callers_request_id(alice: Api, database: DatabaseUrls) -> None:
    request_id = f"client-{uuid.uuid4().hex[:12]}"
    response = upload(alice, "audited.txt", {"X-Request-Id": request_id})
    assert response.headers["X-Request-Id"] == request_id
    document_id = response.json()["id"]
    created = [entry for entry in audit(database, alice, "document.created") if str(entry["target_id"]) == document_id]
    assert len(created) == 1
    assert created[0]["actor_type"] == "user" and created[0]["actor_id"] == alice.tenant_id
    assert created[0]["request_id"] == request_id
    assert created[0]["details"]["title"] == "audited.txt" and "text" not in created[0]["details"]

    deleted = alice.delete(f"/api/documents/{document_id}")
    assert deleted.status_code == 204
    entries = [entry for entry in audit(database, alice, "document.deleted") if str(entry["target_id"]) == document_id]
    assert [entry["request_id"] for entry in entries] == [deleted.headers["X-Request-Id"]]


def test_an_unusable_request_id_is_replaced_by_one_of_the_gateways(alice: Api, database: DatabaseUrls) -> None:
    response = upload(alice, "renamed.txt", {"X-Request-Id": "has spaces; and ' quotes"})
    generated = response.headers["X-Request-Id"]
    assert uuid.UUID(generated)
    entries = [e for e in audit(database, alice, "document.created") if str(e["target_id"]) == response.json()["id"]]
    assert entries[0]["request_id"] == generated


def test_keys_created_revoked_and_used_name_their_actor(alice: Api, database: DatabaseUrls) -> None:
    key_id, key = new_key(alice, "audited bot")
    assert [e["actor_type"] for e in audit(database, alice, "api_key.created") if e["target_id"] == key_id] == ["user"]
    created = next(e for e in audit(database, alice, "api_key.created") if e["target_id"] == key_id)
    assert key not in str(created["details"]) and created["details"]["name"] == "audited bot"

    response = alice.client.post(
        "/api/documents", headers={"Authorization": f"Bearer {key}"}, files={"file": ("by-key.txt", b"Sent by a key.")}
    )
    assert response.status_code == 202, response.text
    by_key = [e for e in audit(database, alice, "document.created") if str(e["target_id"]) == response.json()["id"]]
    assert (by_key[0]["actor_type"], by_key[0]["actor_id"]) == ("api_key", key_id)

    assert alice.delete(f"/api/keys/{key_id}").status_code == 204
    assert alice.delete(f"/api/keys/{key_id}").status_code == 204
    assert len([e for e in audit(database, alice, "api_key.revoked") if e["target_id"] == key_id]) == 1


def test_nobody_else_reads_the_entries(alice: Api, bob: Api, database: DatabaseUrls) -> None:
    upload(alice, "private.txt", {})
    theirs = exposed_schema(database, bob.tenant_id, "select * from api.audit_log where actor_id = %s", alice.tenant_id)
    assert theirs == []
