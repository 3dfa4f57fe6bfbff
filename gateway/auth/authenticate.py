"""Resolve the caller of a request and count it against its rate limit.

A request that fails authentication counts against its client address
(gateway/auth/throttles.py): an address with `AUTH_FAILURES_PER_ADDRESS`
failures in a window gets a 429 with Retry-After for every authenticated
request until the window ends, before any database or bcrypt work, whatever
credentials it sends.  Addresses behind a shared NAT share the allowance.
Throttled refusals are held a moment before they are answered (Tarpit).
"""

from __future__ import annotations

from starlette.datastructures import State
from starlette.requests import Request

from gateway.auth.api_keys import ApiKeyVerifier
from gateway.auth.jwt import JwtVerifier, bearer_token
from gateway.auth.rate_limits import RateLimiter
from gateway.auth.throttles import Tarpit, WindowThrottle, client_address
from quarry.errors import Unauthorized
from quarry.keys.format import looks_like_api_key
from quarry.principal import Principal
from quarry.settings import Settings


async def authenticate(request: Request, *, while_deleting: bool = False) -> Principal:
    """The caller (Supabase JWT or API key), admitted and counted against its rate limit.

    An account being deleted is refused (403) unless `while_deleting` (reading the deletion's progress).
    """
    state = request.app.state
    client = caller_address(request)
    failures: WindowThrottle = state.failed_authentications
    rate_limiter: RateLimiter = state.rate_limiter
    tarpit: Tarpit = state.tarpit
    async with tarpit.holding_refusals():
        failures.check(client)
        try:
            principal = await identify(request.headers.get("authorization"), state, client)
            await rate_limiter.check(request, principal, while_deleting=while_deleting)
        except Unauthorized:
            failures.count(client)
            raise
    return principal


def caller_address(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return client_address(request, trusted_header=settings.trusted_proxy_header, hops=settings.trusted_proxy_hops)


async def identify(authorization: str | None, state: State, client: str) -> Principal:
    """`Authorization: Bearer <JWT>`, `Authorization: Bearer sk_…` or `Authorization: sk_…`."""
    bare = (authorization or "").strip()
    token = bare if looks_like_api_key(bare) else bearer_token(authorization)
    if looks_like_api_key(token):
        key_verifier: ApiKeyVerifier = state.key_verifier
        return await key_verifier.verify(token, client)
    jwt_verifier: JwtVerifier = state.verifier
    return await jwt_verifier.verify(token)
