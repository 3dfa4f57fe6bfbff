"""Per-hour rate limits, counted in Postgres with one statement per request.

internal.hit_rate_limit() counts the request in the account's current UTC
hour (JWT and API-key callers share the plan's allowance; a key's share is
counted too) and answers the limit, what is left and when the window resets.
The answer travels in the ASGI scope to the response-headers middleware
(gateway/middleware.py), which puts RateLimit-Limit, -Remaining and -Reset
on whatever response the request ends with (a 4xx included).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request

from quarry.db import TenantDatabase
from quarry.errors import RateLimited, Unauthorized
from quarry.principal import Principal

SCOPE_KEY = "quarry.rate_limit"
_HIT = "select request_limit, remaining, resets_at, allowed from internal.hit_rate_limit(%s, %s)"


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    remaining: int
    resets_at: datetime
    allowed: bool

    def seconds_to_reset(self, now: float | None = None) -> int:
        return max(0, math.ceil(self.resets_at.timestamp() - (time.time() if now is None else now)))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.seconds_to_reset()),
        }


class RateLimiter:
    def __init__(self, database: TenantDatabase, *, enabled: bool = True) -> None:
        self._database = database
        self.enabled = enabled

    async def hit(self, tenant_id: uuid.UUID, api_key_id: uuid.UUID | None = None) -> RateLimit:
        row = await self._database.fetch_one(_HIT, (tenant_id, api_key_id))
        if row is None:
            raise Unauthorized("The credentials belong to a user that no longer exists.")
        return RateLimit(row["request_limit"], row["remaining"], row["resets_at"], row["allowed"])

    async def check(self, request: Request, principal: Principal) -> None:
        """Count the request; a caller over its limit gets a 429 with Retry-After."""
        if not self.enabled:
            return
        state = await self.hit(principal.tenant_id, principal.api_key_id)
        request.scope[SCOPE_KEY] = state
        if not state.allowed:
            retry_after = max(1, state.seconds_to_reset())
            raise RateLimited(
                f"The plan allows {state.limit} requests per hour; try again in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
                extensions={"limit": "requests_per_hour", "limit_value": state.limit, "retry_after": retry_after},
            )
