"""Request and response bodies of the API-keys API."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints

from quarry.models import RequestModel, ResponseModel, Timestamp

MAX_KEY_NAME_CHARS = 200
# No control characters (C0, DEL, C1): the same set SQL refuses (internal.issue_api_key).
KEY_NAME_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"


class CreateApiKey(RequestModel):
    name: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_KEY_NAME_CHARS, pattern=KEY_NAME_PATTERN),
        Field(description="no control characters"),
    ]
    expires_at: AwareDatetime | None = Field(None, description="in the future; null: never expires")


class IssuedApiKey(ResponseModel):
    """A new key: the plaintext `key` is here and nowhere else, ever."""

    id: UUID
    name: str
    key: str = Field(description="the plaintext key; shown this once")
    prefix: str = Field(description="sk_live_ and the public lookup id")
    last4: str
    created_at: Timestamp
    expires_at: Timestamp | None


class ApiKey(ResponseModel):
    """A key as its owner sees it later: never the secret or its hash."""

    id: UUID
    name: str
    prefix: str = Field(description="sk_live_ and the public lookup id")
    last4: str
    status: Literal["active", "revoked", "expired"]
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None
    requests_this_hour: int = Field(description="this key's gateway requests in the current UTC hour")


class ApiKeyList(ResponseModel):
    data: list[ApiKey]
