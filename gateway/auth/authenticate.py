"""Resolve the caller of a request and count it against its rate limit."""

from __future__ import annotations

from starlette.datastructures import State
from starlette.requests import Request

from gateway.auth.api_keys import ApiKeyVerifier
from gateway.auth.jwt import JwtVerifier, bearer_token
from gateway.auth.rate_limits import RateLimiter
from quarry.keys.format import looks_like_api_key
from quarry.principal import Principal


async def authenticate(request: Request) -> Principal:
    """The caller (Supabase JWT or API key), counted against its rate limit."""
    principal = await identify(request.headers.get("authorization"), request.app.state)
    rate_limiter: RateLimiter = request.app.state.rate_limiter
    await rate_limiter.check(request, principal)
    return principal


async def identify(authorization: str | None, state: State) -> Principal:
    """`Authorization: Bearer <JWT>`, `Authorization: Bearer sk_…` or `Authorization: sk_…`."""
    bare = (authorization or "").strip()
    token = bare if looks_like_api_key(bare) else bearer_token(authorization)
    verifier: ApiKeyVerifier | JwtVerifier = state.key_verifier if looks_like_api_key(token) else state.verifier
    return await verifier.verify(token)
