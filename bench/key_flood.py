"""A legitimate tenant's first (uncached) API-key check, idle and under a flood of
forged keys: 400 concurrent requests from another client address (half on a revoked
key's lookup id, half on random ones) and 50 concurrent /openapi.json readers.

Starts its own database (quarry_bench_key_flood), the dev JWKS server and one uvicorn
gateway with TRUSTED_PROXY_HEADER=X-Forwarded-For, so attacker and victim have
different addresses.  Each sample is a key used for the first time (lookup + bcrypt
cost 10), sequential, from the victim's address.  Also polls /readyz: the revocation
listener must stay trusted throughout.
Target: victim p99 under the flood <= 2x idle p99.
"""

from __future__ import annotations

import tempfile
import time

import httpx
from _support import dev_env, dev_stack, percentile

from quarry.dev.database import prepare_database
from quarry.dev.flood import Flood
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan

DATABASE = "quarry_bench_key_flood"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SAMPLES = 40
ATTACKER, VICTIM = "198.51.100.66", "203.0.113.10"


def first_checks(client: httpx.Client, keys: list[str], cache_trusted: list[bool]) -> list[float]:
    samples = []
    for key in keys:
        started = time.perf_counter()
        response = client.get("/api/documents", headers={"Authorization": key, "X-Forwarded-For": VICTIM})
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        cache_trusted.append(client.get("/readyz").json()["api_key_cache"])
        time.sleep(0.05)
    return samples


def main() -> None:
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    with tempfile.TemporaryDirectory() as dev_dir, tempfile.TemporaryDirectory() as data_dir:
        env = {**dev_env(DATABASE, dev_dir, data_dir), "TRUSTED_PROXY_HEADER": "X-Forwarded-For"}
        settings = DevSettings.from_env(env)
        user = ensure_user(settings.admin_database_url, "bench@example.com")
        set_plan(settings.admin_database_url, user, "enterprise")
        jwt = {"Authorization": f"Bearer {mint_token(settings, user, 'bench@example.com')}"}
        with dev_stack(env, settings.gateway.jwks_url) as base, httpx.Client(base_url=base, timeout=60) as client:
            keys = []
            for index in range(2 * SAMPLES + 1):
                response = client.post("/api/keys", headers=jwt, json={"name": f"bench {index}"})
                response.raise_for_status()
                keys.append((response.json()["id"], f"Bearer {response.json()['key']}"))
            revoked_id, revoked = keys.pop()
            client.delete(f"/api/keys/{revoked_id}", headers=jwt).raise_for_status()
            cold = [key for _, key in keys]
            trusted: list[bool] = []
            idle = first_checks(client, cold[:SAMPLES], trusted)
            flood = Flood(int(base.rsplit(":", 1)[1]), address=ATTACKER, lookup_id=revoked[15:27])
            flood.start()
            try:
                time.sleep(4.0)  # the flood's interpreter starts and reaches full strength
                attacked = first_checks(client, cold[SAMPLES:], trusted)
            finally:
                forged, reads = flood.stop()

    for label, samples in (("idle", idle), ("under flood", attacked)):
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"first key check, {label:11s} p50={p50:.1f} ms  p99={p99:.1f} ms  n={len(samples)}")
    print(f"flood answers: forged keys {dict(forged)}, /openapi.json {dict(reads)}")
    ratio = percentile(attacked, 0.99) / percentile(idle, 0.99)
    print(
        f"key_flood: p99_ratio={ratio:.2f} idle_p99={percentile(idle, 0.99):.1f} ms"
        f" flood_p99={percentile(attacked, 0.99):.1f} ms cache_trusted={all(trusted)} target ratio <= 2"
    )


if __name__ == "__main__":
    main()
