"""API-key authentication: checksum, lookup, bcrypt, and a short cache that
a revoke empties on every gateway within a second.

A key that passes its checksum is looked up (internal.find_api_key, callable
only by the gateway's role) and its secret checked with bcrypt on a small
thread pool of its own.  Refusals after the checksum take the same time
whatever failed: a wrong secret, a revoked or expired key cost one bcrypt
check, and an unknown lookup id waits as long as bcrypt takes (measured as
it runs) without spending the CPU, so forged keys cannot make the gateway
hash.  The checksum is public arithmetic: failing it fast reveals nothing.

Checking a key is bounded before it starts (the cache is consulted first, so
a verified key never meets these):
- requests with the very same key while it is being checked share that
  check (one lookup, one bcrypt);
- one check at a time per lookup id and per client address (so one client
  cannot hold both bcrypt threads: another tenant's check finds one free);
  a lookup id with `failures_per_key` failed checks in the window is
  refused until the window ends (429, no database, no bcrypt),
  whether the id exists or not, so the refusal says only that recent
  attempts with this id failed, never whether it names a key;
- at most `threads + queue` checks in progress on the gateway; beyond that,
  503 with Retry-After (every kind of check alike, unknown ids included, so
  saturation does not tell them apart).
The trade-off: anyone who knows a key's lookup id (it is in the key, not a
secret) can, by failing with it, keep that key out of a gateway on which it
is not cached yet for a window at a time.  The owner's cached key keeps
working, the lockout ends with the window, and the attacker's own address
is throttled meanwhile (gateway/auth/authenticate.py).

A success is cached for CACHE_SECONDS (never past the key's expiry), keyed by
a SHA-256 of the key.  internal.revoke_api_key NOTIFYs `quarry_api_keys` on
revoke (from the function, not a trigger: under Citus a trigger runs on the
shard's node, which no gateway listens to); each gateway LISTENs on a
connection of its own and pings it every HEARTBEAT_SECONDS.  Notifications arrive in order before a ping's answer, so
when a ping returns, every revoke committed before it was sent has been
applied; the cache is trusted only within TRUST_SECONDS of sending the last
answered ping.  A dead or silent connection therefore stops the cache within
a second, and the gateway verifies every key afresh until it is back.  A ping
that is merely slow (the event loop or the server busy) lets the trust lapse
until it is answered but keeps the cache and the connection: emptying the
cache under load would send every tenant's key to bcrypt at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import bcrypt
import psycopg

from gateway.auth.throttles import WindowThrottle
from quarry.db import TenantDatabase
from quarry.errors import QuarryError, Unauthorized, Unavailable
from quarry.keys.format import parse_api_key
from quarry.principal import Principal

logger = logging.getLogger("quarry.keys")

CACHE_SECONDS = 60.0
HEARTBEAT_SECONDS = 0.3
TRUST_SECONDS = 1.0
DEAD_SECONDS = 5.0
CHANNEL = "quarry_api_keys"
TOUCH_INTERVAL_SECONDS = 60.0
_FIND = "select id, tenant_id, secret_hash, expires_at, revoked_at from internal.find_api_key(%s)"
_TOUCH = "select internal.touch_api_key(%s, %s)"
# A bcrypt hash (cost 10, as issued) of a secret no key can have: the first
# timing of bcrypt, before any real key has been checked.
_CALIBRATION_HASH = b"$2a$10$8LaySKrW4a9oMCklWZTLRuK6vkCsZQ4.wu6qPACRXKwG0fdksVAj."
CHECKS_IN_FLIGHT_PER_CLIENT = 1
MAX_THROTTLED_LOOKUP_IDS = 50_000


def invalid_key() -> Unauthorized:
    return Unauthorized("The API key is not valid (unknown, revoked, expired or mistyped).")


@dataclass
class _Entry:
    principal: Principal
    valid_until: float
    touched_at: float


@dataclass(frozen=True, slots=True)
class KeyCheckLimits:
    threads: int = 2
    queue: int = 16
    failures_per_key: int = 5
    window_seconds: float = 60.0


class BoundedBcrypt:
    """bcrypt on its own threads, with room for `threads + queue` checks in progress and no more."""

    def __init__(self, threads: int, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        self.capacity = threads + queue
        self.in_progress = 0

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        if self.in_progress >= self.capacity:
            raise Unavailable("Too many API keys are being checked right now; try again shortly.", retry_after=1)
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1

    async def check(self, secret: bytes, stored_hash: bytes) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._executor, _check_secret, secret, stored_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ApiKeyVerifier:
    def __init__(
        self,
        database: TenantDatabase,
        database_url: str,
        *,
        clients: WindowThrottle,
        limits: KeyCheckLimits | None = None,
    ) -> None:
        limits = limits or KeyCheckLimits()
        self._database = database
        self._database_url = database_url
        self._cache: dict[bytes, _Entry] = {}
        self._confirmed_at = -float("inf")  # monotonic time of the last answered ping
        # Bumped by every invalidation: a lookup that started before one may not cache its answer.
        self._epoch = 0
        self._bcrypt = BoundedBcrypt(limits.threads, limits.queue)
        self._bcrypt_seconds: float | None = None
        self._clients = clients
        self._lookup_ids = WindowThrottle(
            limit=limits.failures_per_key,
            window_seconds=limits.window_seconds,
            max_in_flight=1,
            max_keys=MAX_THROTTLED_LOOKUP_IDS,
            refusal="Too many failed attempts with this API key's lookup id",
        )
        # Checks under way, by key digest: the same key sent again meanwhile waits for the answer.
        self._flights: dict[bytes, asyncio.Future[Principal]] = {}

    @property
    def cache_trusted(self) -> bool:
        return time.monotonic() - self._confirmed_at <= TRUST_SECONDS

    async def verify(self, token: str, client: str) -> Principal:
        """The key's principal; `client` (its address) is what the per-client limit counts."""
        parsed = parse_api_key(token)
        if parsed is None:
            raise invalid_key()
        digest = hashlib.sha256(token.encode()).digest()
        now = time.time()
        entry = self._cache.get(digest)
        if entry is not None and now < entry.valid_until and self.cache_trusted:
            if now - entry.touched_at >= TOUCH_INTERVAL_SECONDS:
                entry.touched_at = now
                await self._touch(entry.principal)
            return entry.principal
        shared = self._flights.get(digest)
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except Unauthorized:
                raise invalid_key() from None
        with (
            self._clients.attempt(client),
            self._lookup_ids.attempt(parsed.lookup_id),
            self._bcrypt.admission(),
        ):
            flight: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
            self._flights[digest] = flight
            try:
                principal = await self._verify_afresh(parsed.lookup_id, parsed.secret, digest, now)
            except BaseException as error:
                if isinstance(error, Unauthorized):
                    self._lookup_ids.count(parsed.lookup_id)
                interrupted = Unavailable("The key check was interrupted.")
                flight.set_exception(error if isinstance(error, QuarryError) else interrupted)
                flight.exception()  # retrieved: no "never retrieved" warning when nobody shared it
                raise
            else:
                flight.set_result(principal)
                return principal
            finally:
                del self._flights[digest]

    async def _verify_afresh(self, lookup_id: str, secret: str, digest: bytes, now: float) -> Principal:
        epoch = self._epoch
        row = await self._database.fetch_one(_FIND, (lookup_id,))
        if row is None:
            await asyncio.sleep(await self._bcrypt_duration())
            raise invalid_key()
        matches = await self._check(secret.encode(), row["secret_hash"].encode())
        if not matches or row["revoked_at"] is not None or _expired(row["expires_at"], now):
            raise invalid_key()
        principal = Principal.for_api_key(row["tenant_id"], row["id"])
        await self._touch(principal)
        if self.cache_trusted and epoch == self._epoch:
            valid_until = now + CACHE_SECONDS
            if row["expires_at"] is not None:
                valid_until = min(valid_until, row["expires_at"].timestamp())
            self._cache[digest] = _Entry(principal, valid_until, now)
        return principal

    async def _check(self, secret: bytes, stored_hash: bytes) -> bool:
        started = time.perf_counter()
        matches = await self._bcrypt.check(secret, stored_hash)
        elapsed = time.perf_counter() - started
        # Follows how long bcrypt takes now (load included), for the unknown-key wait.
        previous = self._bcrypt_seconds
        self._bcrypt_seconds = elapsed if previous is None else 0.8 * previous + 0.2 * elapsed
        return matches

    async def _bcrypt_duration(self) -> float:
        if self._bcrypt_seconds is None:
            await self._check(b"calibration", _CALIBRATION_HASH)
        assert self._bcrypt_seconds is not None
        return self._bcrypt_seconds

    async def _touch(self, principal: Principal) -> None:
        await self._database.fetch(_TOUCH, (principal.tenant_id, principal.api_key_id))

    def invalidate(self, key_id: str | None = None) -> None:
        self._epoch += 1
        if key_id is None:
            self._cache.clear()
            return
        for digest, entry in list(self._cache.items()):
            if str(entry.principal.api_key_id) == key_id:
                del self._cache[digest]

    def invalidate_tenant(self, tenant_id: object) -> None:
        """Forget every cached key of one tenant (its account is being deleted)."""
        self._epoch += 1
        for digest, entry in list(self._cache.items()):
            if entry.principal.tenant_id == tenant_id:
                del self._cache[digest]

    async def listen(self, *, retry_seconds: float = 1.0) -> None:
        """Follow revocations until cancelled; reconnects, trusting no cache while disconnected."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._database_url, autocommit=True, connect_timeout=5
                ) as conn:
                    conn.add_notify_handler(lambda notification: self.invalidate(notification.payload))
                    await conn.execute(f"listen {CHANNEL}")
                    self.invalidate()  # anything revoked while nobody was listening
                    while True:
                        sent = time.monotonic()
                        # A slow answer (a busy event loop, a busy server) only lets the trust lapse
                        # until it comes, with the cache kept: the connection is given up (and the
                        # cache emptied) only when it stays silent for DEAD_SECONDS.
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                        async with asyncio.timeout(DEAD_SECONDS):
                            await conn.execute("select 1")
                        # Every revoke committed before the ping was sent has been applied.
                        self._confirmed_at = sent
                        await asyncio.sleep(HEARTBEAT_SECONDS)
            except (psycopg.Error, OSError, TimeoutError) as error:
                logger.warning("API key revocation listener lost its connection (%s); retrying", type(error).__name__)
            finally:
                self._confirmed_at = -float("inf")
                self.invalidate()
            await asyncio.sleep(retry_seconds)

    def close(self) -> None:
        self._bcrypt.close()


def _check_secret(secret: bytes, stored_hash: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, stored_hash)
    except ValueError:  # a stored hash that is not bcrypt: the key cannot be verified, so it is refused
        logger.error("an API key's stored hash is not a valid bcrypt hash")
        return False


def _expired(expires_at: datetime | None, now: float) -> bool:
    return expires_at is not None and expires_at.timestamp() <= now


async def stop_listening(task: asyncio.Task[None], verifier: ApiKeyVerifier) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    verifier.close()
