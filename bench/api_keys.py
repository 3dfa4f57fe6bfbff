"""API-key authentication cost: GET /api/documents with a JWT, with a key on a
cold cache (bcrypt) and with a key on a warm cache, same gateway, same run.

Starts its own database (quarry_bench_keys), the dev JWKS server and one
uvicorn gateway (rate limits on, caller on Enterprise).  Creates 96 keys
through POST /api/keys; 95 are used once each (each first use is a cold
verification: lookup + bcrypt cost 10), one is used 2,000 times interleaved
with 2,000 JWT requests after a warm-up.
Target: warm key <= JWT + 1 ms at p50.
"""

from __future__ import annotations

import tempfile
import time

import httpx
from _support import dev_env, dev_stack, percentile

from quarry.dev.database import prepare_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan

DATABASE = "quarry_bench_keys"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
COLD_KEYS = 95
WARM_REQUESTS = 2000
WARMUP_REQUESTS = 200


def timed_get(client: httpx.Client, authorization: str) -> float:
    started = time.perf_counter()
    response = client.get("/api/documents", headers={"Authorization": authorization})
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def main() -> None:
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    with tempfile.TemporaryDirectory() as dev_dir, tempfile.TemporaryDirectory() as data_dir:
        env = {**dev_env(DATABASE, dev_dir, data_dir), "RATE_LIMITS": "on"}  # the real request path
        settings = DevSettings.from_env(env)
        user = ensure_user(settings.admin_database_url, "bench@example.com")
        set_plan(settings.admin_database_url, user, "enterprise")
        jwt = f"Bearer {mint_token(settings, user, 'bench@example.com')}"
        with dev_stack(env, settings.gateway.jwks_url) as base, httpx.Client(base_url=base, timeout=30) as client:
            keys = []
            for index in range(COLD_KEYS + 1):
                response = client.post("/api/keys", headers={"Authorization": jwt}, json={"name": f"bench {index}"})
                response.raise_for_status()
                keys.append(f"Bearer {response.json()['key']}")
            warm_key, cold_keys = keys[0], keys[1:]
            for _ in range(WARMUP_REQUESTS):
                timed_get(client, jwt)
                timed_get(client, warm_key)
            jwt_samples, warm_samples = [], []
            for _ in range(WARM_REQUESTS):
                jwt_samples.append(timed_get(client, jwt))
                warm_samples.append(timed_get(client, warm_key))
            cold_samples = [timed_get(client, key) for key in cold_keys]

    rows = {"jwt": jwt_samples, "key (warm cache)": warm_samples, "key (cold: bcrypt)": cold_samples}
    for label, samples in rows.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"{label:20s} p50={p50:.3f} ms  p99={p99:.3f} ms  n={len(samples)}")
    delta = percentile(warm_samples, 0.5) - percentile(jwt_samples, 0.5)
    cold_p50 = percentile(cold_samples, 0.5)
    print(f"api_keys: delta={delta:.3f} ms (warm key minus JWT, p50) cold_p50={cold_p50:.1f} ms target delta <= 1 ms")


if __name__ == "__main__":
    main()
