from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.  tenant_id is the Supabase user id (the JWT's sub);
    api_key_id names the key when the caller used one (rate limits, query log)."""

    tenant_id: UUID
    claims: dict[str, Any]
    api_key_id: UUID | None = None

    @property
    def email(self) -> str | None:
        email = self.claims.get("email")
        return email if isinstance(email, str) else None
