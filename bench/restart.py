"""A database restart under load: what it costs and how fast everything recovers.

Starts a disposable PostgreSQL cluster of its own (initdb on a spare port, so
the restart disturbs nothing else), migrates it, and runs the dev auth
server, one gateway (owning the embedded index and the outbox relay) and one
worker under the dev supervisor.  Four clients upload small documents (each
with an Idempotency-Key, retried on any ambiguous outcome, about five a
second in all: what this worker sustains) and two search, for 10 s; then the
database is restarted (fast shutdown, down for 2 s) while they go on, and
they run 10 s more.  It reports:

* uploads/s and queries/s that succeeded before, during (from the shutdown
  until the database accepts connections again) and after;
* recover_upload_s: from the database accepting connections again to the
  first successful upload that completed after it;
* outbox_drain_s: from then until the outbox holds nothing recorded before
  it (the relay caught up; new changes keep arriving from the load);
* server_errors: responses with a 5xx other than 503 (503s carry Retry-After
  and are counted apart).

Targets: recover_upload_s <= 2, outbox_drain_s <= 10, server_errors = 0.
Last line: restart: recover_upload_s=… outbox_drain_s=… server_errors=…
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
from _support import PYTHON, REPO_ROOT, cluster_urls, dev_env, free_port

from quarry.dev.cluster import DisposableCluster
from quarry.dev.database import prepare_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.supervisor import Supervisor
from quarry.dev.users import ensure_user, set_plan

DATABASE = "quarry_bench_restart"
UPLOADERS = 4
SEARCHERS = 2
UPLOAD_PAUSE_SECONDS = 0.8
PHASE_SECONDS = 10.0
DOWN_SECONDS = 2.0
TEXT = "Granite benches were split with wedges and feathers, then hauled down the incline. " * 6


@dataclass
class Log:
    """Every finished request: (completed at, kind, status)."""

    events: list[tuple[float, str, int]] = field(default_factory=list)
    no_retry_after: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, response: httpx.Response) -> None:
        with self.lock:
            self.events.append((time.monotonic(), kind, response.status_code))
            if response.status_code == 503 and "retry-after" not in response.headers:
                self.no_retry_after += 1


def uploader(base: str, token: str, log: Log, stop: threading.Event, number: int) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            key = str(uuid.uuid4())
            while not stop.is_set():
                try:
                    response = client.post(
                        "/api/documents",
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                        files={"file": (f"bench-{number}-{sequence}.txt", f"{number}.{sequence} {TEXT}".encode())},
                    )
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                log.add("upload", response)
                if response.status_code != 503:
                    break
                time.sleep(0.2)
            stop.wait(UPLOAD_PAUSE_SECONDS)


def searcher(base: str, token: str, log: Log, stop: threading.Event) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            try:
                response = client.post(
                    "/api/query", headers={"Authorization": f"Bearer {token}"}, json={"query": "granite", "top_k": 5}
                )
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            log.add("query", response)
            stop.wait(0.1)


def rate(log: Log, kind: str, start: float, end: float) -> float:
    ok = sum(1 for at, what, status in log.events if what == kind and status < 300 and start <= at < end)
    return ok / max(end - start, 1e-9)


def main() -> None:
    with DisposableCluster(free_port()) as cluster, tempfile.TemporaryDirectory() as scratch:
        prepare_database(cluster.url(), DATABASE)
        env = {
            **dev_env(DATABASE, f"{scratch}/dev", f"{scratch}/data"),
            **cluster_urls(cluster, DATABASE),
            "RATE_LIMITS": "on",
        }
        settings = DevSettings.from_env(env)
        user = ensure_user(settings.admin_database_url, "restart@example.com")
        set_plan(settings.admin_database_url, user, "enterprise")
        token = mint_token(settings, user, "restart@example.com")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        supervisor = Supervisor(cwd=REPO_ROOT)
        uvicorn = [PYTHON, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--port", str(port)]
        logs = Path(scratch)
        supervisor.add("dev auth server", [PYTHON, "-m", "quarry.dev", "authserver"], env=env, log=logs / "auth.log")
        uvicorn += ["--no-access-log", "--log-level", "warning"]
        supervisor.add("gateway", uvicorn, env=env, log=logs / "gateway.log")
        supervisor.add("worker", [PYTHON, "-m", "worker"], env=env, log=logs / "worker.log")
        try:
            deadline = time.monotonic() + 120
            while True:
                supervisor.poll()
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway did not become ready")
                time.sleep(0.2)
            log, stop = Log(), threading.Event()
            clients = [threading.Thread(target=uploader, args=(base, token, log, stop, n)) for n in range(UPLOADERS)]
            clients += [threading.Thread(target=searcher, args=(base, token, log, stop)) for _ in range(SEARCHERS)]
            began = time.monotonic()
            for client in clients:
                client.start()
            time.sleep(PHASE_SECONDS)
            with psycopg.connect(cluster.url(DATABASE)) as conn:
                row = conn.execute("select count(*) from app.outbox").fetchone()
                pending_at_shutdown = row[0] if row else 0
            down = time.monotonic()
            back = cluster.restart("fast", down_seconds=DOWN_SECONDS)
            with psycopg.connect(cluster.url(DATABASE)) as conn:
                row = conn.execute("select now()").fetchone()
                assert row is not None
                back_at: datetime = row[0]
            drained_at = None
            while time.monotonic() < back + PHASE_SECONDS or drained_at is None:
                supervisor.poll()
                if drained_at is None:
                    with psycopg.connect(cluster.url(DATABASE)) as conn:
                        left = conn.execute("select count(*) from app.outbox where created_at <= %s", (back_at,))
                        row = left.fetchone()
                    if row is not None and row[0] == 0:
                        drained_at = time.monotonic()
                if time.monotonic() > back + 120:
                    break
                time.sleep(0.1)
            end = time.monotonic()
            stop.set()
            for client in clients:
                client.join(timeout=60)
            exits = {name: child.exits for name, child in supervisor.children.items() if child.exits}
        finally:
            supervisor.stop()

    statuses = Counter(status for _, _, status in log.events)
    server_errors = sum(count for status, count in statuses.items() if status >= 500 and status != 503)
    first_success = min(
        (at for at, kind, status in log.events if kind == "upload" and status == 202 and at >= back), default=None
    )
    recover = (first_success - back) if first_success is not None else float("inf")
    drain = (drained_at - back) if drained_at is not None else float("inf")
    for phase, start, finish in (("before", began, down), ("during", down, back), ("after", back, end)):
        uploads, queries = rate(log, "upload", start, finish), rate(log, "query", start, finish)
        print(f"{phase:7s} {finish - start:5.1f} s: uploads {uploads:5.1f}/s  queries {queries:5.1f}/s")
    print(f"responses: {dict(sorted(statuses.items()))}; 503 without Retry-After: {log.no_retry_after}")
    print(
        f"database down {back - down:.1f} s (fast shutdown, {DOWN_SECONDS:.0f} s off);"
        f" outbox changes pending at shutdown: {pending_at_shutdown}; process exits: {exits or 'none'}"
    )
    print(
        f"restart: recover_upload_s={recover:.2f} outbox_drain_s={drain:.2f} server_errors={server_errors}"
        " target recover_upload_s <= 2, outbox_drain_s <= 10, server_errors = 0"
    )


if __name__ == "__main__":
    main()
