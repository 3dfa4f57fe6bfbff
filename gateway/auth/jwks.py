"""The Supabase project's signing keys, fetched from its JWKS endpoint.

Keys are cached; an unknown kid triggers a refetch, at most one per
`min_refetch_seconds` however many requests ask (so a flood of tokens with
made-up kids cannot make us hammer the auth server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

logger = logging.getLogger("quarry.gateway.jwks")

# The JWK key type and curve each accepted asymmetric algorithm needs.
ASYMMETRIC_ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", None),
}


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str
    key: Any


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        min_refetch_seconds: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._cache_seconds = cache_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._client = client or httpx.AsyncClient(timeout=5.0)
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, kid: str, algorithm: str) -> SigningKey | None:
        """The key for kid if it exists and fits algorithm, else None."""
        if self._is_stale() or kid not in self._keys:
            await self._refresh(force=kid not in self._keys)
        key = self._keys.get(kid)
        if key is None or key.algorithm != algorithm:
            return None
        return key

    def _is_stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self._cache_seconds

    async def _refresh(self, *, force: bool) -> None:
        started = time.monotonic()
        async with self._lock:
            # Someone else refreshed while we waited: use their result.
            if self._fetched_at is not None and self._fetched_at >= started:
                return
            if self._fetched_at is not None:
                age = time.monotonic() - self._fetched_at
                if force and age < self._min_refetch_seconds:
                    return
                if not force and age <= self._cache_seconds:
                    return
            await self._fetch()

    async def _fetch(self) -> None:
        try:
            response = await self._client.get(self._url)
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as error:
            # Keep serving the keys we have; try again after the refetch interval.
            logger.warning("JWKS fetch from %s failed: %s", self._url, type(error).__name__)
            self._fetched_at = time.monotonic()
            return
        self._keys = keys
        self._fetched_at = time.monotonic()


def _parse_jwks(document: Any) -> dict[str, SigningKey]:
    """The usable signing keys of a JWKS document; ValueError if it is not one."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document")
    keys: dict[str, SigningKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        signing_key = _signing_key(entry)
        if signing_key is not None:
            keys[signing_key.kid] = signing_key
    return keys


def _signing_key(entry: dict[str, Any]) -> SigningKey | None:
    kid, kty = entry.get("kid"), entry.get("kty")
    if not isinstance(kid, str) or entry.get("use", "sig") != "sig":
        return None
    for algorithm, (wanted_kty, wanted_crv) in ASYMMETRIC_ALGORITHMS.items():
        if kty != wanted_kty or (wanted_crv is not None and entry.get("crv") != wanted_crv):
            continue
        if entry.get("alg", algorithm) != algorithm:
            continue
        try:
            return SigningKey(kid=kid, algorithm=algorithm, key=jwt.PyJWK(entry, algorithm).key)
        except jwt.PyJWTError:
            logger.warning("ignoring malformed JWK kid=%s", kid)
            return None
    return None
