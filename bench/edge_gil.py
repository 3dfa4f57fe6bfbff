"""How long the embedded Qdrant Edge index stops every other Python thread of its process.

qdrant-edge-py holds the GIL for the whole of each call, so in the gateway
(which owns the shard) a search or an index build is time in which no request,
health check or key-revocation heartbeat runs.  This script builds a shard of
`--points` points over 100 tenants (random unit vectors and BM25-like sparse
vectors; 50,000 by default), optimizes it, then adds `--new` points in batches
of 100 (as the relay does) and optimizes again, while a thread that wakes every
millisecond records the longest gap between its wake-ups.  Then 200 hybrid
searches, timed the same way.  All of it twice: the shard in this process
(EdgeIndex), then in a child process (EdgeProcessIndex, INDEX_EDGE_PROCESS=on),
whose calling threads should not stall.

Prints the time of each call and the longest stall of the ticking thread.  No
target: this documents a limit of the embedded backend (README, "Edge's limit:
it holds the GIL"); the server backend builds its index in the Qdrant server.
Last line: edge_gil: optimize_s=… optimize_stall_s=… search_ms=… search_stall_ms=…
child_optimize_stall_s=… child_search_ms=… child_search_stall_ms=…
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from quarry.dev.stalls import longest_stall
from quarry.index.base import IndexPoint, VectorIndex
from quarry.index.edge import EdgeIndex
from quarry.index.edge_process import EdgeProcessIndex

TENANTS = 100
BATCH = 100
SEARCHES = 200
SPARSE_TERMS = 40
VOCABULARY = 30_000


def points(rng: random.Random, count: int, created_at: datetime) -> list[IndexPoint]:
    made = []
    document_id = uuid.uuid4()
    for ordinal in range(count):
        dense = [rng.gauss(0, 1) for _ in range(384)]
        norm = sum(value * value for value in dense) ** 0.5
        terms = sorted(rng.sample(range(1, VOCABULARY), SPARSE_TERMS))
        made.append(
            IndexPoint(
                id=uuid.uuid4(),
                document_id=document_id,
                dense=[value / norm for value in dense],
                sparse_indices=terms,
                sparse_values=[1.0] * len(terms),
                source="upload",
                mime_type="text/plain",
                created_at=created_at,
                ordinal=ordinal,
            )
        )
    return made


def add(index: VectorIndex, rng: random.Random, tenants: Sequence[uuid.UUID], count: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, count, BATCH):
        index.upsert(tenants[(start // BATCH) % len(tenants)], points(rng, min(BATCH, count - start), now))


def measure(index: VectorIndex, seed: int, points_before: int, new: int) -> tuple[float, float, float, float]:
    """(optimize s, its longest stall s, search ms, the searches' longest stall ms) on a shard built alike."""
    rng = random.Random(seed)  # noqa: S311 (synthetic vectors)
    tenants = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(TENANTS)]
    started = time.monotonic()
    add(index, rng, tenants, points_before)
    index.optimize()
    print(f"  set-up: {points_before} points over {TENANTS} tenants in {time.monotonic() - started:.0f} s")
    add(index, rng, tenants, new)
    optimize_s, optimize_stall = longest_stall(index.optimize)
    print(f"  optimize() after {new} new points: {optimize_s:.2f} s; ticker stalled {optimize_stall:.2f} s")
    query = points(rng, 1, datetime.now(UTC))[0]

    def search_all() -> None:
        for number in range(SEARCHES):
            index.search(
                tenants[number % TENANTS],
                dense=query.dense,
                sparse=(query.sparse_indices, query.sparse_values),
                mode="hybrid",
                limit=10,
            )

    search_s, search_stall = longest_stall(search_all)
    search_ms = search_s / SEARCHES * 1000
    print(f"  {SEARCHES} hybrid searches: {search_ms:.1f} ms each; ticker stalled {search_stall * 1000:.1f} ms at most")
    return optimize_s, optimize_stall, search_ms, search_stall * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50_000, help="points in the shard before the measured build")
    parser.add_argument("--new", type=int, default=10_000, help="points added before the measured optimize()")
    args = parser.parse_args()
    figures = {}
    for name, backend in (("in-process", EdgeIndex), ("child process", EdgeProcessIndex)):
        print(f"{name} ({backend.__name__}):")
        with tempfile.TemporaryDirectory() as directory:
            index: VectorIndex = backend(Path(directory) / "index")
            try:
                figures[name] = measure(index, 7, args.points, args.new)
            finally:
                index.close()
    optimize_s, optimize_stall, search_ms, search_stall = figures["in-process"]
    _, child_stall, child_search_ms, child_search_stall = figures["child process"]
    print(
        f"edge_gil: optimize_s={optimize_s:.2f} optimize_stall_s={optimize_stall:.2f} search_ms={search_ms:.1f} "
        f"search_stall_ms={search_stall:.1f} child_optimize_stall_s={child_stall:.2f} "
        f"child_search_ms={child_search_ms:.1f} child_search_stall_ms={child_search_stall:.1f} "
        "(no target: in-process, a stall as long as the call means the GIL was held throughout)"
    )


if __name__ == "__main__":
    main()
