from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import Response

from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.errors import Unavailable
from quarry.models import ResponseModel
from quarry.schema import SCHEMA_VERSION


class Health(ResponseModel):
    status: str


class Readiness(ResponseModel):
    status: str
    schema_version: str
    api_key_cache: bool


async def healthz(call: Call) -> Response:
    return json_response(Health(status="ok"))


async def readyz(call: Call) -> Response:
    expected = SCHEMA_VERSION
    database = call.request.app.state.database
    try:
        async with database.service_pool.connection(timeout=2.0) as conn:
            cursor = await conn.execute("select internal.applied_schema_version() as version")
            row = await cursor.fetchone()
        async with database.pool.connection(timeout=2.0) as conn:  # tenant work logs in as another role
            await conn.execute("select 1")
    except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        applied = None
    except (psycopg.Error, PoolTimeout):
        raise Unavailable("The database is unreachable.", slug="not-ready") from None
    else:
        applied = row["version"] if row else None
    if applied is None or applied < expected:
        raise Unavailable(
            f"The database schema is at {applied or 'nothing'}; this gateway needs {expected}. Apply the migrations.",
            slug="not-ready",
        )
    # Informational: without the revocation listener keys still work, just uncached.
    listening = call.request.app.state.key_verifier.cache_trusted
    return json_response(Readiness(status="ready", schema_version=applied, api_key_cache=listening))


resources = [
    resource(
        "/healthz",
        Operation(
            "GET", healthz, summary="Liveness: the process is up", public=True, replies={200: Reply("Serving.", Health)}
        ),
    ),
    resource(
        "/readyz",
        Operation(
            "GET",
            readyz,
            summary="Readiness: the database is reachable and migrated",
            public=True,
            replies={200: Reply("Ready to serve traffic.", Readiness)},
            problems={503: "The database is unreachable or behind this gateway's migrations."},
        ),
    ),
]
