"""Database restarts and killed processes lose nothing, answer no 500, and leave nothing stuck.

Against a disposable PostgreSQL cluster this test starts itself (so restarting
it disturbs nothing else), with the real gateway (owning the embedded index
and the outbox relay) and the real worker under a supervisor, as an operator
would run them.  While clients upload (each upload with an Idempotency-Key,
retried on every ambiguous outcome) and search, the database is restarted
(fast and immediate shutdowns) and the worker and the gateway are SIGKILLed,
several times.  Then:

- no response was a 5xx other than 503, and every 503 carried Retry-After
  (one outage outlasts the gateway's wait for a connection, so there are some);
- no process exited except those killed;
- every upload ended 202 exactly once (0 duplicates despite the retries), and
  every document is ready within 30 s of the database's last return;
- the index holds exactly the chunks in Postgres.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from quarry.dev.cluster import DisposableCluster
from quarry.dev.database import prepare_database
from quarry.dev.supervisor import Supervisor
from quarry.dev.users import set_plan
from quarry.index.edge import EdgeIndex
from quarry.paths import REPO_ROOT
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.net import free_port
from tests.py.support.processes import wait_for
from tests.py.support.tokens import JwksServer, TokenFactory

pytestmark = pytest.mark.slow

DATABASE = "quarry_faults"
UPLOADERS = 4
UPLOAD_PAUSE_SECONDS = 0.8  # about 5 uploads a second in all: what this 2-core worker keeps up with
SEARCHERS = 2
READY_AFTER_SECONDS = 30.0
SECTION = (
    "The quarry's granite was cut in long benches; each bench was split with wedges and feathers, "
    "then hauled down the incline to the finishing sheds. "
)


@dataclass
class Observations:
    statuses: Counter[int] = field(default_factory=Counter)
    missing_retry_after: int = 0
    created: dict[str, str] = field(default_factory=dict)  # idempotency key -> document id
    replays: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code == 503 and "retry-after" not in response.headers:
                self.missing_retry_after += 1


@dataclass
class Stack:
    cluster: DisposableCluster
    supervisor: Supervisor
    base: str
    token: str
    tenant: uuid.UUID
    data_dir: Path


@pytest.fixture
def stack(tmp_path: Path, jwks_server: JwksServer, tokens: TokenFactory) -> Iterator[Stack]:
    with DisposableCluster(free_port()) as cluster:
        admin_url = prepare_database(cluster.url(), DATABASE)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            tenant = conn.execute(
                "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)"
                " values (gen_random_uuid(), 'authenticated', 'authenticated', 'faults@example.com', '{}', '{}')"
                " returning id"
            ).fetchone()[0]  # type: ignore[index]
        set_plan(admin_url, tenant, "enterprise")
        port = free_port()
        urls = DatabaseUrls(admin_url=admin_url, gateway_url=cluster.url(DATABASE, "quarry_gateway"))
        env = gateway_env(urls, jwks_server, tmp_path / "data", LOG_LEVEL="WARNING")
        gateway = [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--port", str(port)]
        supervisor = Supervisor(cwd=REPO_ROOT)
        supervisor.add("gateway", [*gateway, "--no-access-log"], env=env, log=tmp_path / "gateway.log")
        supervisor.add("worker", [sys.executable, "-m", "worker"], env=env, log=tmp_path / "worker.log")
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            supervisor.poll()
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=90, message="the gateway")
        try:
            yield Stack(cluster, supervisor, base, tokens.es256(tenant), tenant, tmp_path / "data")
        finally:
            supervisor.stop()


def uploader(stack: Stack, seen: Observations, stop: threading.Event, number: int) -> None:
    """Uploads one new document after another; an ambiguous outcome is retried with the same key."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.base, timeout=30) as client:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            key = f"uploader-{number}-{sequence}-{uuid.uuid4()}"
            body = f"Document {number}.{sequence}. {SECTION * 3}".encode()
            for _ in range(200):
                try:
                    response = client.post(
                        "/api/documents",
                        headers={**headers, "Idempotency-Key": key},
                        files={"file": (f"doc-{number}-{sequence}.txt", body)},
                    )
                except httpx.TransportError:  # reset, refused (the gateway was killed): outcome unknown
                    time.sleep(0.2)
                    continue
                seen.saw(response)
                if response.status_code == 202:
                    with seen.lock:
                        previous = seen.created.setdefault(key, response.json()["id"])
                        if previous != response.json()["id"]:
                            seen.failures.append(f"{key} answered two documents")
                        if response.headers.get("idempotent-replayed") == "true":
                            seen.replays += 1
                    stop.wait(UPLOAD_PAUSE_SECONDS)
                    break
                if response.status_code not in (503, 429):
                    with seen.lock:
                        seen.failures.append(f"upload {key}: {response.status_code} {response.text[:200]}")
                    break
                time.sleep(0.2)


def searcher(stack: Stack, seen: Observations, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.base, timeout=30) as client:
        while not stop.is_set():
            try:
                response = client.post("/api/query", headers=headers, json={"query": "granite benches", "top_k": 5})
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            seen.saw(response)
            stop.wait(0.2)


def test_restarts_and_kills_lose_nothing(stack: Stack) -> None:
    seen = Observations()
    stop = threading.Event()
    clients = [threading.Thread(target=uploader, args=(stack, seen, stop, n)) for n in range(UPLOADERS)]
    clients += [threading.Thread(target=searcher, args=(stack, seen, stop)) for _ in range(SEARCHERS)]
    for client in clients:
        client.start()

    def pause(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            stack.supervisor.poll()
            time.sleep(0.1)

    kills = Counter[str]()
    back = time.monotonic()
    try:
        pause(4)
        back = stack.cluster.restart("fast", down_seconds=2)
        pause(4)
        stack.supervisor.kill("worker")
        kills["worker"] += 1
        pause(3)
        back = stack.cluster.restart("immediate", down_seconds=2)
        pause(4)
        stack.supervisor.kill("gateway")
        kills["gateway"] += 1
        pause(5)
        back = stack.cluster.restart("fast", down_seconds=3)
        stack.supervisor.kill("worker", signal.SIGKILL)
        kills["worker"] += 1
        pause(4)
        back = stack.cluster.restart("immediate", down_seconds=1)
        pause(4)
        stack.supervisor.kill("gateway")
        kills["gateway"] += 1
        pause(4)
        # Longer than the gateway waits for a connection (5 s): requests answer 503 meanwhile.
        back = stack.cluster.restart("fast", down_seconds=7)
        pause(4)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)

    print(f"statuses {dict(seen.statuses)}, uploads {len(seen.created)}, replays {seen.replays}")
    assert seen.failures == []
    server_errors = {status: count for status, count in seen.statuses.items() if status >= 500 and status != 503}
    assert server_errors == {}, f"5xx other than 503: {server_errors} (all: {dict(seen.statuses)})"
    assert seen.statuses[503] > 0, "the long outage should have been answered with 503s"
    assert seen.missing_retry_after == 0
    assert len(seen.created) >= 20, f"too little load got through: {dict(seen.statuses)}"

    # Every accepted document ends ready soon after the database's last return, exactly once.
    ids = sorted(set(seen.created.values()))
    assert len(ids) == len(seen.created), "one document answered two keys"
    admin = stack.cluster.url(DATABASE)

    def statuses() -> Counter[str]:
        with psycopg.connect(admin) as conn:
            rows = conn.execute("select status::text from app.documents where id = any(%s::uuid[])", (ids,)).fetchall()
        return Counter(row[0] for row in rows)

    def all_ready() -> bool:
        stack.supervisor.poll()
        return statuses() == Counter({"ready": len(ids)})

    wait_for(all_ready, timeout=READY_AFTER_SECONDS - (time.monotonic() - back), message=f"ready: {statuses()}")
    with psycopg.connect(admin) as conn:
        total = conn.execute("select count(*) from app.documents where tenant_id = %s", (stack.tenant,)).fetchone()
        chunk_ids = {row[0] for row in conn.execute("select id from app.chunks where tenant_id = %s", (stack.tenant,))}
    assert total is not None and total[0] == len(ids), "a retried upload created a duplicate"

    # No process exited but those killed.
    for name, child in stack.supervisor.children.items():
        assert child.exits == [-signal.SIGKILL] * kills[name], (name, child.exits)

    # The index holds exactly the chunks in Postgres.
    stack.supervisor.stop()
    index = EdgeIndex(stack.data_dir / "index")
    try:
        indexed = set()
        for document_id in ids:
            indexed |= index.document_point_ids(stack.tenant, uuid.UUID(document_id))
    finally:
        index.close()
    assert indexed == chunk_ids
