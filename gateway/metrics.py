"""The gateway's Prometheus metrics, and who may read them.

Series (labels are route templates such as `/api/documents/{document_id}`, methods,
statuses, credential kinds and limit names: never a raw path, a tenant or a
key):

- `quarry_http_requests_total{method, route, status}` and
  `quarry_http_request_duration_seconds{method, route, status}` (a
  histogram); a path no route matches is `route="unmatched"`;
- `quarry_http_requests_in_flight`;
- `quarry_auth_failures_total{credential}` (jwt, api_key, missing, metrics);
- `quarry_rate_limit_refusals_total{limit}` (the plan's hourly limit, the
  auth throttles, /openapi.json and /metrics readers);
- `quarry_quota_refusals_total{limit}` (402s by limit; 415 `formats`);
- the connection pools (`quarry_db_pool_*`, quarry/metrics.py) and the
  process (CPU, memory, open files, GC).

`GET /metrics` is served on the API port but is not a cheap public route: its
text is rendered at most once a second (a read costs a cached copy), reads
are counted per client address like /openapi.json (`METRICS_READS_PER_MINUTE`,
then held 429s), and with `METRICS_TOKEN` set it answers only
`Authorization: Bearer <METRICS_TOKEN>` (a wrong token is a failed
authentication of the address, so guessing is throttled too).  In production
set the token (Prometheus: `authorization: {credentials: …}`) or keep
/metrics off the public proxy.
"""

from __future__ import annotations

import hmac

from prometheus_client import Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from gateway.auth.authenticate import caller_address
from gateway.auth.throttles import Tarpit, WindowThrottle
from gateway.operations import Call, Operation, Reply, resource
from quarry.errors import QuarryError, Unauthorized
from quarry.keys.format import looks_like_api_key
from quarry.metrics import CONTENT_TYPE, Exposition, bounded_label
from quarry.settings import Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
UNMATCHED = "unmatched"

REQUESTS = Counter(
    "quarry_http_requests", "HTTP requests answered, by method, route and status.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "quarry_http_request_duration_seconds",
    "Time to answer HTTP requests, by method, route and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("quarry_http_requests_in_flight", "HTTP requests being answered now.")
AUTH_FAILURES = Counter(
    "quarry_auth_failures", "Requests refused for their credentials (401), by kind.", ["credential"]
)
RATE_LIMITED = Counter("quarry_rate_limit_refusals", "Requests refused with 429, by limit.", ["limit"])
QUOTA_REFUSED = Counter("quarry_quota_refusals", "Requests refused by a plan limit (402, 415), by limit.", ["limit"])

EXPOSITION = Exposition()


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Count and time one answered request (gateway/middleware.py calls it for every request)."""
    route = getattr(scope.get("route"), "path", None) or UNMATCHED
    labels = (bounded_label(scope.get("method"), METHODS), route, str(status))
    REQUESTS.labels(*labels).inc()
    LATENCY.labels(*labels).observe(seconds)


def count_refusal(request: Request, error: QuarryError) -> None:
    """The refusals operators watch: failed authentications, rate limits and plan limits."""
    if error.status == 401:
        AUTH_FAILURES.labels(credential_kind(request)).inc()
    elif error.status == 429:
        RATE_LIMITED.labels(bounded_label(error.extensions.get("limit"))).inc()
    elif error.status == 402:
        QUOTA_REFUSED.labels(bounded_label(error.extensions.get("limit"))).inc()
    elif error.slug == "format-not-in-plan":
        QUOTA_REFUSED.labels("formats").inc()


def credential_kind(request: Request) -> str:
    if request.url.path == "/metrics":
        return "metrics"
    authorization = (request.headers.get("authorization") or "").strip()
    if not authorization:
        return "missing"
    token = authorization if looks_like_api_key(authorization) else _bearer(authorization)
    return "api_key" if looks_like_api_key(token) else "jwt"


async def metrics(call: Call) -> Response:
    request = call.request
    state = request.app.state
    settings: Settings = state.settings
    readers: WindowThrottle = state.metrics_readers
    failures: WindowThrottle = state.failed_authentications
    tarpit: Tarpit = state.tarpit
    address = caller_address(request)
    async with tarpit.holding_refusals():
        readers.check(address)
        failures.check(address)
    readers.count(address)
    token = settings.ops.metrics_token
    if token is not None:
        offered = _bearer(request.headers.get("authorization"))
        if not hmac.compare_digest(offered.encode(), token.encode()):
            failures.count(address)
            raise Unauthorized("/metrics needs the metrics token (Authorization: Bearer <METRICS_TOKEN>).")
    return Response(EXPOSITION.render(), media_type=CONTENT_TYPE)


def _bearer(authorization: str | None) -> str:
    """The token of `Authorization: Bearer <token>`, or "" when the header is not that."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


resources = [
    resource(
        "/metrics",
        Operation(
            "GET",
            metrics,
            summary="Prometheus metrics of this gateway",
            description="Text exposition format, refreshed at most once a second. Counted per client address; "
            "with METRICS_TOKEN set, only `Authorization: Bearer <METRICS_TOKEN>` is answered.",
            public=True,
            replies={200: Reply("Prometheus text format 0.0.4.", media_type="text/plain", schema={"type": "string"})},
            problems={
                401: "METRICS_TOKEN is set and the request does not carry it.",
                429: "Read too often from this address.",
            },
        ),
    )
]
