"""The one place where failures become HTTP responses (RFC 9457 problem+json).

Endpoints and the core raise QuarryError (database errors arrive as
QuarryErrors too, mapped the way PostgREST maps SQLSTATEs, see quarry.db);
Starlette's own HTTPExceptions (unknown path, wrong method) and anything
unexpected are answered here in the same shape.
"""

from __future__ import annotations

import logging
import traceback

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.metrics import count_refusal
from quarry.errors import InternalError, QuarryError, error_for_status

logger = logging.getLogger("quarry.gateway")

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_response(error: QuarryError, request: Request | None = None) -> Response:
    instance = request.url.path if request is not None else None
    return ProblemResponse(error.body(instance), status_code=error.status, headers=error.headers)


async def _handle_quarry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuarryError)
    count_refusal(request, exc)
    if exc.status >= 500:
        # Expected and transient (a restarting database): one line, no traceback.
        logger.warning(
            "%s %s on %s %s (request %s%s)",
            exc.status,
            exc.slug,
            request.method,
            request.url.path,
            getattr(request.state, "request_id", "-"),
            f", SQLSTATE {exc.sqlstate}" if exc.sqlstate else "",
        )
    return problem_response(exc, request)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = str(exc.detail)
    if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
        detail = f"{request.method} is not supported here; use {exc.headers['Allow']}."
    error = error_for_status(exc.status_code, detail, headers=exc.headers)
    return problem_response(error, request)


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    # Exception messages can carry row values or request data: log where it
    # happened (type, route, stack frames), never what the message says.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, frames)
    return problem_response(InternalError(), request)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(QuarryError, _handle_quarry_error)
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(Exception, _handle_unexpected)
