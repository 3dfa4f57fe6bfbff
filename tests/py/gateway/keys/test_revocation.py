"""Revocation and expiry reach every gateway process within a second, though
each keeps verified keys in a cache (LISTEN/NOTIFY on quarry_api_keys)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.net import free_port
from tests.py.support.processes import running_gateway
from tests.py.support.tokens import JwksServer, TokenFactory

pytestmark = pytest.mark.slow


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
