"""Database access for tenant work: act exactly as PostgREST does.

Every tenant read or write in the gateway and the worker goes through
act_as(): one transaction in which `role`, `request.jwt.claims` (with `role`
inside), `request.method`, `request.path` and `request.headers` are set with
set_config(..., is_local => true), the way PostgREST sets them.  RLS and the
SQL functions therefore see the same caller whichever path a call takes, and
everything reverts when the transaction ends (commit or rollback).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

# Roles a tenant transaction may take; anything else is a programming error.
REQUEST_ROLES = frozenset({"anon", "authenticated"})

# Headers that carry credentials never enter the database, where any SQL
# function could read (and log) them.  PostgREST passes them; we do not.
SECRET_HEADERS = frozenset({"authorization", "apikey", "cookie", "proxy-authorization"})

_SET_REQUEST_CONTEXT = """
select
    set_config('role', %(role)s, true),
    set_config('request.jwt.claims', %(claims)s, true),
    set_config('request.method', %(method)s, true),
    set_config('request.path', %(path)s, true),
    set_config('request.headers', %(headers)s, true)
"""

Connection = AsyncConnection[DictRow]


def create_pool(conninfo: str, *, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool[Connection]:
    """A pool of autocommit connections; act_as() opens the transactions."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=5.0,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row},
    )


def request_context(
    claims: Mapping[str, Any],
    *,
    role: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | None,
) -> dict[str, str]:
    """The settings PostgREST would make for this request, as strings."""
    if role not in REQUEST_ROLES:
        raise ValueError(f"act_as role must be one of {sorted(REQUEST_ROLES)}, not {role!r}")
    claims_role = claims.get("role", role)
    if claims_role != role:
        raise ValueError(f"claims carry role {claims_role!r} but act_as was asked for {role!r}")
    safe_headers = {
        name.lower(): value for name, value in (headers or {}).items() if name.lower() not in SECRET_HEADERS
    }
    return {
        "role": role,
        "claims": json.dumps({**claims, "role": role}, separators=(",", ":")),
        "method": method.upper(),
        "path": path,
        "headers": json.dumps(safe_headers, separators=(",", ":")),
    }


@asynccontextmanager
async def act_as(
    pool: AsyncConnectionPool[Connection],
    claims: Mapping[str, Any],
    *,
    role: str = "authenticated",
    method: str = "POST",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Connection]:
    """A connection inside a transaction that acts as the caller the claims name."""
    context = request_context(claims, role=role, method=method, path=path, headers=headers)
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(_SET_REQUEST_CONTEXT, context, prepare=True)
        yield conn
