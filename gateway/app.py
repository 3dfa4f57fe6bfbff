"""The Starlette application: routes, lifespan, middleware, error mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from gateway import openapi
from gateway.account import endpoints as account
from gateway.auth.api_keys import CHECKS_IN_FLIGHT_PER_CLIENT, ApiKeyVerifier, KeyCheckLimits, stop_listening
from gateway.auth.jwks import JwksCache
from gateway.auth.jwt import JwtVerifier
from gateway.auth.rate_limits import RateLimiter
from gateway.auth.throttles import Tarpit, WindowThrottle
from gateway.billing import endpoints as billing
from gateway.documents import endpoints as documents
from gateway.documents.slots import UploadSlots
from gateway.drive import endpoints as drive
from gateway.errors import install_error_handlers
from gateway.exports import endpoints as exports
from gateway.health import endpoints as health
from gateway.keys import endpoints as keys
from gateway.metrics import resources as metrics_resources
from gateway.middleware import ResponseHeaders
from gateway.operations import Resource, route
from gateway.search import endpoints as search
from quarry.db import TenantDatabase, named
from quarry.logs import configure_logging
from quarry.metrics import POOL_STATS
from quarry.outbox import OutboxRelay
from quarry.query_embedding import warm_up_query_embedders
from quarry.services import Core
from quarry.settings import Settings

RESOURCES: tuple[Resource, ...] = (
    *health.resources,
    *account.resources,
    *billing.resources,
    *keys.resources,
    *documents.resources,
    *search.resources,
    *drive.resources,
    *exports.resources,
    *metrics_resources,
)

MAX_THROTTLED_ADDRESSES = 50_000
# uvicorn's loggers have handlers of their own: they get the same format.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
logger = logging.getLogger("quarry.gateway")
APPLICATION_NAME = "quarry-gateway"  # its connections in pg_stat_activity


def warm_up_then_freeze(settings: Settings) -> None:
    """Load the query model, then exempt everything alive so far from garbage collection.

    The modules, the model's tokenizer and the OpenAPI document live as long as the
    process; left in the collector's oldest generation they made each full collection
    take ~150 ms of the event loop under load (a search's p99), for nothing to collect.
    """
    warm_up_query_embedders(settings)
    gc.collect()
    gc.freeze()


def readers_per_minute(limit: int, path: str, name: str) -> WindowThrottle:
    """Reads of a public, cheap route counted per client address (then held 429s)."""
    return WindowThrottle(
        limit=limit,
        window_seconds=60,
        max_keys=MAX_THROTTLED_ADDRESSES,
        refusal=f"This address has read {path} too often",
        limit_name=f"{name}_reads_per_minute",
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    schema = openapi.OpenApiDocument(RESOURCES)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ops = settings.ops
        configure_logging(
            ops.log_format, logging.getLevelName(logging.getLogger().level), extra_loggers=UVICORN_LOGGERS
        )
        database_url = named(settings.database_url, APPLICATION_NAME)
        database = TenantDatabase.connect(
            named(settings.tenant_database_url, APPLICATION_NAME),
            database_url,
            max_size=ops.gateway_pool_size,
            service_max_size=ops.gateway_service_pool_size,
            timeout=ops.db_pool_timeout_seconds,
        )
        # Don't wait for the database: /healthz answers at once, /readyz says when it is reachable.
        await database.open(wait=False)
        POOL_STATS.watch(database)
        logger.info(
            "database connections: at most %d (GATEWAY_DB_POOL_SIZE %d + GATEWAY_SERVICE_POOL_SIZE %d + listeners)",
            ops.gateway_budget(relay_in_gateway=settings.relay_in_gateway),
            ops.gateway_pool_size,
            ops.gateway_service_pool_size,
        )
        core = Core.build(settings, database)
        jwks = JwksCache(
            settings.jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
        )
        app.state.database = database
        app.state.core = core
        app.state.blobs = core.blobs
        app.state.index = core.index
        app.state.rate_limiter = RateLimiter(database, enabled=settings.rate_limits)
        app.state.failed_authentications = WindowThrottle(
            limit=settings.auth_failures_per_address,
            window_seconds=settings.auth_failure_window_seconds,
            max_in_flight=CHECKS_IN_FLIGHT_PER_CLIENT,
            max_keys=MAX_THROTTLED_ADDRESSES,
            refusal="Too many failed authentications from this address",
        )
        app.state.tarpit = Tarpit()
        app.state.upload_slots = UploadSlots(settings.uploads_in_flight_per_tenant)
        app.state.openapi_readers = readers_per_minute(settings.openapi_reads_per_minute, "/openapi.json", "openapi")
        app.state.metrics_readers = readers_per_minute(ops.metrics_reads_per_minute, "/metrics", "metrics")
        app.state.key_verifier = ApiKeyVerifier(
            database,
            database_url,
            clients=app.state.failed_authentications,
            limits=KeyCheckLimits(
                threads=settings.bcrypt_threads,
                queue=settings.bcrypt_queue,
                failures_per_key=settings.auth_failures_per_key,
                window_seconds=settings.auth_failure_window_seconds,
            ),
        )
        app.state.verifier = JwtVerifier(
            jwks,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
            hs256_secret=settings.jwt_secret,
        )
        key_listener = asyncio.create_task(app.state.key_verifier.listen(), name="api-key-revocations")
        # Load (or export, the first time) the query model now rather than on the first search.
        threading.Thread(target=warm_up_then_freeze, args=(settings,), name="query-model", daemon=True).start()
        relay_task = None
        if settings.relay_in_gateway:
            relay = OutboxRelay(
                database, core.index, core.blobs, max_backoff_seconds=settings.outbox_max_backoff_seconds
            )
            app.state.relay = relay
            relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        try:
            yield
        finally:
            await stop_listening(key_listener, app.state.key_verifier)
            if relay_task is not None:
                relay_task.cancel()
                await asyncio.gather(relay_task, return_exceptions=True)
            await asyncio.to_thread(core.close)
            await core.billing.aclose()
            await jwks.aclose()
            POOL_STATS.unwatch(database)
            await database.close()

    app = Starlette(
        routes=[route(resource) for resource in (*RESOURCES, schema.resource)],
        middleware=[Middleware(ResponseHeaders)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    return app
