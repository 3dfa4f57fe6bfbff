"""The caller's plan, subscription status and usage of every limit."""

from __future__ import annotations

from quarry.billing.models import LimitUsage, Usage
from quarry.db import TenantSession
from quarry.errors import Unauthorized

# api.usage is app.usage_of(auth.uid()); the tenant given as a value reaches one shard under Citus.
_USAGE = "select limit_name, used, limit_value, resets_at, plan, subscription_status from app.usage_of(%s)"


async def get_usage(session: TenantSession) -> Usage:
    """api.usage (what supabase-js reads), shaped as one object."""
    async with session.transaction() as conn:
        rows = await (await conn.execute(_USAGE, (session.tenant_id,), prepare=True)).fetchall()
    if not rows:
        raise Unauthorized("The token names no user.")
    return Usage(
        plan=rows[0]["plan"],
        subscription_status=rows[0]["subscription_status"],
        limits={
            row["limit_name"]: LimitUsage(used=row["used"], limit=row["limit_value"], resets_at=row["resets_at"])
            for row in rows
        },
    )
