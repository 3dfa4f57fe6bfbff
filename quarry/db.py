"""Database access for tenant work: act exactly as PostgREST does.

Every tenant read or write in the gateway and the worker goes through
TenantDatabase.act_as(): one transaction in which `role`,
`request.jwt.claims` (with `role` inside), `request.method`, `request.path`,
`request.headers`, `search_path` and the impersonated role's own settings
(e.g. Supabase's `statement_timeout` for authenticated) are set local to the
transaction, the values PostgREST sets; GET and HEAD run in a READ ONLY
transaction, as in PostgREST.  They are set with `SET LOCAL` statements
(values quoted by psycopg.sql.Literal), not set_config(): under Citus
(`citus.propagate_set_commands = 'local'`) a SET LOCAL reaches the workers a
transaction touches, set_config() does not, and RLS there would see no
claims.  RLS and the SQL functions therefore see the same caller whichever path a call takes, and everything
reverts when the transaction ends (commit or rollback).

Database errors leave this module as QuarryErrors (`sql_error`), with the
status PostgREST would answer for the same SQLSTATE, so the gateway maps one
error type and worker jobs decide retry-or-fail from one flag.

A lost connection is transient (Postgres restarts for upgrades and
failovers): it is a 503 with Retry-After, never a 500.  Once one has been
seen, the pool checks every connection it hands out for a while (so the
dead ones left from before a restart are discarded, not used), and work that
has not started yet (act_as's preamble, a single autocommit statement) is
retried once on a fresh connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from uuid import UUID

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from quarry.errors import RESERVED_MEMBERS, DatabaseUnavailable, InternalError, Invalid, QuarryError, error_for_status
from quarry.metrics import POOL_TIMEOUTS
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


# Connection-class failures: the server went away or is not accepting connections yet.
CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})  # admin/crash shutdown, cannot connect now
SUSPECT_SECONDS = 30.0
# How long a request waits for a connection: a short restart is ridden out, a long one is a 503.
POOL_TIMEOUT_SECONDS = 5.0


def connection_lost(error: BaseException) -> bool:
    """The connection died (or the server is restarting), as opposed to the statement failing."""
    if isinstance(error, PoolTimeout) or not isinstance(error, psycopg.Error):
        return False
    sqlstate = error.sqlstate
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in CONNECTION_LOST_SQLSTATES
    # A dropped socket carries no SQLSTATE; a connection psycopg already knows is closed is an InterfaceError.
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_transient(error: BaseException) -> bool:
    """The database went away or is not reachable yet, anywhere in the error's chain (procrastinate
    wraps it in ConnectorException), or a retryable QuarryError: worth one warning and a retry."""
    return any(
        connection_lost(cause) or isinstance(cause, PoolTimeout) or (isinstance(cause, QuarryError) and cause.retryable)
        for cause in _causes(error)
    )


def why(error: BaseException) -> str:
    """The SQLSTATE (or the type) of the first database error in the chain, for a log line."""
    for cause in _causes(error):
        sqlstate = getattr(cause, "sqlstate", None)
        if sqlstate:
            return f"SQLSTATE {sqlstate}"
        if isinstance(cause, psycopg.Error):
            return type(cause).__name__
    return type(error).__name__


class PoolHealth:
    """Checks connections as the pool hands them out, but only for a while after one was found dead.

    A check is a round trip; paying it on every request would cost more than
    the rare restart it guards against.  After a restart every pooled
    connection is dead, so once one fails, the rest are checked (and the dead
    ones discarded) before use.
    """

    def __init__(self) -> None:
        self._suspect_until = 0.0

    @property
    def suspect(self) -> bool:
        return time.monotonic() < self._suspect_until

    def connection_lost(self) -> None:
        self._suspect_until = time.monotonic() + SUSPECT_SECONDS

    async def check(self, conn: Connection) -> None:
        if self.suspect:
            await AsyncConnectionPool.check_connection(conn)


def named(conninfo: str, application_name: str) -> str:
    """The conninfo with an application_name (unless it names one already), so pg_stat_activity and
    the operators can tell which process holds which connections."""
    if "application_name" in psycopg.conninfo.conninfo_to_dict(conninfo):
        return conninfo
    return psycopg.conninfo.make_conninfo(conninfo, application_name=application_name)


def create_pool(
    conninfo: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    health: PoolHealth | None = None,
    timeout: float = POOL_TIMEOUT_SECONDS,
) -> Pool:
    """A pool of autocommit connections; act_as() opens the transactions.

    Needs a session-mode connection (direct, or Supavisor in session mode):
    prepared statements and LISTEN/NOTIFY do not survive a transaction pooler.
    """
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=timeout,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "row_factory": dict_row},
        check=health.check if health is not None else None,
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


# Settings whose value is a list: SET takes one literal per element (one literal would be one element).
LIST_SETTINGS = frozenset({"search_path", "temp_tablespaces"})


def _list_elements(value: str) -> list[str]:
    """'api, "$user"' → ['api', '$user'] (a comma inside a quoted element is not supported)."""
    elements = [part.strip() for part in value.split(",")]
    quoted = [len(part) > 1 and part[0] == part[-1] == '"' for part in elements]
    return [part[1:-1].replace('""', '"') if q else part for part, q in zip(elements, quoted, strict=True)]


def set_local(settings: Mapping[str, str]) -> sql.Composed:
    """`SET LOCAL name = 'value'` for every setting, in one round trip.

    Names are quoted as identifiers and values as literals by psycopg (never
    formatted into the text), so claims and headers cannot break out of them.
    """
    statements = []
    for name, value in settings.items():
        rendered: sql.Composable
        if name in LIST_SETTINGS:
            rendered = sql.SQL(", ").join(sql.Literal(element) for element in _list_elements(value))
        else:
            rendered = sql.Literal(value)
        statements.append(sql.SQL("set local {} = {}").format(sql.Identifier(name), rendered))
    return sql.SQL("; ").join(statements)


class TenantDatabase:
    """Two pools, and what act_as needs to know about the database's roles.

    `pool` logs in as quarry_authenticator, which can do nothing but become
    anon or authenticated: it serves act_as only, so a `reset role` inside a
    tenant transaction gains nothing.  `service_pool` logs in as the
    process's own role (quarry_gateway, quarry_worker), which holds the few
    privileged functions and cannot become a tenant: it serves fetch only.
    """

    def __init__(self, pool: Pool, service_pool: Pool, health: PoolHealth | None = None) -> None:
        self.pool = pool
        self.service_pool = service_pool
        self.health = health or PoolHealth()
        self._role_settings: dict[str, dict[str, str]] | None = None

    @classmethod
    def connect(
        cls,
        tenant_conninfo: str,
        service_conninfo: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        service_max_size: int = 4,
        timeout: float = POOL_TIMEOUT_SECONDS,
    ) -> TenantDatabase:
        """Both pools (not opened yet), checking connections after a loss."""
        health = PoolHealth()
        pool = create_pool(tenant_conninfo, min_size=min_size, max_size=max_size, health=health, timeout=timeout)
        service_pool = create_pool(
            service_conninfo, min_size=min(min_size, 1), max_size=service_max_size, health=health, timeout=timeout
        )
        return cls(pool, service_pool, health)

    async def open(self, *, wait: bool = False) -> None:
        await self.pool.open(wait=wait)
        await self.service_pool.open(wait=wait)

    async def close(self) -> None:
        await self.pool.close()
        await self.service_pool.close()

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
        """A connection inside a transaction that acts as the caller the claims name.

        If the connection turns out to be dead before the caller's work begins
        (a restart since it was last used), the transaction starts again, once,
        on a fresh one.  A loss during the caller's work is theirs: a 503.
        """
        with self._translate(anonymous=role == "anon", pool="tenant"):
            for attempt in (1, 2):
                async with contextlib.AsyncExitStack() as stack:
                    try:
                        conn = await stack.enter_async_context(self.pool.connection())
                        role_settings = (await self.role_settings(conn)).get(role)
                        settings = request_settings(
                            claims, role=role, method=method, path=path, headers=headers, role_settings=role_settings
                        )
                        await conn.set_read_only(method.upper() in READ_ONLY_METHODS)
                        await stack.enter_async_context(conn.transaction())
                        await conn.execute(set_local(settings))
                    except psycopg.Error as error:
                        if not self._retry(error, attempt):
                            raise
                        # Unwind as failed (no COMMIT on a dead connection), then start afresh.
                        with contextlib.suppress(Exception):
                            await stack.__aexit__(type(error), error, error.__traceback__)
                        continue
                    yield conn
                    return

    async def fetch(self, statement: str, params: Sequence[Any] | None = None) -> list[DictRow]:
        """One autocommit statement as the process's own login role, for the few privileged calls
        that precede a tenant (API-key lookup, rate limits, the outbox relay), retried once on a
        fresh connection if the connection was lost (every such statement of ours can run twice)."""
        with self._translate(pool="service"):
            for attempt in (1, 2):
                try:
                    async with self.service_pool.connection() as conn:
                        cursor = await conn.execute(statement, params, prepare=True)
                        return await cursor.fetchall() if cursor.description else []
                except psycopg.Error as error:
                    if not self._retry(error, attempt):
                        raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def service_transaction(self) -> AsyncIterator[Connection]:
        """A transaction as the process's own login role, for the privileged work that spans more than
        one statement (billing reconciliation holds a customer's lock while it asks Stripe)."""
        with self._translate(pool="service"):
            async with self.service_pool.connection() as conn, conn.transaction():
                yield conn

    async def fetch_one(self, statement: str, params: Sequence[Any] | None = None) -> DictRow | None:
        rows = await self.fetch(statement, params)
        return rows[0] if rows else None

    def _retry(self, error: psycopg.Error, attempt: int) -> bool:
        """Whether work that failed on its first attempt, before it began, is worth one more."""
        if attempt > 1 or not connection_lost(error):
            return False
        self.health.connection_lost()
        return True

    @contextlib.contextmanager
    def _translate(self, *, pool: str, anonymous: bool = False) -> Iterator[None]:
        """Database errors (a pool timeout included) leave as QuarryErrors.

        A pool timeout is a busy pool, not a lost connection: it is counted
        (quarry_db_pool_timeouts) but does not make the pool check connections."""
        try:
            yield
        except PoolTimeout as error:
            POOL_TIMEOUTS.labels(pool).inc()
            raise sql_error(error, anonymous=anonymous) from error
        except psycopg.Error as error:
            translated = sql_error(error, anonymous=anonymous)
            if isinstance(translated, DatabaseUnavailable):
                self.health.connection_lost()
            raise translated from error


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
    def for_job(
        cls,
        database: TenantDatabase,
        tenant_id: UUID,
        *,
        task: str,
        job_id: int | None,
        request_id: str | None = None,
    ) -> TenantSession:
        """A worker job acting for its tenant, under the request id of the request that deferred it
        (so the audit log and the jobs it defers in turn name that request), else its own."""
        request_id = request_id or (f"job-{job_id}" if job_id is not None else f"job-{task}")
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
    # The server is shutting down or starting: transient, as PostgREST answers a lost database.
    "57P01": 503,  # admin_shutdown
    "57P02": 503,  # crash_shutdown
    "57P03": 503,  # cannot_connect_now
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
    if isinstance(error, PoolTimeout):  # every connection of the budget busy for the whole wait
        return DatabaseUnavailable(
            "Every database connection is busy; try again shortly.", internal="PoolTimeout", sqlstate="08000"
        )
    # No SQLSTATE: lost on the way (a dropped socket), or no connection to be had (the pool waited in vain).
    unreachable = connection_lost(error) or isinstance(error, PoolTimeout)
    sqlstate = error.sqlstate or ("08000" if unreachable else "XX000")
    if sqlstate == "PGRST":
        return _error_from_pgrst(diag.message_primary or "", diag.message_detail or "")
    status = sql_error_status(sqlstate, anonymous=anonymous)
    if status == 503:
        return DatabaseUnavailable(internal=f"{sqlstate} {type(error).__name__}", sqlstate=sqlstate)
    if status >= 500:
        logger.error("database error %s (%s)", sqlstate, type(error).__name__)
        return InternalError(status=status, sqlstate=sqlstate)
    detail = diag.message_primary or HTTPStatus(status).phrase
    return error_for_status(status, detail, extensions={"code": sqlstate}, sqlstate=sqlstate)


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
    return error_for_status(status, text, slug=code, headers=headers, extensions=extensions, sqlstate="PGRST")
