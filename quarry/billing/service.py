"""The caller's plan, subscription status and usage of every limit."""

from __future__ import annotations

from typing import Any

from gateway.db import Connection

_USAGE = "select limit_name, used, limit_value, resets_at, plan, subscription_status from api.usage"


async def get_usage(conn: Connection) -> dict[str, Any]:
    """api.usage (what supabase-js reads), shaped as one object."""
    rows = await (await conn.execute(_USAGE, prepare=True)).fetchall()
    first = rows[0] if rows else {"plan": None, "subscription_status": None}
    return {
        "plan": first["plan"],
        "subscription_status": first["subscription_status"],
        "limits": {
            row["limit_name"]: {
                "used": row["used"],
                "limit": row["limit_value"],
                "resets_at": row["resets_at"].isoformat() if row["resets_at"] else None,
            }
            for row in rows
        },
    }
