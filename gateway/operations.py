"""Operations declared once: the same declaration validates a request and describes it.

An endpoint module lists its operations (method, handler, the body/query
models, path ids, the replies and problems it can answer), grouped by path
with `resource()`; `route()` turns a resource into one Starlette route that

1. answers a method the path does not have with 405 and an `Allow` header
   naming every method it has (Starlette does, given all of them at once);
2. authenticates the caller (unless the operation is public) and counts the
   request against its rate limit;
3. parses the path ids, the query string and the JSON body with the declared
   models: unparseable → 400, invalid → 422, the same rules /openapi.json
   states (gateway/openapi.py builds it from these declarations);
4. calls the handler with a `Call`, which holds the parsed values and the
   caller's TenantSession; the handler makes one service call and responds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.authenticate import authenticate
from quarry.db import TenantSession
from quarry.errors import Invalid, MalformedRequest, PayloadTooLarge
from quarry.idempotency import HEADER as IDEMPOTENCY_HEADER
from quarry.idempotency import Created, Idempotency, IdempotencyKey
from quarry.principal import Principal
from quarry.services import Core

M = TypeVar("M", bound=BaseModel)
Handler = Callable[["Call"], Awaitable[Response]]

MAX_BODY_BYTES = 64 * 1024
JSON_MEDIA_TYPE = "application/json"
PROBLEM_MEDIA_TYPE = "application/problem+json"
REPLAYED_HEADER = "Idempotent-Replayed"
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


@dataclass(frozen=True)
class Reply:
    """A success response: a model (JSON), or a media type with a schema, or nothing (204)."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str | None = None
    schema: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # name → description; always sent


@dataclass(frozen=True)
class Operation:
    method: str
    handler: Handler
    summary: str
    replies: Mapping[int, Reply]
    description: str = ""
    problems: Mapping[int, str] = field(default_factory=dict)  # status → when
    body: type[BaseModel] | None = None  # a JSON body, validated before the handler runs
    raw_body: Mapping[str, Any] | None = None  # a body the handler streams itself (its OpenAPI requestBody)
    query: type[BaseModel] | None = None
    path_ids: Mapping[str, str] = field(default_factory=dict)  # path parameter (a UUID) → description
    public: bool = False
    idempotent: bool = False  # takes an Idempotency-Key (a POST that creates something)
    while_deleting: bool = False  # answers while the caller's account is being deleted (else 403)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def success_status(self) -> int:
        """The status of the first reply declared: what a successful call answers."""
        return next(iter(self.replies))


@dataclass(frozen=True)
class Resource:
    path: str
    operations: tuple[Operation, ...]

    def allowed_methods(self) -> list[str]:
        methods = [operation.method for operation in self.operations]
        return [*methods, "HEAD"] if "GET" in methods else methods


@dataclass
class Call:
    """One request to one operation, parsed and authenticated."""

    request: Request
    operation: Operation
    principal: Principal | None
    parsed_body: BaseModel | None
    parsed_query: BaseModel | None
    ids: dict[str, UUID]
    idempotency: Idempotency | None = None

    @property
    def core(self) -> Core:
        core: Core = self.request.app.state.core
        return core

    @property
    def session(self) -> TenantSession:
        """act_as for this caller, as PostgREST would for this request (method, path, headers)."""
        assert self.principal is not None, f"{self.operation.operation_id} is public: it has no caller"
        headers = dict(self.request.headers.items())  # one pass; Headers' own lookups are linear
        headers["x-request-id"] = self.request.state.request_id
        return TenantSession(
            self.core.database, self.principal, method=self.request.method, path=self.request.url.path, headers=headers
        )

    def body(self, model: type[M]) -> M:
        assert isinstance(self.parsed_body, model), f"{self.operation.operation_id} declares no {model.__name__} body"
        return self.parsed_body

    def query(self, model: type[M]) -> M:
        assert isinstance(self.parsed_query, model), f"{self.operation.operation_id} declares no {model.__name__} query"
        return self.parsed_query

    def id(self, name: str) -> UUID:
        return self.ids[name]

    def created(self, created: Created[Any], headers: Mapping[str, str] | None = None) -> Response:
        """The response of a creation (the operation's success status), marked when it is a replay."""
        replayed = {REPLAYED_HEADER: "true"} if created.replayed else {}
        return json_response(
            created.value, status_code=self.operation.success_status, headers={**(headers or {}), **replayed}
        )


def json_response(model: BaseModel, *, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, headers=headers, media_type=JSON_MEDIA_TYPE)


def resource(path: str, *operations: Operation) -> Resource:
    return Resource(path, operations)


def route(declared: Resource) -> Route:
    """One route for every method of the path."""
    by_method = {operation.method: operation for operation in declared.operations}
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def endpoint(request: Request) -> Response:
        # Starlette answers other methods with 405 and this route's methods in Allow.
        operation = by_method[request.method]
        principal = None if operation.public else await authenticate(request, while_deleting=operation.while_deleting)
        call = Call(
            request=request,
            operation=operation,
            principal=principal,
            ids={name: _path_id(name, request.path_params[name]) for name in operation.path_ids},
            parsed_query=_parse_query(operation.query, request) if operation.query else None,
            parsed_body=await _parse_body(operation.body, request) if operation.body else None,
            idempotency=_idempotency(operation, declared.path, request) if operation.idempotent else None,
        )
        return await operation.handler(call)

    endpoint.__name__ = "_".join(operation.operation_id for operation in declared.operations)
    return Route(declared.path, endpoint, methods=declared.allowed_methods())


def _idempotency(operation: Operation, path: str, request: Request) -> Idempotency | None:
    key = IdempotencyKey.parse(request.headers.get(IDEMPOTENCY_HEADER))
    if key is None:
        return None
    return Idempotency(key, operation=f"{operation.method} {path}", status=operation.success_status)


def _path_id(name: str, raw: str) -> UUID:
    if not _CANONICAL_UUID.fullmatch(raw):
        raise Invalid(f"`{name}` must be a UUID.", extensions={"field": name})
    return UUID(raw)


def _parse_query(model: type[BaseModel], request: Request) -> BaseModel:
    integers = _integer_fields(model)
    values: dict[str, Any] = {}
    for name, value in request.query_params.items():
        values[name] = int(value) if name in integers and _INTEGER.fullmatch(value) else value
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise invalid(error) from None


@cache
def _integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """Query-string fields the schema calls integers (query values all arrive as text)."""
    properties = model.model_json_schema().get("properties", {})
    return frozenset(name for name, schema in properties.items() if _is_integer(schema))


def _is_integer(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "integer" or any(_is_integer(branch) for branch in schema.get("anyOf", ()))


async def _parse_body(model: type[BaseModel], request: Request) -> BaseModel:
    raw = await read_body(request)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedRequest("The body is not valid JSON.") from None
    if not storable(value):
        raise Invalid(
            "Text in the body cannot contain NUL characters (\\u0000) or unpaired surrogates.",
            extensions={"errors": _unstorable_fields(value)},
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise invalid(error) from None


async def read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge(
                f"The request body is over {MAX_BODY_BYTES} bytes.", extensions={"limit_bytes": MAX_BODY_BYTES}
            )
    return bytes(body)


def invalid(error: ValidationError) -> Invalid:
    """422 naming every field that is wrong (never echoing the values)."""
    problems = [
        {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]
    first = problems[0]
    detail = f"`{first['field']}`: {first['message']}." if first["field"] else f"{first['message']}."
    return Invalid(detail, extensions={"field": first["field"] or None, "errors": problems})


def storable(value: Any) -> bool:
    """No string anywhere in the value holds what Postgres text cannot: NUL or a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or (not item.isascii() and _has_surrogate(item)):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _unstorable_fields(value: Any, path: str = "") -> list[dict[str, str]]:
    """Where in the body the unstorable strings are (keys and values alike)."""
    if isinstance(value, str):
        return [] if storable(value) else [{"field": path, "message": "NUL or an unpaired surrogate"}]
    if isinstance(value, dict):
        found = (
            [{"field": path, "message": "a key holds NUL or an unpaired surrogate"}]
            if not storable(list(value))
            else []
        )
        for key, item in value.items():
            found += _unstorable_fields(item, f"{path}.{key}" if path else str(key))
        return found
    if isinstance(value, list):
        return [problem for index, item in enumerate(value) for problem in _unstorable_fields(item, f"{path}.{index}")]
    return []


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
