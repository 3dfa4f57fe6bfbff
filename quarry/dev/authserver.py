"""A stand-in for Supabase Auth's JWKS endpoint, for development only."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from quarry.dev.keys import load_or_create_key, public_jwk
from quarry.dev.settings import DevSettings


def create_auth_app(settings: DevSettings | None = None) -> Starlette:
    settings = settings or DevSettings.from_env()  # refuses in production
    jwks = {"keys": [public_jwk(load_or_create_key(settings))]}

    async def serve_jwks(request: Request) -> JSONResponse:
        return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=600"})

    return Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", serve_jwks, methods=["GET"])])
