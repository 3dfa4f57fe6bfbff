"""Gateway auth overhead: /api/me (JWT verify + tenant transaction) vs /healthz.

Starts its own database (quarry_bench_auth), dev JWKS server and a single
uvicorn gateway process, then measures from this process over keep-alive
HTTP:
  * latency: 2,000 sequential requests per route, interleaved, after warm-up;
  * throughput: 16 concurrent requests for 3 s per route.
The p50 difference between the routes is what auth and the tenant
transaction add per request (target: <= 2 ms).
"""

from __future__ import annotations

import asyncio
import tempfile
import time

import httpx
from _support import REPO_ROOT, free_port, percentile, server

from quarry.dev.database import prepare_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan

DATABASE = "quarry_bench_auth"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
LATENCY_REQUESTS = 2000
WARMUP_REQUESTS = 300
THROUGHPUT_SECONDS = 3.0
CONCURRENCY = 16


def measure_latency(base: str, headers: dict[str, str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"/healthz": [], "/api/me": []}
    with httpx.Client(base_url=base) as client:
        for index in range(WARMUP_REQUESTS + LATENCY_REQUESTS):
            for path in samples:
                started = time.perf_counter()
                response = client.get(path, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if index >= WARMUP_REQUESTS:
                    samples[path].append(elapsed)
    return samples


async def measure_throughput(base: str, path: str, headers: dict[str, str]) -> float:
    done = 0
    deadline = time.perf_counter() + THROUGHPUT_SECONDS
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                response = await client.get(path, headers=headers)
                response.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done / (time.perf_counter() - started)


def main() -> None:
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    auth_port, gateway_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as dev_dir:
        env = {
            "QUARRY_ENV": "development",
            "QUARRY_DB_NAME": DATABASE,
            "QUARRY_DEV_DIR": dev_dir,
            "SUPABASE_URL": f"http://127.0.0.1:{auth_port}",
            # The throughput phase sends more than an hour's allowance; the cost of the
            # rate-limit check is what bench/quota_overhead.py measures.
            "RATE_LIMITS": "off",
        }
        settings = DevSettings.from_env(env)
        user = ensure_user(settings.admin_database_url, "bench@example.com")
        set_plan(settings.admin_database_url, user, "enterprise")
        token = mint_token(settings, user, "bench@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{gateway_port}"
        python = str(REPO_ROOT / ".venv" / "bin" / "python")
        jwks_ready = f"{settings.gateway.jwks_url}"
        gateway_args = [
            python, "-m", "uvicorn", "gateway.app:create_app", "--factory",
            "--port", str(gateway_port), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        with (
            server([python, "-m", "quarry.dev", "authserver"], env, jwks_ready),
            server(gateway_args, env, f"{base}/readyz"),
        ):
            latency = measure_latency(base, headers)
            healthz_rps = asyncio.run(measure_throughput(base, "/healthz", headers))
            me_rps = asyncio.run(measure_throughput(base, "/api/me", headers))

    rows = []
    for path, samples in latency.items():
        p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
        rps = healthz_rps if path == "/healthz" else me_rps
        rows.append((path, p50, p99, rps))
        print(f"{path:10s} p50={p50:.3f} ms  p99={p99:.3f} ms  throughput={rps:.0f} req/s (c={CONCURRENCY})")
    me_p50, healthz_p50 = percentile(latency["/api/me"], 0.5), percentile(latency["/healthz"], 0.5)
    overhead_p99 = percentile(latency["/api/me"], 0.99) - percentile(latency["/healthz"], 0.99)
    print(f"auth + tenant transaction overhead: p50={me_p50 - healthz_p50:.3f} ms  p99={overhead_p99:.3f} ms")
    print(
        f"auth: overhead={me_p50 - healthz_p50:.3f} ms (p50) me_p50={me_p50:.3f} ms "
        f"healthz_p50={healthz_p50:.3f} ms me_rps={me_rps:.0f}"
    )


if __name__ == "__main__":
    main()
