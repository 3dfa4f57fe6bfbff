"""Export throughput and the worker's memory: 10,000 documents / 50,000 chunks, then twice as much.

A database of its own and a temporary data directory.  One Enterprise tenant
gets DOCUMENTS processed documents (original, text, CHUNKS_PER_DOCUMENT
chunks each), made directly in Postgres as the worker leaves them
(tests/py/support/seed.py; the export is measured, not ingestion); the real
worker (`python -m worker`, fresh for each run) builds the export into the
local store while its resident memory is sampled every 50 ms.  Then as many
documents again are added and a second export is built by a fresh worker.

Per run: archive size, build time (the export's started_at → finished_at),
MB/s of archive written, and the worker's peak RSS growth over its idle RSS
just before the request (its process only: the parse children never take
part).  The archive is checked (ZIP directory, manifest, row counts).

Last line: `export: mb_s=… peak_rss_mb=… peak_rss_2x_mb=… archive_mb=…`
(targets: peak RSS growth ≤ 256 MB at both sizes, and within ±20 % of each
other: memory must not grow with the data).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import psycopg
from _support import PYTHON, REPO_ROOT, dev_env, server

sys.path.insert(0, str(REPO_ROOT))  # the seeding helper lives in the test support code

from quarry.dev.database import prepare_database, with_database
from quarry.dev.memory import rss
from quarry.dev.users import ensure_user, set_plan
from quarry.exports.storage import export_key
from quarry.storage.blobs import LocalBlobStore
from tests.py.support.seed import SeedDocument, seed_documents

DATABASE = "quarry_bench_export"
ADMIN_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DOCUMENTS = 10_000
CHUNKS_PER_DOCUMENT = 5
BATCH = 1_000
TARGET_RSS_MB = 256
WORDS = [
    "granite",
    "basalt",
    "marble",
    "slate",
    "quarry",
    "ledger",
    "tonnage",
    "chisel",
    "bedrock",
    "sediment",
    "gneiss",
    "schist",
    "limestone",
    "sandstone",
    "shale",
    "quartz",
    "feldspar",
    "mica",
    "dolomite",
    "travertine",
]


def document(rng: random.Random, n: int) -> SeedDocument:
    chunks = [" ".join(rng.choice(WORDS) for _ in range(60)) + f" (document {n}, part {p})." for p in range(5)]
    text = "\n\n".join(chunks)
    return SeedDocument(f"bench-{n:06d}.txt", text.encode(), text, chunks[:CHUNKS_PER_DOCUMENT])


def seed(admin_url: str, blobs: LocalBlobStore, tenant: uuid.UUID, start: int, count: int) -> None:
    rng = random.Random(start)  # noqa: S311 (filler text)
    for first in range(start, start + count, BATCH):
        batch = [document(rng, n) for n in range(first, min(first + BATCH, start + count))]
        seed_documents(admin_url, blobs, tenant, batch, durable=False)


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.pid, self.base = pid, rss(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return (self.peak - self.base) / 1e6


def settle(pid: int, timeout: float = 180) -> None:
    """Until the worker idles: its model loaded, its memory steady for 3 s."""
    deadline = time.monotonic() + timeout
    readings = [rss(pid)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        readings = [*readings[-5:], rss(pid)]
        if len(readings) == 6 and readings[0] > 200e6 and max(readings) - min(readings) < 2e6:
            return
    raise RuntimeError("the worker did not settle")


def export_once(admin_url: str, tenant: uuid.UUID, env: dict[str, str], log: Path) -> dict[str, Any]:
    """A fresh worker builds one export; its figures."""
    with server([PYTHON, "-m", "worker"], env, None, log=log) as worker:
        settle(worker.pid)
        sampler = PeakRss(worker.pid)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            claims = json.dumps({"sub": str(tenant), "role": "authenticated"})
            with conn.transaction():  # as supabase-js would request it
                conn.execute(
                    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                    (claims,),
                )
                row = conn.execute("select id from api.request_export()").fetchone()
            assert row is not None
            export_id = row[0]
            while True:
                status = conn.execute(
                    "select status::text, error, size_bytes, extract(epoch from finished_at - started_at)::float8"
                    " from app.export_requests where id = %s",
                    (export_id,),
                ).fetchone()
                assert status is not None
                if status[0] in ("ready", "failed"):
                    break
                time.sleep(0.2)
            growth = sampler.stop()
    if status[0] != "ready":
        raise RuntimeError(f"the export failed: {status[1]} (see {log})")
    return {"export_id": export_id, "size": float(status[2]), "seconds": float(status[3]), "growth": growth}


def check(archive: Path, documents: int) -> None:
    with zipfile.ZipFile(archive) as opened:
        manifest = json.loads(opened.read("manifest.json"))
        assert manifest["files"]["documents.json"]["rows"] == documents
        assert manifest["files"]["chunks.json"]["rows"] == documents * CHUNKS_PER_DOCUMENT
        assert manifest["originals"]["files"] == documents
        assert len(opened.namelist()) == documents + len(manifest["files"]) + 1


def main() -> None:
    prepare_database(ADMIN_SERVER, DATABASE, fresh=True)
    admin_url = with_database(ADMIN_SERVER, DATABASE)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        env = {**dev_env(DATABASE, f"{workdir}/dev", f"{workdir}/data"), "DRIVE": "off", "WORKER_CONCURRENCY": "4"}
        blobs = LocalBlobStore(Path(workdir) / "data" / "blobs")
        tenant = ensure_user(admin_url, "bench-export@example.com")
        set_plan(admin_url, tenant, "enterprise")
        for run, total in enumerate((DOCUMENTS, 2 * DOCUMENTS)):
            started = time.monotonic()
            seed(admin_url, blobs, tenant, run * DOCUMENTS, DOCUMENTS)
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute("vacuum analyze app.documents, app.chunks, app.document_texts")
            print(f"seeded {DOCUMENTS} documents in {time.monotonic() - started:.0f} s ({total} in all)", flush=True)
            result = export_once(admin_url, tenant, env, Path(workdir) / f"worker-{run}.log")
            check(blobs.root / export_key(tenant, result["export_id"]), total)
            mb = result["size"] / 1e6
            print(
                f"{total} documents, {total * CHUNKS_PER_DOCUMENT} chunks: archive {mb:.1f} MB in"
                f" {result['seconds']:.1f} s = {mb / result['seconds']:.1f} MB/s; worker peak RSS growth"
                f" {result['growth']:.1f} MB",
                flush=True,
            )
            results.append(result)
    first, second = results
    ratio = second["growth"] / first["growth"] if first["growth"] > 0 else float("inf")
    print(
        f"targets: peak RSS growth <= {TARGET_RSS_MB} MB (got {first['growth']:.0f} and {second['growth']:.0f}),"
        f" 2x within +-20 % (ratio {ratio:.2f})"
    )
    print(
        f"export: mb_s={first['size'] / 1e6 / first['seconds']:.1f} peak_rss_mb={first['growth']:.0f}"
        f" peak_rss_2x_mb={second['growth']:.0f} archive_mb={first['size'] / 1e6:.1f}"
    )


if __name__ == "__main__":
    main()
