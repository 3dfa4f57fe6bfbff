"""Operations, end to end, on a real gateway (uvicorn) and a real worker (`python -m worker`):

- both serve /metrics in Prometheus text format; after traffic the series
  exist with sane values, labelled by route template, never by a raw path or
  a tenant;
- one request id follows an upload from the HTTP response to the log lines
  of the ingest job it deferred (JSON logs);
- the connection budget: with every tenant connection of the gateway busy, a
  request waits DB_POOL_TIMEOUT_MS and gets a 503 problem+json with
  Retry-After, never a hang, and the database never sees more connections
  from the gateway than its budget.

One gateway and one worker for the module, with a small budget (2 tenant
connections, 1 service connection) so that the budget test can exhaust it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from quarry.settings import OpsSettings
from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.net import free_port
from tests.py.support.processes import running_gateway, running_worker, wait_for
from tests.py.support.prometheus import samples, value
from tests.py.support.tokens import JwksServer, KeySet, TokenFactory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "documents"
POOL_SIZE, SERVICE_POOL_SIZE = 2, 1
# The gateway's budget: its two pools, the API-key listener and the outbox listener (embedded index).
BUDGET = OpsSettings(gateway_pool_size=POOL_SIZE, gateway_service_pool_size=SERVICE_POOL_SIZE).gateway_budget(
    relay_in_gateway=True
)
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Processes:
    gateway: str
    worker_metrics: str
    gateway_log: Path
    worker_log: Path


@pytest.fixture(scope="module")
def processes(
    database: DatabaseUrls, jwks_server: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Processes]:
    # A data directory of their own: the embedded index is locked by the gateway that opens it.
    data_dir = tmp_path_factory.mktemp("operations-data")
    logs = tmp_path_factory.mktemp("operations-logs")
    worker_port = free_port()
    env = gateway_env(
        database,
        jwks_server,
        data_dir,
        LOG_FORMAT="json",
        GATEWAY_DB_POOL_SIZE=str(POOL_SIZE),
        GATEWAY_SERVICE_POOL_SIZE=str(SERVICE_POOL_SIZE),
        DB_POOL_TIMEOUT_MS="700",
        WORKER_METRICS_PORT=str(worker_port),
        METRICS_SAMPLE_SECONDS="1",
    )
    gateway_log, worker_log = logs / "gateway.log", logs / "worker.log"
    with running_worker(env, worker_log) as worker, running_gateway(env, free_port(), gateway_log) as base:
        yield Processes(base, f"http://127.0.0.1:{worker_port}", gateway_log, worker_log)
        assert worker.poll() is None, worker_log.read_text()[-3000:]


@pytest.fixture(scope="module")
def tokens(keys: KeySet, jwks_server: JwksServer) -> TokenFactory:
    return TokenFactory(keys=keys, issuer=f"{jwks_server.base_url}/auth/v1")


def test_both_processes_export_their_series_after_traffic(
    processes: Processes, admin: Admin, tokens: TokenFactory
) -> None:
    enterprise = admin.new_user()
    admin.subscribe(enterprise, "enterprise", "active")
    free = admin.new_user()
    headers = {"Authorization": f"Bearer {tokens.es256(enterprise)}"}
    free_headers = {"Authorization": f"Bearer {tokens.es256(free)}"}
    base = processes.gateway
    with httpx.Client(base_url=base, timeout=30) as client:
        upload = client.post(
            "/api/documents", headers=headers, files={"file": ("a.md", b"# Metrics\n\nQuarry exports.")}
        )
        assert upload.status_code == 202, upload.text
        document = upload.json()["id"]
        wait_for(
            lambda: client.get(f"/api/documents/{document}", headers=headers).json()["status"] == "ready",
            timeout=90,
            message="the upload to be ready",
        )
        assert client.post("/api/query", headers=headers, json={"query": "metrics"}).status_code == 200
        assert client.get("/api/documents", headers=headers).status_code == 200
        assert client.get(f"/api/documents/{uuid.uuid4()}", headers=headers).status_code == 404
        assert client.get(f"/no/such/{uuid.uuid4()}").status_code == 404
        assert client.get("/api/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        docx = (FIXTURES / "sample.docx").read_bytes()
        assert client.post("/api/documents", headers=free_headers, files={"file": ("a.docx", docx)}).status_code == 415
        admin.execute(
            """insert into app.rate_limit_windows (tenant_id, subject_id, window_start, requests)
               values (%s, %s, date_trunc('hour', app.clock(), 'UTC'), 50)
               on conflict (tenant_id, subject_id) do update set requests = 50, window_start = excluded.window_start""",
            free,
            free,
        )
        assert client.get("/api/me", headers=free_headers).status_code == 429
        time.sleep(1.1)  # the exposition is rendered at most once a second
        scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    gateway = samples(scrape.text)

    requests = "quarry_http_requests_total"
    assert value(gateway, requests, method="POST", route="/api/documents", status="202") >= 1
    assert value(gateway, requests, method="GET", route="/api/documents/{document_id}", status="200") >= 1
    assert value(gateway, requests, method="GET", route="/api/documents/{document_id}", status="404") == 1
    assert value(gateway, requests, method="POST", route="/api/query", status="200") == 1
    assert value(gateway, requests, route="unmatched", status="404") == 1
    latency = "quarry_http_request_duration_seconds"
    count = value(gateway, f"{latency}_count", method="POST", route="/api/query")
    assert count == 1 and 0 < value(gateway, f"{latency}_sum", method="POST", route="/api/query") < 30
    assert value(gateway, f"{latency}_bucket", method="POST", route="/api/query", le="+Inf") == count
    assert value(gateway, "quarry_auth_failures_total", credential="jwt") == 1
    assert value(gateway, "quarry_quota_refusals_total", limit="formats") == 1
    assert value(gateway, "quarry_rate_limit_refusals_total", limit="requests_per_hour") == 1
    assert value(gateway, "quarry_db_pool_connections", pool="tenant", state="max") == POOL_SIZE
    assert value(gateway, "quarry_db_pool_connections", pool="service", state="max") == SERVICE_POOL_SIZE
    assert value(gateway, "quarry_db_pool_requests_total", pool="tenant") >= 5
    assert value(gateway, "process_resident_memory_bytes") > 0
    # Never a raw path, a tenant or a document id as a label value.
    assert not UUID_TEXT.search(scrape.text)

    wait_for(
        lambda: (
            value(samples(httpx.get(f"{processes.worker_metrics}/metrics").text), "quarry_metrics_samples_total") > 1
        ),
        timeout=10,
        message="the worker to sample the queue",
    )
    worker_text = httpx.get(f"{processes.worker_metrics}/metrics", timeout=10).text
    worker = samples(worker_text)
    ingest = {"task": "documents:ingest", "queue": "enterprise.ingest", "outcome": "succeeded"}
    assert value(worker, "quarry_jobs_total", **ingest) >= 1
    duration = value(worker, "quarry_job_duration_seconds_sum", **ingest)
    assert 0 < duration < 90
    assert value(worker, "quarry_metrics_samples_total", result="ok") >= 1
    assert [name for name, _, _ in worker].count("quarry_outbox_pending") == 1
    assert 0 <= value(worker, "quarry_outbox_lag_seconds") < 3600
    assert value(worker, "quarry_db_pool_connections", pool="tenant", state="max") > 0
    assert not UUID_TEXT.search(worker_text)


def test_a_request_id_follows_an_upload_into_its_ingest_jobs_logs(
    processes: Processes, admin: Admin, tokens: TokenFactory
) -> None:
    tenant = admin.new_user()
    admin.subscribe(tenant, "pro", "active")
    request_id = f"ops-test-{uuid.uuid4().hex[:12]}"
    headers = {"Authorization": f"Bearer {tokens.es256(tenant)}", "X-Request-Id": request_id}
    with httpx.Client(base_url=processes.gateway, timeout=30) as client:
        upload = client.post("/api/documents", headers=headers, files={"file": ("b.md", b"# Trace\n\nOne id.")})
        assert upload.status_code == 202 and upload.headers["x-request-id"] == request_id
        document = upload.json()["id"]
        wait_for(
            lambda: client.get(f"/api/documents/{document}", headers=headers).json()["status"] == "ready",
            timeout=90,
            message="the upload to be ready",
        )
    stored = admin.scalar(
        "select args ->> 'request_id' from procrastinate.procrastinate_jobs where args ->> 'document_id' = %s",
        document,
    )
    assert stored == request_id

    def job_lines() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in processes.worker_log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("request_id") == request_id]

    wait_for(lambda: any("succeeded" in str(line["message"]) for line in job_lines()), timeout=10, message="logs")
    lines = job_lines()
    assert {line.get("task") for line in lines} == {"documents:ingest"}
    assert all(isinstance(line.get("job_id"), int) and line["level"] for line in lines)
    assert not any(str(tenant) in json.dumps(line) for line in lines if line["logger"] == "quarry.worker")


def test_a_request_that_gets_no_connection_in_time_is_a_503_and_the_budget_holds(
    processes: Processes, database: DatabaseUrls, admin: Admin, tokens: TokenFactory
) -> None:
    tenant = admin.new_user()
    admin.subscribe(tenant, "enterprise", "active")
    headers = {"Authorization": f"Bearer {tokens.es256(tenant)}"}
    peak = {"gateway": 0, "tenant": 0}
    sampling = threading.Event()

    def sample() -> None:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            while not sampling.is_set():
                row = conn.execute(
                    """select count(*), count(*) filter (where usename = 'quarry_authenticator')
                       from pg_stat_activity
                       where datname = current_database() and application_name = 'quarry-gateway'"""
                ).fetchone()
                assert row is not None
                peak["gateway"] = max(peak["gateway"], row[0])
                peak["tenant"] = max(peak["tenant"], row[1])
                time.sleep(0.02)

    async def burst(blocker: psycopg.Connection[tuple[object, ...]]) -> list[httpx.Response]:
        """8 listings at once; the lock is let go only once the 6 that found no connection were answered."""
        async with httpx.AsyncClient(base_url=processes.gateway, timeout=60) as client:
            calls = [asyncio.create_task(client.get("/api/documents", headers=headers)) for _ in range(8)]
            for answered in asyncio.as_completed(calls, timeout=30):
                answered_while_locked.append((await answered).status_code)
                if len(answered_while_locked) == 6:
                    break
            await asyncio.to_thread(blocker.commit)
            return list(await asyncio.gather(*calls))

    answered_while_locked: list[int] = []
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with psycopg.connect(database.admin_url) as blocker:
            # Every listing now waits on this lock while holding one of the gateway's 2 tenant connections.
            blocker.execute("lock table app.documents in access exclusive mode")
            responses = asyncio.run(burst(blocker))
    finally:
        sampling.set()
        sampler.join()

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 200] + [503] * 6, statuses
    for refused in (response for response in responses if response.status_code == 503):
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["type"].endswith("/database-unavailable")
    # Nothing hangs: the six were answered while the lock still held the other two.
    assert answered_while_locked == [503] * 6, answered_while_locked
    assert peak["tenant"] == POOL_SIZE, peak
    assert peak["gateway"] <= BUDGET, peak
    # The gateway still serves once the lock is gone, and counted what it refused.
    assert httpx.get(f"{processes.gateway}/api/documents", headers=headers).status_code == 200
    time.sleep(1.1)
    gateway = samples(httpx.get(f"{processes.gateway}/metrics").text)
    assert value(gateway, "quarry_db_pool_timeouts_total", pool="tenant") == 6
    assert value(gateway, "quarry_http_requests_total", route="/api/documents", status="503") == 6


def test_metrics_are_counted_per_address_and_can_require_a_token(make_gateway: object) -> None:
    """In-process gateways: /metrics readers per address (held 429s), and METRICS_TOKEN."""
    limited = make_gateway(METRICS_READS_PER_MINUTE="2")  # type: ignore[operator]
    assert [limited.get("/metrics").status_code for _ in range(3)] == [200, 200, 429]
    token = "m" * 32
    guarded = make_gateway(METRICS_TOKEN=token)  # type: ignore[operator]
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
