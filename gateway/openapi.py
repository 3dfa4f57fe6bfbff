"""/openapi.json: built from the YAML in each endpoint's docstring."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

BASE_SCHEMA: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Quarry gateway", "version": "0.1.0"},
    "security": [{"supabaseJwt": []}, {"apiKey": []}],
    "components": {
        "securitySchemes": {
            "supabaseJwt": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A Supabase Auth access token (ES256/RS256 via JWKS, or legacy HS256).",
            },
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "sk_live_…",
                "description": "An API key from POST /api/keys; `Authorization: sk_…` works too.",
            },
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string", "format": "uri"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "instance": {"type": "string"},
                },
            },
            "Document": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "title": {"type": "string"},
                    "source": {"type": "string", "enum": ["upload", "drive"]},
                    "mime_type": {"type": ["string", "null"]},
                    "size_bytes": {"type": "integer"},
                    "status": {"type": "string", "enum": ["queued", "processing", "indexing", "ready", "failed"]},
                    "error_reason": {"type": ["string", "null"]},
                    "page_count": {"type": ["integer", "null"]},
                    "chunk_count": {"type": ["integer", "null"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                    "ready_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "Me": {
                "type": "object",
                "required": ["tenant_id", "email", "plan"],
                "properties": {
                    "tenant_id": {"type": "string", "format": "uuid"},
                    "email": {"type": ["string", "null"]},
                    "plan": {"type": "string", "enum": ["free", "pro", "enterprise"]},
                },
            },
            "Usage": {
                "type": "object",
                "required": ["plan", "subscription_status", "limits"],
                "properties": {
                    "plan": {"type": "string", "enum": ["free", "pro", "enterprise"]},
                    "subscription_status": {"type": ["string", "null"]},
                    "limits": {
                        "type": "object",
                        "description": "documents_per_month, storage_bytes, drive_folders, queries_per_day,"
                        " exports, requests_per_hour.",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "used": {"type": "integer"},
                                "limit": {"type": ["integer", "null"], "description": "null: unlimited"},
                                "resets_at": {"type": ["string", "null"], "format": "date-time"},
                            },
                        },
                    },
                },
            },
            "ApiKey": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "name": {"type": "string"},
                    "prefix": {"type": "string", "description": "sk_live_ and the public lookup id"},
                    "last4": {"type": "string"},
                    "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "revoked_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_used_at": {"type": ["string", "null"], "format": "date-time"},
                    "requests_this_hour": {"type": "integer", "description": "this key's gateway requests"},
                },
            },
            "IssuedApiKey": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "name": {"type": "string"},
                    "key": {"type": "string", "description": "the plaintext key; shown this once"},
                    "prefix": {"type": "string"},
                    "last4": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "QuotaExceeded": {
                "description": "A 402 problem: which limit, the usage, the limit value, when it resets.",
                "allOf": [
                    {"$ref": "#/components/schemas/Problem"},
                    {
                        "type": "object",
                        "properties": {
                            "limit": {"type": "string"},
                            "used": {"type": "integer"},
                            "limit_value": {"type": "integer"},
                            "resets_at": {"type": ["string", "null"], "format": "date-time"},
                            "plan": {"type": "string"},
                            "hint": {"type": "string"},
                        },
                    },
                ],
            },
        },
    },
}

schemas = SchemaGenerator(BASE_SCHEMA)


async def openapi(request: Request) -> JSONResponse:
    """
    summary: This document - the OpenAPI description of every route
    security: []
    responses:
      200:
        description: OpenAPI 3.1 document.
    """
    return JSONResponse(schemas.get_schema(routes=request.app.routes))


routes = [Route("/openapi.json", openapi, methods=["GET"], include_in_schema=True)]
