"""Revocation and expiry reach every gateway process within a second, though
each keeps verified keys in a cache (LISTEN/NOTIFY on quarry_api_keys)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.auth import api_keys
from gateway.auth.api_keys import ApiKeyVerifier, stop_listening
from gateway.auth.throttles import WindowThrottle
from quarry.db import TenantDatabase
from tests.py.support.admin import Admin
from tests.py.support.api import Api, new_key
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.net import free_port
from tests.py.support.processes import running_gateway
from tests.py.support.tokens import JwksServer, TokenFactory

# `serial`: asserts latencies, so it runs alone, after the parallel pass (Makefile test-py).
pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest.fixture
def two_gateways(database: DatabaseUrls, jwks_server: JwksServer, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with (
        running_gateway(gateway_env(database, jwks_server, tmp_path / "a"), free_port(), tmp_path / "a.log") as first,
        running_gateway(gateway_env(database, jwks_server, tmp_path / "b"), free_port(), tmp_path / "b.log") as second,
    ):
        for base in (first, second):
            wait_for_key_cache(base)
        yield first, second


def wait_for_key_cache(base: str) -> None:
    """Until the gateway's revocation listener is up, it verifies every key afresh (nothing to test)."""
    deadline = time.monotonic() + 10
    while not httpx.get(f"{base}/readyz").json().get("api_key_cache"):
        assert time.monotonic() < deadline, "the revocation listener did not connect"
        time.sleep(0.05)


def status(base: str, key: str) -> int:
    return httpx.get(f"{base}/api/documents", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def seconds_until_refused(base: str, key: str, limit: float = 5.0) -> float:
    started = time.monotonic()
    while status(base, key) != 401:
        assert time.monotonic() - started < limit, "the key is still accepted"
        time.sleep(0.02)
    return time.monotonic() - started


def issue(base: str, token: str, **fields: str) -> dict[str, str]:
    response = httpx.post(
        f"{base}/api/keys", headers={"Authorization": f"Bearer {token}"}, json={"name": "bot", **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def test_a_revoke_reaches_the_other_gateways_cache_within_a_second(
    two_gateways: tuple[str, str], admin: Admin, tokens: TokenFactory
) -> None:
    first, second = two_gateways
    tenant = admin.new_user()
    admin.subscribe(tenant, "pro", "active")
    token = tokens.es256(tenant)
    issued = issue(first, token)
    key = issued["key"]
    assert status(first, key) == 200 and status(second, key) == 200

    # A change the caches are not told about: both keep answering from memory, proof they cache.
    other_hash = bcrypt.hashpw(b"another secret", bcrypt.gensalt(4)).decode()
    admin.execute("update app.api_keys set secret_hash = %s where id = %s", other_hash, issued["id"])
    assert status(first, key) == 200 and status(second, key) == 200

    revoked = httpx.delete(f"{first}/api/keys/{issued['id']}", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 204
    assert seconds_until_refused(second, key) < 1.0
    assert status(first, key) == 401


def test_an_expiry_ends_a_cached_key_on_time(two_gateways: tuple[str, str], admin: Admin, tokens: TokenFactory) -> None:
    first, second = two_gateways
    tenant = admin.new_user()
    admin.subscribe(tenant, "pro", "active")
    expires = datetime.now(UTC) + timedelta(seconds=3)
    key = issue(first, tokens.es256(tenant), expires_at=expires.isoformat())["key"]
    assert status(second, key) == 200

    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()))
    assert seconds_until_refused(second, key) < 1.0


async def seconds_until_trusted(verifier: ApiKeyVerifier, *, limit: float) -> float:
    started = time.monotonic()
    while not verifier.cache_trusted:
        assert time.monotonic() - started < limit, "the revocation listener is not trusted"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


class SlowLink:
    """A TCP proxy to Postgres whose answers can be held back by `delay` seconds."""

    def __init__(self, upstream_port: int) -> None:
        self.delay = 0.0
        self.connections = 0
        self._upstream_port = upstream_port

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: bool) -> None:
            while data := await reader.read(65536):
                if held and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
            writer.close()

        await asyncio.gather(
            pump(client_reader, server_writer, held=False),
            pump(server_reader, client_writer, held=True),
            return_exceptions=True,
        )

    async def close(self) -> None:
        self._server.close()


def test_slow_heartbeats_lapse_the_trust_but_keep_the_cache_and_the_connection(
    owner: Api, database: DatabaseUrls, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = new_key(owner)
    hashed: list[bytes] = []
    real_check = api_keys._check_secret

    def counted(secret: bytes, stored_hash: bytes) -> bool:
        hashed.append(secret)
        return real_check(secret, stored_hash)

    monkeypatch.setattr(api_keys, "_check_secret", counted)

    async def scenario() -> None:
        link = SlowLink(int(conninfo_to_dict(database.gateway_url).get("port") or 5432))
        listener_url = make_conninfo(database.gateway_url, host="127.0.0.1", port=await link.start())
        tenant_database = TenantDatabase.connect(database.tenant_url, database.gateway_url)
        await tenant_database.open()
        clients = WindowThrottle(limit=100, window_seconds=60, max_keys=100, refusal="refused")
        verifier = ApiKeyVerifier(tenant_database, listener_url, clients=clients)
        listener = asyncio.create_task(verifier.listen())
        try:
            await seconds_until_trusted(verifier, limit=10)
            await verifier.verify(key, "203.0.113.1")
            assert len(hashed) == 1

            link.delay = 1.5  # every ping answered after TRUST_SECONDS, as on a starved loop or server
            await asyncio.sleep(1.2)
            assert not verifier.cache_trusted, "a revoke could be missed: trusted without an answer in time"
            await asyncio.sleep(3.0)
            link.delay = 0.0
            assert await seconds_until_trusted(verifier, limit=3.0) < 3.0
            await verifier.verify(key, "203.0.113.1")
            assert len(hashed) == 1, "the cache was emptied: the key was hashed again"
            assert link.connections == 1, "the listener gave up a connection that was only slow"
        finally:
            await stop_listening(listener, verifier)
            await tenant_database.close()
            await link.close()

    asyncio.run(scenario())
