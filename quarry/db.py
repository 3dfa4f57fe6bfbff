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

Database errors leave this module as QuarryErrors (`sql_error`), with the
status PostgREST would answer for the same SQLSTATE, so the gateway maps one
error type and worker jobs decide retry-or-fail from one flag.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from quarry.errors import RESERVED_MEMBERS, DatabaseUnavailable, InternalError, Invalid, QuarryError, error_for_status
from quarry.principal import Principal

logger = logging.getLogger("quarry.db")

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
        with translate_sql_errors(anonymous=role == "anon"):
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

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """An autocommit connection as the process's own login role, for the few privileged
        calls that precede a tenant (API-key lookup, rate limits, the outbox relay)."""
        with translate_sql_errors():
            async with self.pool.connection() as conn:
                yield conn


@dataclass(frozen=True)
class TenantSession:
    """Everything act_as needs to act for one caller: the core's services take one of these.

    The gateway builds it from the HTTP request (method, path, headers with the
    request id); a worker job builds it for the tenant it works for.
    """

    database: TenantDatabase
    principal: Principal
    method: str = "POST"
    path: str = "/"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_job(cls, database: TenantDatabase, tenant_id: UUID, *, task: str, job_id: int | None) -> TenantSession:
        """A worker job acting for its tenant; the job is its request id (audit log, logs)."""
        request_id = f"job-{job_id}" if job_id is not None else f"job-{task}"
        return cls(
            database, Principal.for_tenant(tenant_id), path=f"/jobs/{task}", headers={"x-request-id": request_id}
        )

    @property
    def tenant_id(self) -> UUID:
        return self.principal.tenant_id

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        return self.database.act_as(self.principal.claims, method=self.method, path=self.path, headers=self.headers)


# SQLSTATE → HTTP status, PostgREST's table (docs.postgrest.org, "Errors"):
# exact codes first, then two-character classes; anything else is a 400.
_SQLSTATE_EXACT: dict[str, int] = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "25006": 405,  # read_only_sql_transaction
    "P0001": 400,  # raise_exception
    "42883": 404,  # undefined_function
    "42P01": 404,  # undefined_table
    "42P17": 500,  # infinite_recursion (e.g. a recursive policy)
    "42501": 403,  # insufficient_privilege (401 for anon, below)
}
_SQLSTATE_CLASS: dict[str, int] = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
    "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
    "P0": 500, "XX": 500,
}  # fmt: skip


def sql_error_status(sqlstate: str, *, anonymous: bool = False) -> int:
    if sqlstate == "42501" and anonymous:
        return 401
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])  # `raise sqlstate 'PT402'` chooses the status
    return _SQLSTATE_EXACT.get(sqlstate) or _SQLSTATE_CLASS.get(sqlstate[:2]) or 400


def sql_error(error: psycopg.Error, *, anonymous: bool = False) -> QuarryError:
    """The QuarryError for a database error, with the status PostgREST would answer.

    `raise sqlstate 'PGRST' using message = '{"code": ..., "message": ...}',
    detail = '{"status": 402, "headers": {...}}'` is PostgREST's documented way
    for SQL to choose the whole HTTP response; we honour the same format.
    Server-side failures (5xx) never echo the database's message.
    """
    diag = error.diag
    if error.sqlstate is None and isinstance(error, psycopg.DataError):
        # Refused by psycopg before it reached the server (a NUL in text, a number out of range).
        return Invalid("A value in the request cannot be stored (for example a NUL character).")
    sqlstate = error.sqlstate or ("08000" if isinstance(error, psycopg.OperationalError) else "XX000")
    if sqlstate == "PGRST":
        return _error_from_pgrst(diag.message_primary or "", diag.message_detail or "")
    status = sql_error_status(sqlstate, anonymous=anonymous)
    if status == 503:
        return DatabaseUnavailable()
    if status >= 500:
        logger.error("database error %s (%s)", sqlstate, type(error).__name__)
        return InternalError(status=status)
    detail = diag.message_primary or HTTPStatus(status).phrase
    return error_for_status(status, detail, extensions={"code": sqlstate})


# A PGRST body's `code` becomes the slug and its `message` the detail.
_PGRST_MEMBERS = RESERVED_MEMBERS | {"code", "message"}


def _error_from_pgrst(message: str, detail: str) -> QuarryError:
    try:
        body = json.loads(message) if message else {}
        response = json.loads(detail) if detail else {}
        status = int(response.get("status", 400))
        HTTPStatus(status)
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        logger.error("malformed PGRST error raised by SQL")
        return InternalError()
    code = str(body.get("code") or "") or None
    extensions = {k: v for k, v in body.items() if k not in _PGRST_MEMBERS and v is not None}
    # PostgREST keeps only code, message, details and hint, with details a
    # string: SQL puts a JSON object there, whose members become the problem's.
    details = extensions.pop("details", None)
    if isinstance(details, str):
        with contextlib.suppress(ValueError):
            details = json.loads(details)
    if isinstance(details, dict):
        extensions.update({k: v for k, v in details.items() if k not in _PGRST_MEMBERS})
    elif details is not None:
        extensions["details"] = details
    text = str(body.get("message") or HTTPStatus(status).phrase)
    return error_for_status(status, text, slug=code, headers=headers, extensions=extensions)


@contextlib.contextmanager
def translate_sql_errors(*, anonymous: bool = False) -> Iterator[None]:
    """Database errors (a pool timeout included) leave as QuarryErrors."""
    try:
        yield
    except psycopg.Error as error:
        raise sql_error(error, anonymous=anonymous) from error
