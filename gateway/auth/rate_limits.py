"""Admitting a request: one statement in Postgres, which also counts it against the hourly rate limit.

internal.admit_request() answers nothing when the user no longer exists
(401), whether the account is being deleted (403, except for the operations
that read the deletion's progress), and with RATE_LIMITS=on counts the
request in the account's current UTC hour (JWT and API-key callers share the
plan's allowance; a key's share is counted too) and answers the limit, what
is left and when the window resets.
The answer travels in the ASGI scope to the response-headers middleware
(gateway/middleware.py), which puts RateLimit-Limit, -Remaining and -Reset
on whatever response the request ends with (a 4xx included).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request

from quarry.db import TenantDatabase
from quarry.errors import Forbidden, RateLimited, Unauthorized
from quarry.principal import Principal

SCOPE_KEY = "quarry.rate_limit"
_ADMIT = "select request_limit, remaining, resets_at, allowed, deleting from internal.admit_request(%s, %s, %s)"


class AccountDeleting(Forbidden):
    slug = "account-deleting"

    def __init__(self) -> None:
        super().__init__(
            "This account is being deleted: its keys and tokens no longer work (GET /api/account/deletion shows"
            " the progress)."
        )


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

    async def check(self, request: Request, principal: Principal, *, while_deleting: bool = False) -> None:
        """Admit the request: a user that is gone is 401, an account being deleted 403 (unless the
        operation is one that may run meanwhile), a caller over its limit 429 with Retry-After."""
        row = await self._database.fetch_one(_ADMIT, (principal.tenant_id, principal.api_key_id, self.enabled))
        if row is None:
            raise Unauthorized("The credentials belong to a user that no longer exists.")
        if row["deleting"]:
            if while_deleting:
                return
            raise AccountDeleting()
        if row["request_limit"] is None:
            return
        state = RateLimit(row["request_limit"], row["remaining"], row["resets_at"], row["allowed"])
        request.scope[SCOPE_KEY] = state
        if not state.allowed:
            retry_after = max(1, state.seconds_to_reset())
            raise RateLimited(
                f"The plan allows {state.limit} requests per hour; try again in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
                extensions={"limit": "requests_per_hour", "limit_value": state.limit, "retry_after": retry_after},
            )
