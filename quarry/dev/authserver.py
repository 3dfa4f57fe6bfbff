"""A stand-in for Supabase Auth for development: its JWKS endpoint, and the admin endpoint that
deletes a user (`DELETE /auth/v1/admin/users/{id}`, quarry/dev/auth_admin.py)."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from quarry.dev import auth_admin
from quarry.dev.keys import load_or_create_key, public_jwk
from quarry.dev.settings import DevSettings


def create_auth_app(settings: DevSettings | None = None) -> Starlette:
    settings = settings or DevSettings.from_env()  # refuses in production
    jwks = {"keys": [public_jwk(load_or_create_key(settings))]}

    async def serve_jwks(request: Request) -> JSONResponse:
        return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=600"})

    async def delete_user(request: Request) -> JSONResponse:
        if not auth_admin.is_service_key(request.headers.get("authorization"), jwks):
            return JSONResponse({"code": 401, "error_code": "no_authorization", "msg": "not a service key"}, 401)
        status, body = await asyncio.to_thread(auth_admin.delete_user, settings.admin_database_url, request.url.path)
        return JSONResponse(body, status)

    return Starlette(
        routes=[
            Route("/auth/v1/.well-known/jwks.json", serve_jwks, methods=["GET"]),
            Route("/auth/v1/admin/users/{user_id}", delete_user, methods=["DELETE"]),
        ]
    )
