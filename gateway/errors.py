"""The one place where failures become HTTP responses (RFC 9457 problem+json).

Endpoints and services raise Problem (or let a database error propagate);
the handlers installed by install_error_handlers turn them into responses.
SQL errors are mapped the way PostgREST maps them, so a call through
supabase-js and a call through the gateway answer with the same status.
"""

from __future__ import annotations

import json
import logging
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


# SQLSTATE → HTTP status, after PostgREST's table (docs: "Errors").
_SQLSTATE_STATUS: dict[str, int] = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "23514": 400,  # check_violation
    "23502": 400,  # not_null_violation
    "22P02": 400,  # invalid_text_representation
    "22001": 400,  # string_data_right_truncation
    "22023": 400,  # invalid_parameter_value
    "P0002": 404,  # no_data_found
    "42501": 403,  # insufficient_privilege
    "53300": 503,  # too_many_connections
    "57014": 504,  # query_canceled (statement timeout)
}


def problem_from_sql_error(error: psycopg.Error) -> Problem:
    """Map a database error to a Problem, the way PostgREST would.

    `raise sqlstate 'PGRST' using message = '{"code": ..., "message": ...}',
    detail = '{"status": 402, "headers": {...}}'` is PostgREST's documented way
    for SQL to choose the HTTP response; the gateway honours the same format.
    """
    diag = error.diag
    sqlstate = error.sqlstate or ""
    if sqlstate == "PGRST":
        return _problem_from_pgrst(diag.message_primary or "", diag.message_detail or "")
    if sqlstate.startswith("08") or isinstance(error, psycopg.OperationalError):
        return Problem(503, "database-unavailable", "The database is unavailable; try again shortly.")
    status = _SQLSTATE_STATUS.get(sqlstate)
    if status is None:
        raise error
    if status >= 500:
        return Problem(status, "database-busy", "The database is busy; try again shortly.")
    detail = diag.message_primary or "The request was rejected by the database."
    return Problem(status, f"sql-{sqlstate.lower()}", detail)


def _problem_from_pgrst(message: str, detail: str) -> Problem:
    try:
        body = json.loads(message) if message else {}
        response = json.loads(detail) if detail else {}
        status = int(response.get("status", 400))
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    except (ValueError, TypeError, AttributeError):
        logger.error("malformed PGRST error raised by SQL")
        return Problem(500, "internal-error", "The server failed to process the request.")
    code = str(body.get("code") or "sql-error")
    return Problem(
        status,
        code,
        str(body.get("message") or HTTPStatus(status).phrase),
        headers=headers,
        extensions={k: v for k, v in body.items() if k not in {"code", "message"}},
    )


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
    try:
        problem = problem_from_sql_error(exc)
    except psycopg.Error:
        return await _handle_unexpected(request, exc)
    return problem_response(problem, request)


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    # The exception text can carry request data; log its type and route only.
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    problem = Problem(500, "internal-error", "The server failed to process the request.")
    return problem_response(problem, request)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(Problem, _handle_problem)
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(psycopg.Error, _handle_sql_error)
    app.add_exception_handler(Exception, _handle_unexpected)
