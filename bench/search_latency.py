"""Search latency at scale, through the HTTP gateway.

Loads 500,000 chunks across 1,000 tenants (500 each): rows in Postgres (for
hydration) and points in the vector index — the embedded Qdrant Edge shard,
or a Qdrant server when QDRANT_URL is set.  Dense vectors are synthetic unit
vectors and BM25 vectors come from synthetic texts built from SciFact's
vocabulary; the queries are real SciFact claims embedded by the real model
in the gateway.  Then, through POST /api/query (hybrid, top_k 10):

* concurrency 1: 300 queries, p50/p95/p99 of the client-measured total, with
  the server's own split (embed / index / hydrate);
* concurrency 16: throughput over 10 s.

Targets here: p50 <= 15 ms and p99 <= 50 ms at concurrency 1.  Last line:
search_latency: p50=… p95=… p99=… ms (c=1) qps_c16=…
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg
from _support import REPO_ROOT, dev_env, dev_stack, percentile

from quarry.dev.database import prepare_database, with_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import set_plan
from quarry.documents.chunking import chunk_id
from quarry.index.base import IndexPoint, VectorIndex

DATABASE = "quarry_bench_search"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SCIFACT = REPO_ROOT.parent / "shared" / "bench" / "scifact"
TENANTS = 1000
CHUNKS_PER_TENANT = 500
QUERY_TENANTS = 50
SEQUENTIAL_QUERIES = 300
WARM_UP_QUERIES = 20
CONCURRENCY = 16
THROUGHPUT_SECONDS = 10.0
BATCH = 2000


def vocabulary() -> list[str]:
    words: set[str] = set()
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            words.update(word.strip(".,;:()[]").lower() for word in json.loads(line)["text"].split())
    return sorted(word for word in words if word.isalpha() and len(word) > 3)


def scifact_queries() -> list[str]:
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def create_tenants(admin_url: str, count: int) -> list[uuid.UUID]:
    tenants = [uuid.uuid4() for _ in range(count)]
    with (
        psycopg.connect(admin_url) as conn,
        conn.cursor().copy("copy auth.users (id, email, aud, role) from stdin") as copy,
    ):
        for index, tenant in enumerate(tenants):
            copy.write_row((tenant, f"tenant-{index}@example.com", "authenticated", "authenticated"))
    return tenants


def load(admin_url: str, index: VectorIndex, tenants: list[uuid.UUID], words: list[str]) -> None:
    """Postgres rows with COPY (as the owner) and index points in batches; one document per tenant."""
    from qdrant_edge import Bm25

    bm25 = Bm25()
    rng = np.random.default_rng(7)
    created = datetime.now(UTC)
    started = time.monotonic()
    with psycopg.connect(admin_url) as conn:
        with conn.cursor().copy(
            "copy app.documents (tenant_id, id, title, mime_type, status, chunk_count) from stdin"
        ) as copy:
            documents = {tenant: uuid.uuid4() for tenant in tenants}
            for tenant, document in documents.items():
                copy.write_row((tenant, document, "synthetic.txt", "text/plain", "ready", CHUNKS_PER_TENANT))
        conn.commit()
        pending: list[tuple[uuid.UUID, IndexPoint]] = []
        buffer = io.StringIO()
        for tenant in tenants:
            for ordinal in range(CHUNKS_PER_TENANT):
                text = " ".join(random.choices(words, k=40))  # noqa: S311 (synthetic data)
                vector = rng.standard_normal(384).astype(np.float32)
                vector /= np.linalg.norm(vector)
                sparse = bm25.embed_document(text)
                chunk = chunk_id(tenant, documents[tenant], ordinal)  # what app.chunks' check requires
                pending.append(
                    (
                        tenant,
                        IndexPoint(
                            chunk, documents[tenant], vector.tolist(), list(sparse.indices), list(sparse.values),
                            "upload", "text/plain", created, ordinal,
                        ),
                    )
                )  # fmt: skip
                buffer.write(
                    f"{tenant}\t{chunk}\t{documents[tenant]}\t{ordinal}\t{text}\t5\tsynthetic\t{{0}}\t{{}}\t{{}}\n"
                )
            if len(pending) >= BATCH:
                flush(conn, index, pending, buffer)
                pending, buffer = [], io.StringIO()
        flush(conn, index, pending, buffer)
    print(f"loaded {len(tenants) * CHUNKS_PER_TENANT} chunks in {time.monotonic() - started:.0f} s", flush=True)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("vacuum analyze app.documents, app.chunks")  # steady state, not a fresh bulk load
    started = time.monotonic()
    index.optimize()
    print(f"optimized the index in {time.monotonic() - started:.0f} s", flush=True)


def flush(
    conn: psycopg.Connection, index: VectorIndex, pending: list[tuple[uuid.UUID, IndexPoint]], buffer: io.StringIO
) -> None:
    by_tenant: dict[uuid.UUID, list[IndexPoint]] = {}
    for tenant, point in pending:
        by_tenant.setdefault(tenant, []).append(point)
    for tenant, points in by_tenant.items():
        index.upsert(tenant, points)
    with conn.cursor().copy(
        "copy app.chunks (tenant_id, id, document_id, ordinal, text, token_count, embedding_model,"
        " dense, sparse_indices, sparse_values) from stdin"
    ) as copy:
        copy.write(buffer.getvalue())
    conn.commit()


def open_index(data_dir: Path) -> VectorIndex:
    if os.environ.get("QDRANT_URL"):
        from quarry.index.server import ServerIndex

        return ServerIndex(os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY"))
    from quarry.index.edge import EdgeIndex

    return EdgeIndex(data_dir / "index")


def sequential(base: str, tokens: list[str], queries: list[str]) -> list[dict[str, float]]:
    """One keep-alive connection and the stdlib client: the load generator adds as little as it can."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    samples = []
    try:
        for i in range(SEQUENTIAL_QUERIES + WARM_UP_QUERIES):
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}", "Content-Type": "application/json"}
            body = json.dumps({"query": queries[i % len(queries)]})
            started = time.perf_counter()
            connection.request("POST", "/api/query", body, headers)
            response = connection.getresponse()
            payload = response.read()
            total = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"query failed: {response.status} {payload[:200]!r}")
            if i >= WARM_UP_QUERIES:
                answer = json.loads(payload)
                samples.append({"total": total, **answer["timings_ms"], "server": answer["latency_ms"]})
    finally:
        connection.close()
    return samples


async def throughput(base: str, tokens: list[str], queries: list[str]) -> float:
    done = 0
    deadline = time.perf_counter() + THROUGHPUT_SECONDS
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
                response = await client.post("/api/query", headers=headers, json={"query": queries[i % len(queries)]})
                response.raise_for_status()
                done += 1
                i += CONCURRENCY

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=TENANTS, help="tenants to load (500 chunks each)")
    tenant_count = parser.parse_args().tenants
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    admin_url = with_database(ADMIN_SERVER, DATABASE)
    with tempfile.TemporaryDirectory() as workdir:
        data_dir = Path(workdir) / "data"
        env = dev_env(DATABASE, f"{workdir}/dev", str(data_dir))
        if os.environ.get("QDRANT_URL"):
            env["INDEX_BACKEND"] = "server"
        settings = DevSettings.from_env(env)
        tenants = create_tenants(admin_url, tenant_count)
        index = open_index(data_dir)
        try:
            load(admin_url, index, tenants, vocabulary())
        finally:
            index.close()
        for tenant in tenants[:QUERY_TENANTS]:
            set_plan(admin_url, tenant, "pro")  # unlimited queries: the throughput phase sends hundreds each
        tokens = [
            mint_token(settings, tenant, f"tenant-{i}@example.com") for i, tenant in enumerate(tenants[:QUERY_TENANTS])
        ]
        queries = scifact_queries()
        with dev_stack(env, settings.gateway.jwks_url, ready_timeout=120) as base:
            samples = sequential(base, tokens, queries)
            qps = asyncio.run(throughput(base, tokens, queries))
    backend = "qdrant server" if os.environ.get("QDRANT_URL") else "qdrant edge (embedded)"
    print(f"{tenant_count * CHUNKS_PER_TENANT} chunks, {tenant_count} tenants, {backend}, hybrid top_k=10")
    for part in ("total", "server", "embed", "index", "hydrate"):
        values = [sample[part] for sample in samples]
        print(
            f"  {part:8s} p50={percentile(values, 0.5):6.2f} p95={percentile(values, 0.95):6.2f} "
            f"p99={percentile(values, 0.99):6.2f} ms (c=1)"
        )
    print(f"  throughput at c={CONCURRENCY}: {qps:.0f} queries/s; targets: p50 <= 15 ms, p99 <= 50 ms (c=1)")
    totals = [sample["total"] for sample in samples]
    print(
        f"search_latency: p50={percentile(totals, 0.5):.2f} p95={percentile(totals, 0.95):.2f} "
        f"p99={percentile(totals, 0.99):.2f} ms (c=1) qps_c16={qps:.0f}"
    )


if __name__ == "__main__":
    main()
