"""/openapi.json, built once at start-up from the operations' own declarations.

Every request and response body is the pydantic model the gateway validates
with (or the core returns), so the document cannot drift from the server.
Each operation lists every status it can answer: its replies, the problems it
declares, and those every operation of its kind can meet (401/429/503 for an
authenticated one, 400/413/422 for one with a JSON body, 422 for one with
parameters).  Errors are application/problem+json (RFC 9457).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.responses import Response

from gateway.auth.authenticate import caller_address
from gateway.auth.throttles import Tarpit, WindowThrottle
from gateway.operations import (
    JSON_MEDIA_TYPE,
    PROBLEM_MEDIA_TYPE,
    REPLAYED_HEADER,
    Call,
    Operation,
    Reply,
    Resource,
    resource,
)
from quarry.idempotency import HEADER as IDEMPOTENCY_HEADER
from quarry.idempotency import KEY_PATTERN
from quarry.idempotency import MAX_KEY_LENGTH as MAX_IDEMPOTENCY_KEY_LENGTH

REF_TEMPLATE = "#/components/schemas/{model}"
TITLE = "Quarry gateway"
VERSION = "0.2.0"

SECURITY_SCHEMES: dict[str, Any] = {
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
}

PROBLEM_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; `type` names the kind of problem (one slug per kind).",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "field": {"type": ["string", "null"], "description": "the parameter at fault, when there is one"},
            "errors": {
                "type": "array",
                "description": "every invalid field (422 from validation)",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
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
}

# What any operation of a kind can answer, unless it says more precisely.
AUTHENTICATED_PROBLEMS = {
    401: "Missing, invalid or expired credentials.",
    429: "Over the plan's hourly rate limit (see Retry-After).",
    503: "The database or another dependency is unavailable for a moment (see Retry-After).",
}
JSON_BODY_PROBLEMS = {
    400: "The body is not JSON.",
    413: "The body is over 64 KiB.",
    422: "A field is missing or invalid (`errors` names each one).",
}
PARAMETER_PROBLEMS = {422: "A parameter is invalid."}
IDEMPOTENCY_PROBLEMS = {
    409: "A request with the same Idempotency-Key is still in progress.",
    422: "Or the Idempotency-Key was used for a different request.",
}
HEADERS_WITH_RETRY_AFTER = (429, 503)


class OpenApiDocument:
    """The document for a set of resources (plus its own route), serialized once."""

    def __init__(self, resources: Sequence[Resource]) -> None:
        self.resource = resource(
            "/openapi.json",
            Operation(
                "GET",
                self.serve,
                summary="This document: the OpenAPI 3.1 description of every route",
                public=True,
                replies={200: Reply("OpenAPI 3.1 document.", media_type=JSON_MEDIA_TYPE, schema={"type": "object"})},
                problems={429: "Read too often from this address (it never changes while a gateway runs)."},
            ),
        )
        self.document = build([*resources, self.resource])
        self._body = json.dumps(self.document, separators=(",", ":")).encode()

    async def serve(self, call: Call) -> Response:
        # Counted per address: cheap as it is, a public route read in a loop by many clients
        # otherwise keeps the event loop from everything else.
        readers: WindowThrottle = call.request.app.state.openapi_readers
        tarpit: Tarpit = call.request.app.state.tarpit
        address = caller_address(call.request)
        async with tarpit.holding_refusals():
            readers.check(address)
        readers.count(address)
        return Response(self._body, media_type=JSON_MEDIA_TYPE)


def build(resources: Iterable[Resource]) -> dict[str, Any]:
    resources = list(resources)
    schemas, refs = _model_schemas(resources)
    paths: dict[str, Any] = {}
    for declared in resources:
        paths[declared.path] = {
            operation.method.lower(): _operation(operation, refs) for operation in declared.operations
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION},
        "security": [{"supabaseJwt": []}, {"apiKey": []}],
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": {**PROBLEM_SCHEMAS, **schemas}},
    }


def _model_schemas(
    resources: Sequence[Resource],
) -> tuple[dict[str, Any], dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for declared in resources:
        for operation in declared.operations:
            if operation.body is not None:
                wanted.append((operation.body, "validation"))
            wanted.extend((reply.model, "serialization") for reply in operation.replies.values() if reply.model)
    unique = list(dict.fromkeys(wanted))
    refs, definitions = models_json_schema(unique, ref_template=REF_TEMPLATE)
    by_model: dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]] = {
        (model, mode): ref for (model, mode), ref in refs.items() if issubclass(model, BaseModel)
    }
    return definitions.get("$defs", {}), by_model


def _operation(
    operation: Operation, refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]
) -> dict[str, Any]:
    described: dict[str, Any] = {"operationId": operation.operation_id, "summary": operation.summary}
    if operation.description:
        described["description"] = operation.description
    parameters = _path_parameters(operation) + _query_parameters(operation) + _header_parameters(operation)
    if parameters:
        described["parameters"] = parameters
    if operation.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {JSON_MEDIA_TYPE: {"schema": refs[(operation.body, "validation")]}},
        }
    elif operation.raw_body is not None:
        described["requestBody"] = copy.deepcopy(dict(operation.raw_body))
    responses: dict[str, Any] = {
        str(status): _reply(reply, refs, authenticated=not operation.public, idempotent=operation.idempotent)
        for status, reply in operation.replies.items()
    }
    for status, description in sorted(_problems(operation).items()):
        responses[str(status)] = _problem(status, description)
    described["responses"] = responses
    if operation.public:
        described["security"] = []
    return described


def _problems(operation: Operation) -> dict[int, str]:
    problems: dict[int, str] = {}
    if not operation.public:
        problems.update(AUTHENTICATED_PROBLEMS)
    if operation.path_ids or operation.query is not None:
        problems.update(PARAMETER_PROBLEMS)
    if operation.body is not None:
        problems.update(JSON_BODY_PROBLEMS)
    problems.update(operation.problems)
    if operation.idempotent:
        for status, description in IDEMPOTENCY_PROBLEMS.items():
            problems[status] = f"{problems[status]} {description}" if status in problems else description
    return problems


def _header_parameters(operation: Operation) -> list[dict[str, Any]]:
    if not operation.idempotent:
        return []
    return [
        {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": (
                "Makes retrying safe: sent again within 24 h with the same request, it answers the first response"
                " (marked `Idempotent-Replayed: true`) instead of creating another.  A UUID is best; a quoted"
                " sf-string is accepted too."
            ),
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                "pattern": KEY_PATTERN,
            },
        }
    ]


def _path_parameters(operation: Operation) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": description,
            "schema": {"type": "string", "format": "uuid"},
        }
        for name, description in operation.path_ids.items()
    ]


def _query_parameters(operation: Operation) -> list[dict[str, Any]]:
    if operation.query is None:
        return []
    schema = operation.query.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema.get("properties", {}).items():
        field_schema = _without_null(field_schema)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        description = field_schema.pop("description", None)
        field_schema.pop("title", None)
        if description:
            parameter["description"] = description
        parameter["schema"] = field_schema
        parameters.append(parameter)
    return parameters


def _without_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A query parameter is present or absent, never JSON null: drop the null branch of an optional one."""
    schema = dict(schema)
    branches = [branch for branch in schema.get("anyOf", ()) if branch.get("type") != "null"]
    if "anyOf" in schema and len(branches) == 1:
        del schema["anyOf"]
        if schema.get("default", ...) is None:
            del schema["default"]
        schema = {**branches[0], **schema}
    return schema


def _reply(
    reply: Reply,
    refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]],
    *,
    authenticated: bool,
    idempotent: bool,
) -> dict[str, Any]:
    described: dict[str, Any] = {"description": reply.description}
    if reply.model is not None:
        described["content"] = {JSON_MEDIA_TYPE: {"schema": refs[(reply.model, "serialization")]}}
    elif reply.media_type is not None:
        described["content"] = {reply.media_type: {"schema": dict(reply.schema or {})}}
    headers: dict[str, Any] = {
        name: {"description": description, "required": True, "schema": {"type": "string"}}
        for name, description in reply.headers.items()
    }
    headers["X-Request-Id"] = {
        "description": "the request's id (yours, if you sent a sensible X-Request-Id)",
        "required": True,
        "schema": {"type": "string"},
    }
    if authenticated:
        headers.update(_rate_limit_headers())
    if idempotent:
        headers[REPLAYED_HEADER] = {
            "description": "`true` when this is the stored response of an earlier request with the same key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    described["headers"] = headers
    return described


def _rate_limit_headers() -> dict[str, Any]:
    sent = "sent when the gateway enforces rate limits"
    return {
        "RateLimit-Limit": {"description": f"requests per hour ({sent})", "schema": {"type": "integer"}},
        "RateLimit-Remaining": {"description": f"requests left this hour ({sent})", "schema": {"type": "integer"}},
        "RateLimit-Reset": {"description": f"seconds until the window resets ({sent})", "schema": {"type": "integer"}},
    }


def _problem(status: int, description: str) -> dict[str, Any]:
    schema = "QuotaExceeded" if status == 402 else "Problem"
    described: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    if status in HEADERS_WITH_RETRY_AFTER:
        described["headers"] = {
            "Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}
        }
    return described
