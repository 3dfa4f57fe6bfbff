"""Create, list and revoke API keys through the same SQL supabase-js calls
(api.create_api_key, api.api_keys, api.revoke_api_key), so both paths
validate and answer alike."""

from __future__ import annotations

import uuid

from quarry.db import TenantSession
from quarry.idempotency import Created, Idempotency, fingerprint
from quarry.keys.models import ApiKey, ApiKeyList, CreateApiKey, IssuedApiKey

KEY_COLUMNS = "id, name, prefix, last4, status, created_at, expires_at, revoked_at, last_used_at, requests_this_hour"


async def create_key(
    session: TenantSession, request: CreateApiKey, *, idempotency: Idempotency | None = None
) -> Created[IssuedApiKey]:
    """A new key; with an idempotency key, the same request again answers the same key (sealed meanwhile)."""
    async with session.transaction() as conn:
        if idempotency is not None:
            replayed = await idempotency.claim(
                conn, session.tenant_id, fingerprint(request.model_dump_json()), IssuedApiKey
            )
            if replayed is not None:
                return Created(replayed, replayed=True)
        cursor = await conn.execute(
            "select (k).* from (select api.create_api_key(%s, %s) as k) as issued", (request.name, request.expires_at)
        )
        row = await cursor.fetchone()
        assert row is not None
        issued = IssuedApiKey.model_validate(row)
        if idempotency is not None:
            await idempotency.complete(conn, session.tenant_id, issued, issued.id)
    return Created(issued)


async def list_keys(session: TenantSession) -> ApiKeyList:
    async with session.transaction() as conn:
        cursor = await conn.execute(
            f"select {KEY_COLUMNS} from api.api_keys where tenant_id = %s"  # noqa: S608 (a constant)
            " order by created_at desc, id desc",
            (session.tenant_id,),
            prepare=True,
        )
        rows = await cursor.fetchall()
    return ApiKeyList(data=[ApiKey.model_validate(row) for row in rows])


async def revoke_key(session: TenantSession, key_id: uuid.UUID) -> None:
    """Revoke one of the caller's keys (again: nothing changes); not theirs: NotFound."""
    async with session.transaction() as conn:
        await conn.execute("select api.revoke_api_key(%s)", (key_id,))
