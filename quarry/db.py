"""Database access for tenant work: act exactly as PostgREST does.

Every tenant read or write in the gateway and the worker goes through
TenantDatabase.act_as(): one transaction in which `role`,
`request.jwt.claims` (with `role` inside), `request.method`, `request.path`,
`request.headers`, `search_path` and the impersonated role's own settings
(e.g. Supabase's `statement_timeout` for authenticated) are set with
set_config(..., is_local => true), the way PostgREST sets them; GET and HEAD
run in a READ ONLY transaction, as in PostgREST.  RLS and the SQL functions
therefore see the same caller whichever path a call takes, and everything
reverts when the transaction ends (commit or rollback).

The worker uses this module too; it depends on psycopg only.
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
REQUEST_ROLES = ("anon", "authenticated")

# PostgREST's search_path: the exposed schema, then the extra search path.
SEARCH_PATH = "api, extensions"

# Headers that carry credentials never enter the database, where any SQL
# function could read (and log) them.  PostgREST passes them; we do not.
SECRET_HEADERS = frozenset({"authorization", "apikey", "cookie", "proxy-authorization"})

READ_ONLY_METHODS = frozenset({"GET", "HEAD"})

_ROLE_SETTINGS_QUERY = """
select r.rolname as role, split_part(s.setting, '=', 1) as name, substr(s.setting, strpos(s.setting, '=') + 1) as value
from pg_catalog.pg_db_role_setting as d
inner join pg_catalog.pg_roles as r on d.setrole = r.oid
cross join lateral unnest(d.setconfig) as s (setting)
where r.rolname = any(%s)
    and d.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
order by d.setdatabase
"""

Connection = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Connection]


def create_pool(conninfo: str, *, min_size: int = 2, max_size: int = 10) -> Pool:
    """A pool of autocommit connections; act_as() opens the transactions.

    Needs a session-mode connection (direct, or Supavisor in session mode):
    prepared statements and LISTEN/NOTIFY do not survive a transaction pooler.
    """
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=5.0,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row},
    )


def request_settings(
    claims: Mapping[str, Any],
    *,
    role: str,
    method: str,
    path: str,
    headers: Mapping[str, str] | None,
    role_settings: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The settings PostgREST would make for this request, name → value."""
    if role not in REQUEST_ROLES:
        raise ValueError(f"act_as role must be one of {list(REQUEST_ROLES)}, not {role!r}")
    claims_role = claims.get("role", role)
    if claims_role != role:
        raise ValueError(f"claims carry role {claims_role!r} but act_as was asked for {role!r}")
    safe_headers = {
        name.lower(): value for name, value in (headers or {}).items() if name.lower() not in SECRET_HEADERS
    }
    return {
        **(role_settings or {}),
        "role": role,
        "request.jwt.claims": json.dumps({**claims, "role": role}, separators=(",", ":")),
        "request.method": method.upper(),
        "request.path": path,
        "request.headers": json.dumps(safe_headers, separators=(",", ":")),
        "search_path": SEARCH_PATH,
    }


class TenantDatabase:
    """The pool plus what act_as needs to know about the database's roles."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._role_settings: dict[str, dict[str, str]] | None = None

    async def role_settings(self, conn: Connection) -> dict[str, dict[str, str]]:
        """`alter role … set …` values of the request roles, read once (PostgREST does the same)."""
        if self._role_settings is None:
            rows = await (await conn.execute(_ROLE_SETTINGS_QUERY, (list(REQUEST_ROLES),))).fetchall()
            settings: dict[str, dict[str, str]] = {role: {} for role in REQUEST_ROLES}
            for row in rows:  # database-specific rows come last and win
                settings[row["role"]][row["name"]] = row["value"]
            self._role_settings = settings
        return self._role_settings

    @asynccontextmanager
    async def act_as(
        self,
        claims: Mapping[str, Any],
        *,
        role: str = "authenticated",
        method: str = "POST",
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Connection]:
        """A connection inside a transaction that acts as the caller the claims name."""
        async with self.pool.connection() as conn:
            role_settings = (await self.role_settings(conn)).get(role)
            settings = request_settings(
                claims, role=role, method=method, path=path, headers=headers, role_settings=role_settings
            )
            names = list(settings)
            statement = "select " + ", ".join(f"set_config(%s, %s, true) as s{i}" for i in range(len(names)))
            params = [value for name in names for value in (name, settings[name])]
            await conn.set_read_only(method.upper() in READ_ONLY_METHODS)
            async with conn.transaction():
                await conn.execute(statement, params, prepare=True)
                yield conn
