"""Ingestion throughput and latency, end to end through the public API.

Starts its own database (quarry_bench_ingest), dev auth server, gateway (which
owns the embedded index and the outbox relay) and worker, then:

1. e2e: uploads 500 SciFact abstracts (one document each) plus 3 ten-page PDFs
   through POST /api/documents (8 at a time) and measures chunks/s from the
   first upload until every document is `ready` (indexed);
2. model: embeds the very same chunk texts with the same model in this process
   (batches of 32, the worker idle) - the ceiling e2e can approach;
3. pdf10: upload→ready latency of a single 10-page PDF on an idle worker, 7 runs.

Target: e2e/model >= 0.85.  Last line:
ingest: e2e=… chunks/s model=… chunks/s ratio=0.xx pdf10_p50=…s pdf10_p95=…s
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import tempfile
import textwrap
import time
from pathlib import Path
from types import ModuleType

import psycopg
from _support import PYTHON, REPO_ROOT, dev_env, dev_stack, percentile, server, upload_all

from quarry.dev.database import prepare_database, with_database
from quarry.dev.keys import mint_token
from quarry.dev.settings import DevSettings
from quarry.dev.users import ensure_user, set_plan
from quarry.embedding import DenseEmbedder

DATABASE = "quarry_bench_ingest"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SCIFACT = REPO_ROOT.parent / "shared" / "bench" / "scifact" / "corpus.jsonl"
ABSTRACTS = 500
PDFS = 3
PDF_PAGES = 10
PDF_LATENCY_RUNS = 7


def load_fixture_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_documents", REPO_ROOT / "tests" / "fixtures" / "make_documents.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_corpus() -> list[dict[str, str]]:
    with SCIFACT.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def make_pdf(builder: ModuleType, pages: list[dict[str, str]]) -> bytes:
    streams = []
    for page in pages:
        text = f"{page['title']}. {page['text']}".encode("cp1252", "replace").decode("cp1252")
        streams.append(builder.text_stream(textwrap.wrap(text, 95)[:38]))
    font = b"<< /Font << /F1 3 0 R >> >>"
    return bytes(builder.pdf_with_pages(streams, [font] * len(streams)))


def wait_ready(admin_url: str, ids: list[str], timeout: float = 1800) -> float:
    """Seconds until every document is ready (polled every 0.2 s); fails on a failed one."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select count(*) filter (where status = 'ready'), count(*) filter (where status = 'failed')"
                " from app.documents where id = any(%s::uuid[])",
                (ids,),
            ).fetchone()
            assert row is not None
            if row[1]:
                raise RuntimeError(f"{row[1]} document(s) failed")
            if row[0] == len(ids):
                return time.monotonic()
            time.sleep(0.2)
    raise TimeoutError("documents did not become ready")


def chunk_texts(admin_url: str, ids: list[str]) -> list[str]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute("select text from app.chunks where document_id = any(%s::uuid[])", (ids,)).fetchall()
    return [row[0] for row in rows]


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU time used so far by this machine's processes, grouped by role (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = next(
            (name for key, name in ROLES if key in cmdline),
            None,
        )
        if role:
            totals[role] = totals.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


ROLES = (("-m worker", "worker"), ("uvicorn", "gateway"), ("postgres", "postgres"), ("bench/ingest.py", "bench client"))


def model_throughput(texts: list[str]) -> float:
    embedder = DenseEmbedder()
    embedder.embed(texts[:64])  # warm-up
    started = time.perf_counter()
    embedder.embed(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    corpus = read_corpus()
    builder = load_fixture_builder()
    files = [(f"scifact-{doc['_id']}.txt", f"{doc['title']}\n\n{doc['text']}".encode()) for doc in corpus[:ABSTRACTS]]
    pdf_pages = corpus[ABSTRACTS : ABSTRACTS + (PDFS + PDF_LATENCY_RUNS) * PDF_PAGES]
    pdfs = [make_pdf(builder, pdf_pages[i * PDF_PAGES : (i + 1) * PDF_PAGES]) for i in range(PDFS + PDF_LATENCY_RUNS)]
    files += [(f"report-{i}.pdf", pdfs[i]) for i in range(PDFS)]

    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    admin_url = with_database(ADMIN_SERVER, DATABASE)
    with tempfile.TemporaryDirectory() as workdir:
        env = dev_env(DATABASE, f"{workdir}/dev", f"{workdir}/data")
        settings = DevSettings.from_env(env)
        user = ensure_user(settings.admin_database_url, "bench@example.com")
        set_plan(settings.admin_database_url, user, "enterprise")  # thousands of documents and queries
        token = mint_token(settings, user, "bench@example.com")
        headers = {"Authorization": f"Bearer {token}"}
        with dev_stack(env, settings.gateway.jwks_url) as base, server([PYTHON, "-m", "worker"], env, None):
            # Warm-up: the worker has loaded its model once this document is ready.
            warm = asyncio.run(upload_all(base, headers, [("warm.txt", b"Warm-up document about granite.")]))
            wait_ready(admin_url, warm, timeout=300)

            cpu_before = cpu_seconds_by_role()
            started = time.monotonic()
            ids = asyncio.run(upload_all(base, headers, files))
            finished = wait_ready(admin_url, ids)
            cpu_after = cpu_seconds_by_role()
            used = {role: cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0) for role in cpu_after}
            print("CPU seconds during e2e: " + ", ".join(f"{role} {seconds:.1f}" for role, seconds in used.items()))
            texts = chunk_texts(admin_url, ids)
            e2e = len(texts) / (finished - started)
            print(f"e2e: {len(ids)} documents, {len(texts)} chunks in {finished - started:.1f} s = {e2e:.1f} chunks/s")

            latencies = []
            for pdf in pdfs[PDFS:]:
                uploaded = time.monotonic()
                pdf_id = asyncio.run(upload_all(base, headers, [("ten-pages.pdf", pdf)]))
                latencies.append(wait_ready(admin_url, pdf_id) - uploaded)
            print("pdf10 upload->ready: " + ", ".join(f"{latency:.2f}s" for latency in latencies))

        model = model_throughput(texts)
        print(f"model: {model:.1f} chunks/s (same chunks, batches of 32, this process, worker stopped)")
    ratio = e2e / model
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(
        f"ingest: e2e={e2e:.1f} chunks/s model={model:.1f} chunks/s ratio={ratio:.2f} "
        f"pdf10_p50={p50:.2f}s pdf10_p95={p95:.2f}s"
    )


if __name__ == "__main__":
    main()
