"""Who the caller is, as supabase-js sees it (api.me())."""

from __future__ import annotations

from quarry.account.models import Me
from quarry.db import TenantSession
from quarry.errors import Unauthorized


async def get_me(session: TenantSession) -> Me:
    """The caller's tenant id, email and effective plan."""
    async with session.transaction() as conn:
        cursor = await conn.execute("select tenant_id, email, plan from api.me()", prepare=True)
        row = await cursor.fetchone()
    if row is None:
        raise Unauthorized("The token names no user.")
    return Me.model_validate(row)
