"""Idempotency keys: a creation retried with the same key answers what the first one answered.

A client that lost a response (a connection reset, a 503 during COMMIT)
cannot know whether its POST created something; sent again with the same
`Idempotency-Key`, it gets the original response instead of a duplicate.
The model is the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
and Stripe's idempotency keys:

- same key, same request, within 24 hours: the original status and body;
- same key, another request (another body, or another operation): 422;
- concurrent duplicates: the second waits for the first, then replays it
  (the claim is a row inserted in the creating transaction, see
  supabase/migrations/…_idempotency_keys.sql);
- only a creation that committed is remembered: a refused request changed
  nothing and may be sent again, corrected, with the same key;
- deleting what a request created forgets its record: a replay never names
  a document that is gone (the same key then creates afresh).

The key is never stored.  Records are found by SHA-256 of (tenant, key), and
the response is sealed with AES-256-GCM under a key derived (HKDF-SHA256)
from the Idempotency-Key and the tenant, so what the table holds (an API
key's plaintext included) is unreadable without the client's own key.  Use a
random key (a UUIDv4), as the draft advises.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel

from quarry.db import Connection
from quarry.errors import Conflict, Invalid

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII: what the header's schema allows (a quoted sf-string is unquoted first).
KEY_PATTERN = r"^[!-~]{1,255}$"
_KEY = re.compile(KEY_PATTERN)
_SEAL_INFO = b"quarry idempotency v1"
_NONCE_BYTES = 12

_CLAIM = "select outcome, response_status, response_body from internal.claim_idempotency_key(%s, %s, %s)"
_COMPLETE = "select internal.complete_idempotency_key(%s, %s, %s, %s)"


def invalid_key(detail: str) -> Invalid:
    return Invalid(detail, extensions={"field": HEADER})


@dataclass(frozen=True)
class IdempotencyKey:
    value: str

    @classmethod
    def parse(cls, header: str | None) -> IdempotencyKey | None:
        """The key of an `Idempotency-Key` header (a bare token or a quoted sf-string); None if absent."""
        if header is None:
            return None
        value = header.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if not _KEY.fullmatch(value):
            raise invalid_key(f"`{HEADER}` must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID is best).")
        return cls(value)

    def lookup_hash(self, tenant_id: uuid.UUID) -> str:
        return hashlib.sha256(tenant_id.bytes + self.value.encode()).hexdigest()

    def _cipher(self, tenant_id: uuid.UUID) -> AESGCM:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=tenant_id.bytes, info=_SEAL_INFO)
        return AESGCM(hkdf.derive(self.value.encode()))

    def seal(self, tenant_id: uuid.UUID, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._cipher(tenant_id).encrypt(nonce, plaintext, self.lookup_hash(tenant_id).encode())

    def open(self, tenant_id: uuid.UUID, sealed: bytes) -> bytes:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._cipher(tenant_id).decrypt(nonce, ciphertext, self.lookup_hash(tenant_id).encode())


def fingerprint(*parts: str | bytes) -> str:
    """What makes two requests the same request (length-prefixed, so parts cannot run together)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@dataclass(frozen=True)
class Idempotency:
    """One request's idempotency: its key, the operation and the status a success answers with."""

    key: IdempotencyKey
    operation: str
    status: int

    async def claim(self, conn: Connection, tenant_id: uuid.UUID, request_fingerprint: str, model: type[M]) -> M | None:
        """In the creating transaction, first: what the original request created, or None to go ahead."""
        cursor = await conn.execute(
            _CLAIM, (self.key.lookup_hash(tenant_id), self.operation, request_fingerprint), prepare=True
        )
        row = await cursor.fetchone()
        assert row is not None
        outcome = row["outcome"]
        if outcome == "new":
            return None
        if outcome == "mismatch":
            raise _used_for_another_request()
        if outcome == "pending":
            raise Conflict(f"A request with this `{HEADER}` is still in progress.", slug="idempotency-key-in-use")
        try:
            return model.model_validate_json(self.key.open(tenant_id, bytes(row["response_body"])))
        except InvalidTag:  # the key hashed alike but does not open it: treat as another request's
            raise _used_for_another_request() from None

    async def complete(self, conn: Connection, tenant_id: uuid.UUID, created: BaseModel, target_id: uuid.UUID) -> None:
        """In the same transaction, after creating: remember the response, and what it created."""
        sealed = self.key.seal(tenant_id, created.model_dump_json().encode())
        await conn.execute(_COMPLETE, (self.key.lookup_hash(tenant_id), self.status, sealed, target_id), prepare=True)


def _used_for_another_request() -> Invalid:
    return invalid_key(f"This `{HEADER}` was already used for a different request; use a new key.")


@dataclass(frozen=True)
class Created(Generic[T]):
    """What a creating service returns: the thing, and whether it is a replay of an earlier creation."""

    value: T
    replayed: bool = False
