"""The one place where failures become HTTP responses (RFC 9457 problem+json).

Endpoints and services raise Problem (or let a database error propagate);
the handlers installed by install_error_handlers turn them into responses.
SQL errors are mapped the way PostgREST maps them, so a call through
supabase-js and a call through the gateway answer with the same status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("quarry.gateway")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://quarry.dev/problems/"


class Problem(Exception):
    """A failure the client can act on."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})

    def body(self, instance: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            payload["instance"] = instance
        payload.update(self.extensions)
        return payload


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


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
_RESERVED_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code", "message"})


def sql_error_status(sqlstate: str, *, anonymous: bool = False) -> int:
    if sqlstate == "42501" and anonymous:
        return 401
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])  # `raise sqlstate 'PT402'` chooses the status
    return _SQLSTATE_EXACT.get(sqlstate) or _SQLSTATE_CLASS.get(sqlstate[:2]) or 400


def problem_from_sql_error(error: psycopg.Error, *, anonymous: bool = False) -> Problem:
    """Map a database error to a Problem with the status PostgREST would answer.

    `raise sqlstate 'PGRST' using message = '{"code": ..., "message": ...}',
    detail = '{"status": 402, "headers": {...}}'` is PostgREST's documented way
    for SQL to choose the whole HTTP response; the gateway honours the same
    format.  Server-side failures (5xx) never echo the database's message.
    """
    diag = error.diag
    if error.sqlstate is None and isinstance(error, psycopg.DataError):
        # Refused by psycopg before it reached the server (a NUL in text, a number out of range).
        return Problem(422, "invalid-value", "A value in the request cannot be stored (for example a NUL character).")
    sqlstate = error.sqlstate or ("08000" if isinstance(error, psycopg.OperationalError) else "XX000")
    if sqlstate == "PGRST":
        return _problem_from_pgrst(diag.message_primary or "", diag.message_detail or "")
    status = sql_error_status(sqlstate, anonymous=anonymous)
    if status == 503:
        return Problem(503, "database-unavailable", "The database is unavailable; try again shortly.")
    if status >= 500:
        logger.error("database error %s (%s)", sqlstate, type(error).__name__)
        return Problem(status, "internal-error", "The server failed to process the request.")
    detail = diag.message_primary or HTTPStatus(status).phrase
    return Problem(status, f"sql-{sqlstate.lower()}", detail, extensions={"code": sqlstate})


def _problem_from_pgrst(message: str, detail: str) -> Problem:
    try:
        body = json.loads(message) if message else {}
        response = json.loads(detail) if detail else {}
        status = int(response.get("status", 400))
        HTTPStatus(status)
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        logger.error("malformed PGRST error raised by SQL")
        return Problem(500, "internal-error", "The server failed to process the request.")
    code = str(body.get("code") or "sql-error")
    extensions = {k: v for k, v in body.items() if k not in _RESERVED_PROBLEM_MEMBERS and v is not None}
    # PostgREST keeps only code, message, details and hint, with details a
    # string: SQL puts a JSON object there, whose members become the problem's.
    details = extensions.pop("details", None)
    if isinstance(details, str):
        with contextlib.suppress(ValueError):
            details = json.loads(details)
    if isinstance(details, dict):
        extensions.update({k: v for k, v in details.items() if k not in _RESERVED_PROBLEM_MEMBERS})
    elif details is not None:
        extensions["details"] = details
    message = str(body.get("message") or HTTPStatus(status).phrase)
    return Problem(status, code, message, headers=headers, extensions=extensions)


def problem_response(problem: Problem, request: Request | None = None) -> Response:
    instance = request.url.path if request is not None else None
    return ProblemResponse(problem.body(instance), status_code=problem.status, headers=problem.headers)


async def _handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "-")
    problem = Problem(exc.status_code, slug, str(exc.detail), headers=exc.headers)
    return problem_response(problem, request)


async def _handle_sql_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, psycopg.Error)
    return problem_response(problem_from_sql_error(exc), request)


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    # Exception messages can carry row values or request data: log where it
    # happened (type, route, stack frames), never what the message says.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, frames)
    problem = Problem(500, "internal-error", "The server failed to process the request.")
    return problem_response(problem, request)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(Problem, _handle_problem)
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(psycopg.Error, _handle_sql_error)
    app.add_exception_handler(Exception, _handle_unexpected)
