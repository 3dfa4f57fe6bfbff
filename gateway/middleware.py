"""Every response says which request it answers and, for a counted one, what is left of the hour.

Each request has an id: the caller's `X-Request-Id` when it is a sensible
one, else a new one.  It is answered in `X-Request-Id`, passed to the
database with the request's headers (the audit log records it) and names the
request in the gateway's logs.  A request counted against its rate limit
(gateway/auth/rate_limits.py leaves the count in the ASGI scope) also gets
RateLimit-Limit, -Remaining and -Reset, whatever it ends with (a 4xx included).
Every request is counted and timed for /metrics (gateway/metrics.py) by its
route template and status, and its log lines carry its id (quarry/logs.py).
"""

from __future__ import annotations

import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.rate_limits import SCOPE_KEY, RateLimit
from gateway.metrics import IN_FLIGHT, observe_request
from quarry.logs import request_context

REQUEST_ID_HEADER = "x-request-id"
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class ResponseHeaders:
    """ASGI middleware: request.state.request_id; X-Request-Id and RateLimit-* on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == REQUEST_ID_HEADER.encode()), ""
        )
        request_id = offered if _ACCEPTABLE_REQUEST_ID.fullmatch(offered) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500  # if the app fails before answering

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                # Appended as raw pairs: nothing upstream sets these, so nothing needs replacing.
                added = [(b"x-request-id", request_id.encode())]
                rate_limit: RateLimit | None = scope.get(SCOPE_KEY)
                if rate_limit is not None:
                    added += [(name.lower().encode(), value.encode()) for name, value in rate_limit.headers().items()]
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        IN_FLIGHT.inc()
        try:
            with request_context(request_id):  # every log line of the request names it
                await self.app(scope, receive, send_with_headers)
        finally:
            IN_FLIGHT.dec()
            observe_request(scope, status, time.perf_counter() - started)
