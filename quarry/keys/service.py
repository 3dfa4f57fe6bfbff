"""Create, list and revoke API keys through the same SQL supabase-js calls
(api.create_api_key, api.api_keys, api.revoke_api_key), so both paths
validate and answer alike."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from gateway.db import Connection
from gateway.documents.service import document_json
from gateway.errors import Problem

KEY_COLUMNS = "id, name, prefix, last4, status, created_at, expires_at, revoked_at, last_used_at, requests_this_hour"


def parse_create_request(body: Any) -> tuple[str, datetime | None]:
    if not isinstance(body, dict):
        raise Problem(422, "invalid-parameter", "The body must be a JSON object with `name`.")
    unknown = set(body) - {"name", "expires_at"}
    if unknown:
        raise Problem(422, "invalid-parameter", f"Unknown field(s): {', '.join(sorted(unknown))}.")
    name = body.get("name")
    if not isinstance(name, str):
        raise Problem(
            422, "invalid-parameter", "`name` is required and must be a string.", extensions={"field": "name"}
        )
    expires_at = body.get("expires_at")
    if expires_at is None:
        return name, None
    try:
        parsed = datetime.fromisoformat(expires_at) if isinstance(expires_at, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Problem(
            422,
            "invalid-parameter",
            "`expires_at` must be an ISO 8601 date-time with a time zone, or null.",
            extensions={"field": "expires_at"},
        )
    return name, parsed


async def create_key(conn: Connection, name: str, expires_at: datetime | None) -> dict[str, Any]:
    cursor = await conn.execute(
        "select (k).* from (select api.create_api_key(%s, %s) as k) as issued", (name, expires_at)
    )
    row = await cursor.fetchone()
    assert row is not None
    return document_json(row)


async def list_keys(conn: Connection) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        f"select {KEY_COLUMNS} from api.api_keys order by created_at desc, id desc",  # noqa: S608 (a constant)
        prepare=True,
    )
    return [document_json(row) for row in await cursor.fetchall()]


def parse_key_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(422, "invalid-parameter", "The key id must be a UUID.") from None


async def revoke_key(conn: Connection, key_id: uuid.UUID) -> None:
    await conn.execute("select api.revoke_api_key(%s)", (key_id,))
