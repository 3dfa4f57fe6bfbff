from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.auth.dependencies import authenticate, tenant_transaction
from gateway.billing.service import get_usage


async def usage(request: Request) -> JSONResponse:
    """
    summary: The caller's effective plan, subscription status and usage of every limit
    description: >-
      For each limit of the plan: `used`, `limit` (null means unlimited) and
      `resets_at` (null means the count does not reset: storage and Drive
      folders are freed by deleting).  Monthly and daily counts reset at the
      UTC boundary; `requests_per_hour` is the account's gateway requests in
      the current UTC hour (its own session and all its API keys).
      supabase-js reads the same rows from the `usage` view.
    responses:
      200:
        description: Plan, status and limits.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Usage'}
      401: {description: Missing, invalid or expired credentials.}
      429: {description: Over the hourly rate limit.}
    """
    principal = await authenticate(request)
    async with tenant_transaction(request, principal) as conn:
        return JSONResponse(await get_usage(conn))


routes = [Route("/api/billing/usage", usage, methods=["GET"])]
