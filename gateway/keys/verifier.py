"""API-key authentication: checksum, lookup, bcrypt, and a short cache that
a revoke empties on every gateway within moments.

A key that passes its checksum is looked up (internal.find_api_key, callable
only by the gateway's role) and its secret checked with bcrypt off the event
loop.  Every refusal after the checksum costs one bcrypt check, found or not,
revoked or not, so response times do not tell the checks apart; the checksum
itself is public arithmetic, so failing it fast reveals nothing.

A success is cached for CACHE_SECONDS (never past the key's expiry), keyed by
a SHA-256 of the key.  Revocations and deletions are NOTIFYed on
`quarry_api_keys` by a trigger; every gateway LISTENs and drops the key at
once.  While the LISTEN connection is down nothing is cached, and what was
cached is dropped, so a missed notification cannot keep a revoked key alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bcrypt
import psycopg

from gateway.auth.principal import Principal
from gateway.db import Pool
from gateway.errors import unauthorized
from gateway.keys.format import parse_api_key

logger = logging.getLogger("quarry.keys")

CACHE_SECONDS = 60.0
CHANNEL = "quarry_api_keys"
_FIND = "select id, tenant_id, secret_hash, expires_at, revoked_at from internal.find_api_key(%s)"
_TOUCH = "select internal.touch_api_key(%s)"
TOUCH_INTERVAL_SECONDS = 60.0
# A real bcrypt hash (cost 10, as issued) of a secret no key can have (too
# short): refusals for unknown keys cost the same as for a wrong secret.
_DUMMY_HASH = b"$2a$10$8LaySKrW4a9oMCklWZTLRuK6vkCsZQ4.wu6qPACRXKwG0fdksVAj."


def invalid_key() -> Exception:
    return unauthorized("The API key is not valid (unknown, revoked, expired or mistyped).")


@dataclass
class _Entry:
    principal: Principal
    valid_until: float
    touched_at: float


def key_principal(tenant_id: uuid.UUID, key_id: uuid.UUID) -> Principal:
    """What act_as() needs: the claims PostgREST would see for the key's owner."""
    claims: dict[str, Any] = {"sub": str(tenant_id), "role": "authenticated", "aud": "authenticated"}
    return Principal(tenant_id=tenant_id, claims=claims, api_key_id=key_id)


class ApiKeyVerifier:
    def __init__(self, pool: Pool, database_url: str) -> None:
        self._pool = pool
        self._database_url = database_url
        self._cache: dict[bytes, _Entry] = {}
        self._listening = False
        # Bumped by every invalidation: a lookup that started before one may not cache its answer.
        self._epoch = 0

    async def verify(self, token: str) -> Principal:
        parsed = parse_api_key(token)
        if parsed is None:
            raise invalid_key()
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        entry = self._cache.get(digest)
        if entry is not None and now < entry.valid_until:
            if now - entry.touched_at >= TOUCH_INTERVAL_SECONDS:
                entry.touched_at = now
                await self._touch(entry.principal)
            return entry.principal
        epoch = self._epoch
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_FIND, (parsed.lookup_id,), prepare=True)).fetchone()
        stored_hash = row["secret_hash"].encode() if row else _DUMMY_HASH
        matches = await asyncio.to_thread(_check_secret, parsed.secret.encode(), stored_hash)
        if row is None or not matches or row["revoked_at"] is not None or _expired(row["expires_at"], now):
            raise invalid_key()
        principal = key_principal(row["tenant_id"], row["id"])
        await self._touch(principal)
        if self._listening and epoch == self._epoch:
            valid_until = now + CACHE_SECONDS
            if row["expires_at"] is not None:
                valid_until = min(valid_until, row["expires_at"].timestamp())
            self._cache[digest] = _Entry(principal, valid_until, now)
        return principal

    async def _touch(self, principal: Principal) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_TOUCH, (principal.api_key_id,), prepare=True)

    def invalidate(self, key_id: str | None = None) -> None:
        self._epoch += 1
        if key_id is None:
            self._cache.clear()
            return
        for digest, entry in list(self._cache.items()):
            if str(entry.principal.api_key_id) == key_id:
                del self._cache[digest]

    async def listen(self, *, retry_seconds: float = 1.0) -> None:
        """Follow revocations until cancelled; reconnects, caching nothing while disconnected."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._database_url, autocommit=True) as conn:
                    await conn.execute(f"listen {CHANNEL}")
                    self.invalidate()  # anything revoked while we were not listening
                    self._listening = True
                    async for notification in conn.notifies():
                        self.invalidate(notification.payload)
            except (psycopg.Error, OSError) as error:
                logger.warning("API key revocation listener lost its connection (%s); retrying", type(error).__name__)
            finally:
                self._listening = False
                self.invalidate()
            await asyncio.sleep(retry_seconds)

    @property
    def listening(self) -> bool:
        return self._listening


def _check_secret(secret: bytes, stored_hash: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, stored_hash)
    except ValueError:  # a stored hash that is not bcrypt: the key cannot be verified, so it is refused
        logger.error("an API key's stored hash is not a valid bcrypt hash")
        return False


def _expired(expires_at: datetime | None, now: float) -> bool:
    return expires_at is not None and expires_at.timestamp() <= now


async def stop_listening(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
