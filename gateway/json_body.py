"""Reading a JSON request body: bounded in size, and only text Postgres can store."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from gateway.errors import Problem

MAX_BODY_BYTES = 64 * 1024


async def read_json(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Problem(413, "body-too-large", f"The request body is over {MAX_BODY_BYTES} bytes.")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise Problem(400, "malformed-json", "The body is not valid JSON.") from None
    if not _storable(value):
        raise Problem(
            422,
            "invalid-text",
            "Text in the body cannot contain NUL characters (\\u0000) or unpaired surrogates.",
        )
    return value


def _storable(value: Any) -> bool:
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


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
