"""What quota and rate-limit checks add to a gateway request.

Starts its own database (quarry_bench_quota), the dev JWKS server and two
uvicorn gateways on it: one as shipped, one with RATE_LIMITS=off.  The route
is POST /api/query (mode sparse, so the model does not drown the figure),
which pays both checks: the hourly rate limit (one statement before the
request) and the daily query quota (the trigger on the query log).  Phases
alternate, 10 rounds of 200 sequential requests each:
  * checked:   gateway as shipped, quota trigger enabled;
  * unchecked: gateway with RATE_LIMITS=off, quota trigger disabled.
The caller is on Enterprise (unlimited queries, 5,000 requests/hour) so no
request is refused, but every check still runs and counts.  The same is done
for GET /api/documents, which pays the rate limit only.
Target: <= 1 ms added at p50.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
from _support import PYTHON, dev_env, free_port, percentile, server

from quarry.dev.database import prepare_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan

DATABASE = "quarry_bench_quota"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ROUNDS = 10
REQUESTS_PER_ROUND = 200
WARMUP_REQUESTS = 200
QUERY = {"query": "granite quarry on the northern ridge", "mode": "sparse", "top_k": 10}


def gateway(env: dict[str, str], data_dir: str, **overrides: str) -> tuple[list[str], dict[str, str], str]:
    port = free_port()
    args = [
        PYTHON, "-m", "uvicorn", "gateway.app:create_app", "--factory",
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return args, {**env, "QUARRY_DATA_DIR": data_dir, **overrides}, f"http://127.0.0.1:{port}"


def timed(call: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    response = call(*args, **kwargs)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def main() -> None:
    admin_url = prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    with tempfile.TemporaryDirectory() as dev_dir, tempfile.TemporaryDirectory() as data_dir:
        env = {**dev_env(DATABASE, dev_dir, data_dir), "RATE_LIMITS": "on"}
        settings = DevSettings.from_env(env)
        user = ensure_user(settings.admin_database_url, "bench@example.com")
        headers = {"Authorization": f"Bearer {mint_token(settings, user, 'bench@example.com')}"}
        set_plan(admin_url, user, "enterprise")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            checked_args, checked_env, checked = gateway(env, f"{data_dir}/checked")
            unchecked_args, unchecked_env, unchecked = gateway(env, f"{data_dir}/unchecked", RATE_LIMITS="off")
            with (
                server([PYTHON, "-m", "quarry.dev", "authserver"], env, settings.gateway.jwks_url),
                server(checked_args, checked_env, f"{checked}/readyz"),
                server(unchecked_args, unchecked_env, f"{unchecked}/readyz"),
                httpx.Client(base_url=checked, headers=headers, timeout=60) as with_checks,
                httpx.Client(base_url=unchecked, headers=headers, timeout=60) as without_checks,
            ):
                for client in (with_checks, without_checks):  # wait for the query model, then warm up
                    client.post("/api/query", json={"query": "warm up"}).raise_for_status()
                    for _ in range(WARMUP_REQUESTS):
                        client.post("/api/query", json=QUERY).raise_for_status()
                        client.get("/api/documents").raise_for_status()
                samples: dict[tuple[str, str], list[float]] = {}
                for _ in range(ROUNDS):
                    for label, client in (("checked", with_checks), ("unchecked", without_checks)):
                        trigger = "enable" if label == "checked" else "disable"
                        admin.execute(f"alter table app.query_log {trigger} trigger query_log_meter")
                        query = samples.setdefault(("query", label), [])
                        listing = samples.setdefault(("documents", label), [])
                        for _ in range(REQUESTS_PER_ROUND):
                            query.append(timed(client.post, "/api/query", json=QUERY))
                            listing.append(timed(client.get, "/api/documents"))
                admin.execute("alter table app.query_log enable trigger query_log_meter")
                counted = admin.execute(
                    "select used from app.usage_counters where tenant_id = %s and quota = 'queries_per_day'", (user,)
                ).fetchone()

    if counted is None or counted[0] < ROUNDS * REQUESTS_PER_ROUND:
        raise SystemExit("the checked phases were not metered: the comparison would be meaningless")
    added: dict[str, tuple[float, float]] = {}
    for route, path in (("query", "POST /api/query (sparse)"), ("documents", "GET /api/documents")):
        with_, without = samples[(route, "checked")], samples[(route, "unchecked")]
        p50_with, p99_with = percentile(with_, 0.5), percentile(with_, 0.99)
        p50_without, p99_without = percentile(without, 0.5), percentile(without, 0.99)
        added[route] = (p50_with - p50_without, p99_with - p99_without)
        print(
            f"{path:26s} checked p50={p50_with:.3f} p99={p99_with:.3f} ms | "
            f"unchecked p50={p50_without:.3f} p99={p99_without:.3f} ms | added p50={added[route][0]:.3f} ms"
        )
    print(f"rate limit only (GET /api/documents): added={added['documents'][0]:.3f} ms (p50)")
    print(f"quota_overhead: added={added['query'][0]:.3f} ms (p50) added_p99={added['query'][1]:.3f} ms target <= 1 ms")


if __name__ == "__main__":
    main()
