"""The base of every request and response body (pydantic v2).

Each body is declared once, as a model in its domain's `models.py`: the
gateway validates requests with it and builds /openapi.json from it, and the
core's services take and return it.  Requests are strict (no coercion: the
string "5" is not an integer) and closed (unknown fields are refused), so
what the schema promises is exactly what the server accepts.

Patterns are written for ECMA-262 regular expressions as JSON Schema defines
them and are matched by pydantic's Rust engine, which reads them the same way
(`$` is the end of the text, never "before a final newline").
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, StringConstraints, WithJsonSchema

# Postgres text cannot hold NUL: every free-text field refuses it in its schema.
NO_NUL_PATTERN = r"^[^\u0000]*$"
# What a "blank" string is made of: ECMA-262's \s (JavaScript's trim()).
BLANK_CHARACTERS = (
    "\t\n\u000b\u000c\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_BLANK_CLASS = r"\t\n\u000b\u000c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# Some character that is neither blank nor NUL, and no NUL anywhere.
NOT_BLANK_PATTERN = rf"^[^\u0000]*[^{_BLANK_CLASS}\u0000][^\u0000]*$"


def strip_blank(text: str) -> str:
    """Trim what NOT_BLANK_PATTERN calls blank, and nothing else."""
    return text.strip(BLANK_CHARACTERS)


def _integral_number(value: Any) -> Any:
    # JSON Schema counts 5.0 as an integer; strict validation alone would not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN)]
# Goes after an integer's Field(ge=…, le=…): before it, the bounds would not reach the JSON Schema.
INTEGRAL = BeforeValidator(_integral_number)
# Responses write times as Python and Postgres do (`…+00:00`), as the API always has.
Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RequestModel(BaseModel):
    """A request body or query string: strict, closed, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ResponseModel(BaseModel):
    """A response body, built from rows the core reads."""

    model_config = ConfigDict(frozen=True)
