from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.account.service import get_me
from gateway.auth.dependencies import authenticate, tenant_transaction


async def me(request: Request) -> JSONResponse:
    """
    summary: The caller's tenant id, email and effective plan
    responses:
      200:
        description: The verified caller.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Me'}
      401:
        description: Missing, invalid or expired credentials.
        content:
          application/problem+json:
            schema: {$ref: '#/components/schemas/Problem'}
    """
    principal = await authenticate(request)
    async with tenant_transaction(request, principal) as conn:
        return JSONResponse(await get_me(conn))


routes = [Route("/api/me", me, methods=["GET"])]
