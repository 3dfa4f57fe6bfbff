"""Who acts: a verified caller of the gateway, or a worker job acting for its tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.  tenant_id is the Supabase user id (the JWT's sub);
    api_key_id names the key when the caller used one (rate limits, query log, audit log)."""

    tenant_id: UUID
    claims: dict[str, Any]
    api_key_id: UUID | None = None

    @classmethod
    def for_tenant(cls, tenant_id: UUID) -> Principal:
        """The claims PostgREST would carry for the tenant: what a worker job acts with."""
        return cls(tenant_id=tenant_id, claims={"sub": str(tenant_id), "role": "authenticated", "aud": "authenticated"})

    @classmethod
    def for_api_key(cls, tenant_id: UUID, key_id: UUID) -> Principal:
        """The key's owner, marked as a key (SQL reads `api_key_id` from the claims)."""
        claims: dict[str, Any] = {
            "sub": str(tenant_id),
            "role": "authenticated",
            "aud": "authenticated",
            "api_key_id": str(key_id),
        }
        return cls(tenant_id=tenant_id, claims=claims, api_key_id=key_id)

    @property
    def email(self) -> str | None:
        email = self.claims.get("email")
        return email if isinstance(email, str) else None
