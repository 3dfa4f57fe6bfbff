"""The Starlette application: routes, lifespan, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from gateway import openapi
from gateway.account import endpoints as account
from gateway.auth.jwks import JwksCache
from gateway.auth.jwt import JwtVerifier
from gateway.db import TenantDatabase, create_pool
from gateway.errors import install_error_handlers
from gateway.health import endpoints as health
from gateway.settings import Settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = create_pool(settings.database_url)
        # Don't wait for the database: /healthz answers at once, /readyz says when it is reachable.
        await pool.open(wait=False)
        jwks = JwksCache(
            settings.jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
        )
        app.state.pool = pool
        app.state.database = TenantDatabase(pool)
        app.state.verifier = JwtVerifier(
            jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
            hs256_secret=settings.jwt_secret,
        )
        try:
            yield
        finally:
            await jwks.aclose()
            await pool.close()

    app = Starlette(routes=[*health.routes, *account.routes, *openapi.routes], lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    return app
