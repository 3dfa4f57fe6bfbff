"""Resolve the caller of a request and count it against its rate limit;
endpoints call this first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.requests import Request

from gateway.auth.jwt import JwtVerifier, bearer_token
from gateway.auth.principal import Principal
from gateway.billing.rate_limits import RateLimiter
from gateway.db import Connection, TenantDatabase


async def authenticate(request: Request) -> Principal:
    verifier: JwtVerifier = request.app.state.verifier
    principal = await verifier.verify(bearer_token(request.headers.get("authorization")))
    rate_limiter: RateLimiter = request.app.state.rate_limiter
    await rate_limiter.check(request, principal)
    return principal


@asynccontextmanager
async def tenant_transaction(request: Request, principal: Principal) -> AsyncIterator[Connection]:
    """act_as() for the principal of this HTTP request."""
    database: TenantDatabase = request.app.state.database
    async with database.act_as(
        principal.claims,
        method=request.method,
        path=request.url.path,
        headers=request.headers,
    ) as conn:
        yield conn
