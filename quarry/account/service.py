from __future__ import annotations

from typing import Any

from gateway.db import Connection
from gateway.errors import unauthorized


async def get_me(conn: Connection) -> dict[str, Any]:
    """The caller's tenant id, email and effective plan (api.me(), as supabase-js sees it)."""
    cursor = await conn.execute("select tenant_id, email, plan from api.me()", prepare=True)
    row = await cursor.fetchone()
    if row is None:
        raise unauthorized("The token names no user.")
    return {"tenant_id": str(row["tenant_id"]), "email": row["email"], "plan": row["plan"]}
