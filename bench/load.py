"""100 concurrent clients across 1,000 tenants: search, list and upload, within the connection budget.

Set-up is bench/search_latency.py's (reused, not copied): 500,000 chunks
across 1,000 tenants (500 each) in Postgres and the embedded Qdrant Edge
index, in a database of its own (quarry_bench_load); on this machine that
load takes several minutes (the script prints how long).  `--reuse` keeps the
database and index of a previous run (in .data/quarry_bench_load) and skips
it, resetting the rate-limit windows and daily counters that run used.
Tenants' plans: 70 % Free, 25 % Pro, 5 % Enterprise (hourly rate limits on,
so a 429 is an intended refusal, never an error).

Then the dev auth server, one gateway (pools as shipped: GATEWAY_DB_POOL_SIZE
10 + GATEWAY_SERVICE_POOL_SIZE 4) and one worker (which ingests the uploads;
at niceness 10, standing in for a machine of its own), and 100 concurrent
clients, each on its own keep-alive connection (HTTP/1.1 written by hand: an
HTTP library would cost the 2 shared cores more than the gateway), for a
bounded time (`--seconds`, 60; `--clients` to find the concurrency where
the target holds), each pausing between requests as an app or a person
would (exponentially, 1 s on average; `--think-ms 0` sends back to back,
which measures the gateway's saturation, not its latency): every request a
random tenant and a random operation, search 70 % (POST /api/query, hybrid,
SciFact claims), list 20 %
(GET /api/documents), upload 10 % (POST /api/documents, a SciFact abstract).
pg_stat_activity is sampled every 50 ms for the connections of the gateway
and the worker (application_name quarry-gateway / quarry-worker).

Prints per-operation p50/p99, the statuses, and the peak number of database
connections against the configured total (README "Connection budget").
Targets: 0 errors other than intended 429s, search p99 <= 200 ms,
connections never above the configured total.  Last line:
load: search_p99=… ms list_p99=… ms upload_p99=… ms errors=… db_conns_peak=… (budget=… rate_limited=…)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import search_latency
from _support import PYTHON, REPO_ROOT, dev_env, dev_stack, percentile, server

from quarry.dev.database import prepare_database, with_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import set_plan
from quarry.settings import OpsSettings, Settings

DATABASE = "quarry_bench_load"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
REUSE_DIR = REPO_ROOT / ".data" / DATABASE
CLIENTS = 100
SECONDS = 60.0
THINK_MS = 1000.0  # a client pauses (exponentially, this on average) between requests, as an app or a person does
OPERATIONS = (("search", 0.7), ("list", 0.2), ("upload", 0.1))
PLANS = (("free", 0.70), ("pro", 0.25), ("enterprise", 0.05))
BOUNDARY = "quarry-load-boundary"
IDLE_SECONDS = 4.0


class Client:
    """One keep-alive HTTP/1.1 connection to the gateway, opened again when uvicorn has closed it as idle."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is not None and time.monotonic() - self.last_used > IDLE_SECONDS:
            await self.close()  # uvicorn closes a keep-alive connection idle for 5 s
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        try:
            return await self._exchange(method, path, headers, body)
        finally:
            self.last_used = time.monotonic()

    async def _exchange(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the gateway closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def multipart(name: str, content: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def run_clients(
    port: int,
    tokens: list[str],
    queries: list[str],
    uploads: list[bytes],
    seconds: float,
    think_seconds: float,
    clients: int = CLIENTS,
) -> tuple[dict[str, list[float]], Counter[tuple[str, int | str]]]:
    latencies: dict[str, list[float]] = {name: [] for name, _ in OPERATIONS}
    statuses: Counter[tuple[str, int | str]] = Counter()
    deadline = time.perf_counter() + seconds
    names = [name for name, _ in OPERATIONS]
    weights = [weight for _, weight in OPERATIONS]

    async def client(seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 (load mix, not secrets)
        connection = Client(port)
        try:
            while time.perf_counter() < deadline:
                operation = rng.choices(names, weights)[0]
                headers = {"Authorization": f"Bearer {rng.choice(tokens)}"}
                if operation == "search":
                    body = json.dumps({"query": rng.choice(queries)}).encode()
                    call = ("POST", "/api/query", {**headers, "Content-Type": "application/json"}, body)
                elif operation == "list":
                    call = ("GET", "/api/documents?limit=20", headers, b"")
                else:
                    body = multipart(f"load-{uuid.uuid4().hex[:8]}.txt", rng.choice(uploads))
                    content_type = f"multipart/form-data; boundary={BOUNDARY}"
                    call = ("POST", "/api/documents", {**headers, "Content-Type": content_type}, body)
                started = time.perf_counter()
                try:
                    status, _ = await connection.request(*call)
                except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                    statuses[(operation, type(error).__name__)] += 1
                    await connection.close()
                    continue
                latencies[operation].append((time.perf_counter() - started) * 1000)
                statuses[(operation, status)] += 1
                if think_seconds:
                    await asyncio.sleep(rng.expovariate(1 / think_seconds))
        finally:
            await connection.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, statuses


def gateway_figures(base: str) -> dict[str, float]:
    """From the gateway's /metrics: its CPU seconds and its tenant pool's hand-outs, waits and timeouts."""
    import httpx

    time.sleep(1.1)  # the exposition is refreshed once a second
    text = httpx.get(f"{base}/metrics", timeout=10).text
    wanted = {
        "cpu": "process_cpu_seconds_total ",
        "wait": 'quarry_db_pool_wait_seconds_total{pool="tenant"} ',
        "handed": 'quarry_db_pool_requests_total{pool="tenant"} ',
        "timeouts": 'quarry_db_pool_timeouts_total{pool="tenant"} ',
    }
    figures = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        for name, prefix in wanted.items():
            if line.startswith(prefix):
                figures[name] = float(line.rsplit(" ", 1)[1])
    return figures


def ok_or_intended(status: int | str) -> bool:
    """2xx, or a 429 (a plan's rate limit: an intended refusal); anything else is an error."""
    return isinstance(status, int) and (status < 300 or status == 429)


def sample_connections(admin_url: str, stop: threading.Event, peak: dict[str, int]) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while not stop.is_set():
            rows = conn.execute(
                "select application_name, count(*) from pg_stat_activity where datname = current_database()"
                " and application_name in ('quarry-gateway', 'quarry-worker') group by 1"
            ).fetchall()
            counts = {str(name): int(count) for name, count in rows}
            for name, count in (*counts.items(), ("total", sum(counts.values()))):
                peak[name] = max(peak.get(name, 0), count)
            time.sleep(0.05)


def set_up(admin_url: str, data_dir: Path, tenants: int) -> None:
    started = time.monotonic()
    tenant_ids = search_latency.create_tenants(admin_url, tenants)
    index = search_latency.open_index(data_dir)
    try:
        search_latency.load(admin_url, index, tenant_ids, search_latency.vocabulary())
    finally:
        index.close()
    rng = random.Random(17)  # noqa: S311
    for tenant in tenant_ids:
        plan = rng.choices([name for name, _ in PLANS], [weight for _, weight in PLANS])[0]
        if plan != "free":
            set_plan(admin_url, tenant, plan)
    print(f"set-up: {tenants} tenants, {tenants * search_latency.CHUNKS_PER_TENANT} chunks in "
          f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip


def reset_meters(admin_url: str) -> None:
    """A reused database starts metered as a fresh one: an earlier run's hourly windows and daily
    queries would otherwise turn this run's requests into 429s and lighten its load."""
    with psycopg.connect(admin_url) as conn:
        conn.execute("delete from app.rate_limit_windows")
        conn.execute("update app.usage_counters set used = 0 where quota in ('queries_per_day', 'documents_per_month')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=search_latency.TENANTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent clients (the target is set at 100)")
    parser.add_argument("--reuse", action="store_true", help=f"reuse the database and index in {REUSE_DIR}")
    parser.add_argument(
        "--think-ms", type=float, default=THINK_MS, help="each client's mean pause between requests (0: none)"
    )
    args = parser.parse_args()
    admin_url = with_database(ADMIN_SERVER, DATABASE)
    reuse = args.reuse and (REUSE_DIR / "index").exists()
    if not reuse:
        shutil.rmtree(REUSE_DIR, ignore_errors=True)
        prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    with tempfile.TemporaryDirectory() as workdir:
        env = dev_env(DATABASE, f"{workdir}/dev", str(REUSE_DIR))
        env.update({"RATE_LIMITS": "on", "WORKER_METRICS_PORT": "0"})
        settings = DevSettings.from_env(env)
        if reuse:
            reset_meters(admin_url)
        else:
            set_up(admin_url, REUSE_DIR, args.tenants)
        with psycopg.connect(admin_url) as conn:
            tenants = conn.execute("select id, email from auth.users order by email").fetchall()
        tokens = [mint_token(settings, tenant, email) for tenant, email in tenants]
        queries = search_latency.scifact_queries()
        corpus = (search_latency.SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:200]
        uploads = [json.loads(line)["text"].encode() for line in corpus]
        ops = OpsSettings.from_env(env, production=False)
        service = Settings.from_env(env)
        budget = ops.gateway_budget(relay_in_gateway=service.relay_in_gateway) + ops.worker_budget(
            service.worker_concurrency, relay_in_gateway=service.relay_in_gateway
        )
        peak: dict[str, int] = {}
        stop = threading.Event()
        worker = ["nice", "-n", "10", PYTHON, "-m", "worker"]
        with dev_stack(env, settings.gateway.jwks_url, ready_timeout=180) as base, server(worker, env, None):
            port = int(base.rsplit(":", 1)[1])
            # The query model is warm and the worker is up before the clock starts.
            asyncio.run(run_clients(port, tokens[:5], queries, uploads, 3.0, 0.0))
            with psycopg.connect(admin_url, autocommit=True) as conn:
                while conn.execute("select count(*) from procrastinate.procrastinate_workers").fetchone() == (0,):
                    time.sleep(0.2)
            sampler = threading.Thread(target=sample_connections, args=(admin_url, stop, peak))
            sampler.start()
            before = gateway_figures(base)
            try:
                latencies, statuses = asyncio.run(
                    run_clients(port, tokens, queries, uploads, args.seconds, args.think_ms / 1000, args.clients)
                )
            finally:
                stop.set()
                sampler.join()
            after = gateway_figures(base)
    requests = sum(statuses.values())
    rate_limited = sum(count for (_, status), count in statuses.items() if status == 429)
    errors = sum(
        count
        for (_, status), count in statuses.items()
        if not (isinstance(status, int) and status < 300) and status != 429
    )
    print(f"{args.clients} clients (mean pause {args.think_ms:.0f} ms), {len(tenants)} tenants, {args.seconds:.0f} s: "
          f"{requests} requests ({requests / args.seconds:.0f}/s)")  # fmt: skip
    for name, values in latencies.items():
        if values:
            low, high = percentile(values, 0.5), percentile(values, 0.99)
            print(f"  {name:6s} n={len(values):6d} p50={low:7.1f} ms p99={high:7.1f} ms")
    print(
        "  statuses: "
        + ", ".join(f"{op} {status}: {count}" for (op, status), count in sorted(statuses.items(), key=str))
    )
    print(f"  database connections: peak {peak.get('total', 0)} (gateway {peak.get('quarry-gateway', 0)}, "
          f"worker {peak.get('quarry-worker', 0)}); configured total {budget}")  # fmt: skip
    used = {name: after[name] - before[name] for name in after}
    print(f"  gateway: {used['cpu'] / args.seconds:.2f} CPU cores busy on average; a request waited "
          f"{1000 * used['wait'] / max(used['handed'], 1):.1f} ms for a tenant connection on average "
          f"({used['handed']:.0f} handed out, {used['timeouts']:.0f} pool timeouts)")  # fmt: skip
    print("targets: errors = 0 (429s are intended), search p99 <= 200 ms, peak <= configured total "
          "(2 cores shared with other work: indicative)")  # fmt: skip

    def p99(name: str) -> float:
        return percentile(latencies[name], 0.99) if latencies[name] else float("nan")

    print(
        f"load: search_p99={p99('search'):.0f} ms list_p99={p99('list'):.0f} ms upload_p99={p99('upload'):.0f} ms "
        f"errors={errors} db_conns_peak={peak.get('total', 0)} (budget={budget} rate_limited={rate_limited})"
    )


if __name__ == "__main__":
    main()
