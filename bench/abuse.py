"""A legitimate tenant's latency while others abuse the service (OWASP API4).

Starts a throwaway PostgreSQL cluster, the dev auth server, one uvicorn
gateway and one worker (as shipped: rate limits on, the default failure
throttles, bcrypt pool and extraction budget; the gateway trusts
X-Forwarded-For, one hop, so that the benchmark can play the proxy and give
each client its own address).

The legitimate tenant (Enterprise, address 198.51.100.7) alternates a JWT
search (POST /api/query, hybrid) and the first, uncached check of a fresh API
key (GET /api/documents), first on an idle service, then while, all at once:

  (a) forged API keys: 400 concurrent requests (keep-alive connections, each
      sending its next request as soon as it is answered), half on a revoked
      key's lookup id and half on random ones, all with valid checksums, from
      one attacker address (quarry.dev.flood);
  (b) 50 concurrent /openapi.json readers, the same way;
  (c) the hostile-file suite (quarry.dev.hostile: 60 MiB of JSON, ZIP formats
      with XML at the cap, deeply nested and huge-page PDFs, a CSV of one
      60 MiB line, HTML of 2 million nested tags), uploaded concurrently by a
      Pro account (so that every format reaches the parsers; Free would refuse
      most at upload), until each is refused or has ended; refused for having
      too many uploads in flight, the attacker waits Retry-After and sends the
      file again.

The attackers run in processes of their own at the lowest CPU priority (their
CPU would be their own machines' in a real attack; this one has two cores), so
they neither slow the client that measures nor take the service's CPU.  The gateway's RSS and the
worker's (its parse children included) are sampled every 100 ms.
Targets: legitimate p99 under attack <= 2x idle (the worse of search and key
check); gateway RSS growth <= 128 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
from _support import PYTHON, cluster_urls, dev_env, free_port, percentile, server

from quarry.dev.cluster import DisposableCluster
from quarry.dev.database import prepare_database
from quarry.dev.flood import Flood
from quarry.dev.hostile import MIB, write_hostile_files
from quarry.dev.keys import mint_token
from quarry.dev.memory import PeakRss
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan
from quarry.priority import lower_cpu_priority

DATABASE = "quarry_bench_abuse"
LEGIT_ADDRESS = "198.51.100.7"
SEARCHES = 400
KEY_CHECKS = 45
PACE_SECONDS = 0.12
FORGERS = 400
READERS = 50
ATTACKER_ADDRESS = "203.0.113.66"
# On a 2-core machine the attacking processes would otherwise take CPU that on a real
# deployment is the attacker's own: they run at the lowest priority, as if elsewhere.
ATTACKER_NICENESS = 19
ATTACK_SECONDS_MAX = 150.0
QUERY = {"query": "granite quarry stone", "mode": "hybrid", "top_k": 10}
LEGIT_TEXT = (
    "Granite is quarried in large blocks. The quarry face is cut with wire saws and the stone is "
    "split along its natural grain before it is dressed for building. "
) * 40


# --- the hostile uploads (a process of their own) ---------------------------------------------


Outcomes = multiprocessing.Queue  # of (file name, HTTP status, body)


def hostile_uploads(base: str, token: str, files: dict[str, str], results: Outcomes[tuple[str, int, str]]) -> None:
    lower_cpu_priority(ATTACKER_NICENESS, own_session=True)

    async def upload(client: httpx.AsyncClient, name: str, path: str) -> None:
        # A determined attacker: refused for having too many uploads in flight, it waits as told
        # and sends the file again, so that every file of the suite does reach the parsers.
        while True:
            with open(path, "rb") as content:  # noqa: ASYNC230 (the attacker's own process; blocking reads are fine)
                try:
                    response = await client.post(
                        "/api/documents",
                        headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": "203.0.113.250"},
                        files={"file": (name, content)},
                    )
                except httpx.HTTPError as error:
                    results.put((name, 0, repr(error)))
                    return
            body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
            if response.status_code == 429 and body.get("limit") == "uploads_in_flight":
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            outcome = body.get("id") if response.status_code == 202 else body.get("detail", response.text[:200])
            results.put((name, response.status_code, str(outcome)))
            return

    async def upload_all() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            await asyncio.gather(*(upload(client, name, path) for name, path in files.items()))

    asyncio.run(upload_all())


# --- the legitimate tenant -------------------------------------------------------------------


def legit_round(client: httpx.Client, jwt: str, keys: list[str], searches: int) -> tuple[list[float], list[float]]:
    """searches JWT searches and len(keys) first key checks, interleaved and paced."""
    search_ms, key_ms = [], []
    every = max(1, searches // max(1, len(keys)))
    pending = list(keys)
    for index in range(searches):
        started = time.perf_counter()
        response = client.post("/api/query", headers={"Authorization": jwt}, json=QUERY)
        search_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        if index % every == 0 and pending:
            key = pending.pop()
            started = time.perf_counter()
            response = client.get("/api/documents", headers={"Authorization": f"Bearer {key}"})
            key_ms.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
        time.sleep(PACE_SECONDS)
    return search_ms, key_ms


def mint_keys(client: httpx.Client, jwt: str, count: int) -> list[str]:
    keys = []
    for index in range(count):
        response = client.post("/api/keys", headers={"Authorization": jwt}, json={"name": f"legit {index}"})
        response.raise_for_status()
        keys.append(response.json()["key"])
    return keys


def wait_terminal(admin_url: str, ids: list[str], deadline: float) -> dict[str, str]:
    """The documents' statuses (with the reason of a failure) once all have ended, or at the deadline.

    Read from the database: the attacker's own polling would spend its hourly allowance."""
    statuses: dict[str, str] = {}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "select id::text, status::text, error_reason from app.documents where id::text = any(%s)", (ids,)
            ).fetchall()
            statuses = {row[0]: row[1] + (f": {row[2]}" if row[2] else "") for row in rows}
            if len(statuses) == len(ids) and all(s.startswith(("failed", "ready")) for s in statuses.values()):
                break
            time.sleep(1.0)
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default="flood,hostile", help="flood (forged keys, /openapi.json), hostile")
    attacks = set(parser.parse_args().attacks.split(","))
    scratch_dir = tempfile.TemporaryDirectory(prefix="quarry-abuse-")
    scratch = Path(scratch_dir.name)
    print("writing the hostile files ...", flush=True)
    files = {name: str(path) for name, path in write_hostile_files(scratch / "hostile").items()}
    with DisposableCluster(free_port()) as cluster:
        prepare_database(cluster.url(), DATABASE)
        port = free_port()
        env = {
            **dev_env(DATABASE, str(scratch / "dev"), str(scratch / "data")),
            **cluster_urls(cluster, DATABASE),
            "RATE_LIMITS": "on",
            "TRUSTED_PROXY_HEADER": "X-Forwarded-For",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("UPLOADS_IN_FLIGHT_PER_TENANT")  # the shipped cap on uploads in flight (or the caller's environment)
        settings = DevSettings.from_env(env)
        legit = ensure_user(settings.admin_database_url, "legit@example.com")
        set_plan(settings.admin_database_url, legit, "enterprise")
        attacker = ensure_user(settings.admin_database_url, "attacker@example.com")
        set_plan(settings.admin_database_url, attacker, "pro")
        legit_jwt = f"Bearer {mint_token(settings, legit, 'legit@example.com')}"
        attacker_token = mint_token(settings, attacker, "attacker@example.com")
        base = f"http://127.0.0.1:{port}"
        gateway_args = [
            PYTHON, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--port", str(port),
            "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        with (
            server(
                [PYTHON, "-m", "quarry.dev", "authserver"], env, settings.gateway.jwks_url, log=scratch / "auth.log"
            ),
            server(gateway_args, env, f"{base}/readyz", timeout=120, log=scratch / "gateway.log") as gateway,
            server([PYTHON, "-m", "worker"], env, None, log=scratch / "worker.log") as worker,
            httpx.Client(base_url=base, timeout=120, headers={"X-Forwarded-For": LEGIT_ADDRESS}) as client,
        ):
            document = client.post(
                "/api/documents",
                headers={"Authorization": legit_jwt},
                files={"file": ("granite.txt", LEGIT_TEXT.encode())},
            )
            document.raise_for_status()
            keys = mint_keys(client, legit_jwt, 2 * KEY_CHECKS)
            attacker_keys = mint_keys(client, f"Bearer {attacker_token}", 1)
            attacker_key_id = client.get("/api/keys", headers={"Authorization": f"Bearer {attacker_token}"}).json()
            revoked = attacker_key_id["data"][0]
            client.delete(f"/api/keys/{revoked['id']}", headers={"Authorization": f"Bearer {attacker_token}"})
            lookup_id = attacker_keys[0].split("_")[2]
            deadline = time.monotonic() + 120
            while (
                client.get(f"/api/documents/{document.json()['id']}", headers={"Authorization": legit_jwt}).json()[
                    "status"
                ]
                != "ready"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the legitimate document was not ingested")
                time.sleep(0.5)
            legit_round(client, legit_jwt, [], 30)  # warm-up: model, pools, caches

            print("idle ...", flush=True)
            idle_search, idle_key = legit_round(client, legit_jwt, keys[:KEY_CHECKS], SEARCHES)

            sampler = PeakRss(gateway.pid, worker.pid, interval=0.1)
            with sampler.running():
                results: multiprocessing.Queue[tuple[str, int, str]] = multiprocessing.Queue()
                flood = Flood(
                    port, address=ATTACKER_ADDRESS, lookup_id=lookup_id, forgers=FORGERS, readers=READERS,
                    niceness=ATTACKER_NICENESS,
                )  # fmt: skip
                uploader = multiprocessing.Process(target=hostile_uploads, args=(base, attacker_token, files, results))
                print("under attack ...", flush=True)
                attack_started = time.monotonic()
                if "flood" in attacks:
                    flood.start()
                if "hostile" in attacks:
                    uploader.start()
                attack_search, attack_key = legit_round(client, legit_jwt, keys[KEY_CHECKS:], SEARCHES)
                if "hostile" in attacks:
                    uploader.join(timeout=max(0.0, ATTACK_SECONDS_MAX - (time.monotonic() - attack_started)))
                uploads = [results.get(timeout=5) for _ in range(results.qsize())]
                ids = [outcome for _, status, outcome in uploads if status == 202]
                statuses = wait_terminal(settings.admin_database_url, ids, attack_started + ATTACK_SECONDS_MAX)
                # The legitimate tenant still works after the hostile files are done.
                after_search, _ = legit_round(client, legit_jwt, [], 20)
                forgers_saw, readers_saw = flood.stop() if "flood" in attacks else (Counter(), Counter())
                if uploader.is_alive():
                    uploader.kill()
            attack_seconds = time.monotonic() - attack_started

    for label, samples in (
        ("search idle", idle_search),
        ("search under attack", attack_search),
        ("search after", after_search),
        ("key check idle", idle_key),
        ("key check under attack", attack_key),
    ):
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"{label:24s} p50={p50:8.1f} ms  p99={p99:8.1f} ms  n={len(samples)}")
    for name, status, text in sorted(uploads):
        outcome = statuses.get(text, "?") if status == 202 else text[:120]
        print(f"  {name:22s} {status}  {outcome}")
    print(
        f"attack lasted {attack_seconds:.0f} s; gateway RSS {sampler.gateway_base / MIB:.0f}"
        f" → peak {sampler.gateway_peak / MIB:.0f} MiB, worker (with parse children)"
        f" {sampler.worker_base / MIB:.0f} → peak {sampler.worker_peak / MIB:.0f} MiB"
    )
    search_ratio = percentile(attack_search, 0.99) / percentile(idle_search, 0.99)
    key_ratio = percentile(attack_key, 0.99) / percentile(idle_key, 0.99)
    print(f"p99 ratio: search {search_ratio:.2f}, key check {key_ratio:.2f}")
    print(f"forged-key requests got {dict(forgers_saw)}; /openapi.json readers got {dict(readers_saw)}")
    scratch_dir.cleanup()
    print(
        f"abuse: legit_p99_ratio={max(search_ratio, key_ratio):.2f} key_check_p99_ms={percentile(attack_key, 0.99):.1f}"
        f" rss_growth_mb={sampler.gateway_growth / 1e6:.0f} worker_rss_growth_mb={sampler.worker_growth / 1e6:.0f}"
        " target ratio <= 2, gateway growth <= 128 MB"
    )


if __name__ == "__main__":
    main()
