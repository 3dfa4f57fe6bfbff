"""A real uvicorn gateway under a forged-key flood and /openapi.json clients:
the revocation listener stays trusted, bcrypt never queues without bound and
a legitimate tenant's first (uncached) key check stays fast."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quarry.dev.flood import Flood, forged_key
from tests.py.gateway.keys.test_revocation import wait_for_key_cache
from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.net import free_port
from tests.py.support.processes import running_gateway
from tests.py.support.tokens import JwksServer, TokenFactory

# `serial`: asserts latencies, so it runs alone, after the parallel pass (Makefile test-py).
pytestmark = [pytest.mark.slow, pytest.mark.serial]

ATTACKER = "198.51.100.66"
VICTIM = "203.0.113.10"


def lookup_id_of(key: str) -> str:
    return key[8:20]


@pytest.fixture
def proxied_gateway(database: DatabaseUrls, jwks_server: JwksServer, tmp_path: Path) -> Iterator[str]:
    env = gateway_env(database, jwks_server, tmp_path / "data", TRUSTED_PROXY_HEADER="X-Forwarded-For")
    with running_gateway(env, free_port(), tmp_path / "gateway.log") as base:
        wait_for_key_cache(base)
        yield base


def issue_keys(base: str, token: str, count: int) -> list[str]:
    keys = []
    for index in range(count):
        response = httpx.post(
            f"{base}/api/keys", headers={"Authorization": f"Bearer {token}"}, json={"name": f"bot {index}"}
        )
        assert response.status_code == 201, response.text
        keys.append(response.json()["key"])
    return keys


async def first_check_ms(client: httpx.AsyncClient, key: str) -> float:
    started = time.perf_counter()
    response = await client.get("/api/documents", headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": VICTIM})
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    return elapsed


async def watch_key_cache(base: str, stop: asyncio.Event, answers: list[bool]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            answers.append(bool((await client.get("/readyz")).json()["api_key_cache"]))
            await asyncio.sleep(0.05)


def test_a_flood_of_forged_keys_and_openapi_readers_leave_the_listener_and_tenants_alone(
    proxied_gateway: str, admin: Admin, tokens: TokenFactory
) -> None:
    base = proxied_gateway
    tenant = admin.new_user()
    admin.subscribe(tenant, "enterprise", "active")
    token = tokens.es256(tenant)
    *victim_keys, revoked = issue_keys(base, token, 13)
    revoked_id = httpx.get(f"{base}/api/keys", headers={"Authorization": f"Bearer {token}"}).json()["data"][0]["id"]
    assert httpx.delete(f"{base}/api/keys/{revoked_id}", headers={"Authorization": f"Bearer {token}"}).status_code
    revoked_lookup_id = lookup_id_of(revoked)

    async def first_checks(keys: list[str], cache_answers: list[bool] | None = None) -> list[float]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            stop_watching = asyncio.Event()
            watcher = None if cache_answers is None else watch_key_cache(base, stop_watching, cache_answers)
            watching = asyncio.create_task(watcher) if watcher is not None else None
            elapsed = []
            for key in keys:
                elapsed.append(await first_check_ms(client, key))
                await asyncio.sleep(0.2)
            stop_watching.set()
            if watching is not None:
                await watching
        return elapsed

    idle = asyncio.run(first_checks(victim_keys[:6]))
    flood = Flood(int(base.rsplit(":", 1)[1]), address=ATTACKER, lookup_id=revoked_lookup_id)
    flood.start()
    cache_answers: list[bool] = []
    try:
        time.sleep(4.0)  # the interpreter starts, then the attack runs at full strength
        under_attack = asyncio.run(first_checks(victim_keys[6:], cache_answers))
    finally:
        attack_statuses, openapi_statuses = flood.stop()

    assert set(attack_statuses) <= {401, 429}, attack_statuses
    assert attack_statuses[429] > 10 * attack_statuses[401], attack_statuses  # refused without any work
    # Its allowance per address and minute, then held 429s.
    assert set(openapi_statuses) == {200, 429} and openapi_statuses[200] == 30, openapi_statuses
    assert len(cache_answers) > 20 and all(cache_answers), "the revocation listener lost its trust under load"
    idle_ms, attacked_ms = statistics.median(idle), statistics.median(under_attack)
    print(
        f"first key check: idle {idle} ms, under attack {under_attack} ms; attack {attack_statuses},"
        f" openapi {openapi_statuses}, readyz answers {len(cache_answers)}"
    )
    # Without the throttles and the tarpit, 1.4-5.8 s (and ~6 s before them: bcrypt queued without bound).
    assert attacked_ms < 2 * idle_ms + 50, (idle, under_attack)


def test_a_saturated_bcrypt_pool_answers_503_and_one_key_sent_many_times_is_checked_once(
    database: DatabaseUrls, jwks_server: JwksServer, tmp_path: Path, admin: Admin, tokens: TokenFactory
) -> None:
    env = gateway_env(
        database, jwks_server, tmp_path, TRUSTED_PROXY_HEADER="X-Forwarded-For", BCRYPT_THREADS="1", BCRYPT_QUEUE="1"
    )
    with running_gateway(env, free_port(), tmp_path / "gateway.log") as base:
        wait_for_key_cache(base)
        tenant = admin.new_user()
        admin.subscribe(tenant, "enterprise", "active")
        [key] = issue_keys(base, tokens.es256(tenant), 1)

        async def concurrently(requests: list[tuple[str, str]]) -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=len(requests))
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.get(
                            "/api/documents", headers={"Authorization": f"Bearer {k}", "X-Forwarded-For": address}
                        )
                        for k, address in requests
                    )
                )

        # Room for two checks; the same key sent 20 times is one check, so all 20 are served.
        shared = asyncio.run(concurrently([(key, f"203.0.113.{n}") for n in range(20)]))
        assert [response.status_code for response in shared] == [200] * 20

        # 30 distinct forged keys from 30 addresses: two are checked, the rest wait for nothing.
        forged = asyncio.run(concurrently([(forged_key(), f"198.51.100.{n}") for n in range(30)]))
        statuses = Counter(response.status_code for response in forged)
        assert set(statuses) == {401, 503} and statuses[503] >= 20, statuses
        busy = next(response for response in forged if response.status_code == 503)
        assert busy.headers["content-type"] == "application/problem+json"
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["type"] == "https://quarry.dev/problems/unavailable"
