from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.errors import Problem
from gateway.schema import SCHEMA_VERSION


async def healthz(request: Request) -> JSONResponse:
    """
    summary: Liveness - the process is up
    security: []
    responses:
      200:
        description: The process is serving requests.
    """
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """
    summary: Readiness - the database is reachable and migrated
    security: []
    responses:
      200:
        description: Ready to serve traffic.
      503:
        description: The database is unreachable or behind this gateway's migrations.
        content:
          application/problem+json:
            schema: {$ref: '#/components/schemas/Problem'}
    """
    expected = SCHEMA_VERSION
    try:
        async with request.app.state.pool.connection(timeout=2.0) as conn:
            cursor = await conn.execute("select internal.applied_schema_version() as version")
            row = await cursor.fetchone()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        applied = None
    except (psycopg.Error, PoolTimeout):
        raise Problem(503, "not-ready", "The database is unreachable.") from None
    else:
        applied = row["version"] if row else None
    if applied is None or applied < expected:
        raise Problem(
            503,
            "not-ready",
            f"The database schema is at {applied or 'nothing'}; this gateway needs {expected}. Apply the migrations.",
        )
    # Informational: without the revocation listener keys still work, just uncached.
    listening = request.app.state.key_verifier.cache_trusted
    return JSONResponse({"status": "ready", "schema_version": applied, "api_key_cache": listening})


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
