"""How long the embedded Qdrant Edge index stops every other Python thread of its process.

qdrant-edge-py holds the GIL for the whole of each call, so in the gateway
(which owns the shard) a search or an index build is time in which no request,
health check or key-revocation heartbeat runs.  This script builds a shard of
`--points` points over 100 tenants (random unit vectors and BM25-like sparse
vectors; 50,000 by default), optimizes it, then adds `--new` points in batches
of 100 (as the relay does) and optimizes again, while a thread that wakes every
millisecond records the longest gap between its wake-ups.  Then 200 hybrid
searches, timed the same way.

Prints the time of each call and the longest stall of the ticking thread.  No
target: this documents a limit of the embedded backend (README, "Edge's limit:
it holds the GIL"); the server backend builds its index in the Qdrant server.
Last line: edge_gil: optimize_s=… optimize_stall_s=… search_ms=… search_stall_ms=…
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from quarry.index.base import IndexPoint
from quarry.index.edge import EdgeIndex

TENANTS = 100
BATCH = 100
SPARSE_TERMS = 40
VOCABULARY = 30_000


def longest_stall(call: Callable[[], object]) -> tuple[float, float]:
    """(seconds the call took, longest gap in seconds between a 1 ms ticker's wake-ups meanwhile)."""
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.02)
    started = time.perf_counter()
    call()
    took = time.perf_counter() - started
    stop.set()
    ticker.join()
    return took, max(gaps)


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


def add(index: EdgeIndex, rng: random.Random, tenants: Sequence[uuid.UUID], count: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, count, BATCH):
        index.upsert(tenants[(start // BATCH) % len(tenants)], points(rng, min(BATCH, count - start), now))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=50_000, help="points in the shard before the measured build")
    parser.add_argument("--new", type=int, default=10_000, help="points added before the measured optimize()")
    args = parser.parse_args()
    rng = random.Random(7)  # noqa: S311 (synthetic vectors)
    tenants = [uuid.uuid4() for _ in range(TENANTS)]
    with tempfile.TemporaryDirectory() as directory:
        index = EdgeIndex(Path(directory) / "index")
        try:
            started = time.monotonic()
            add(index, rng, tenants, args.points)
            index.optimize()
            print(f"set-up: {args.points} points over {TENANTS} tenants in {time.monotonic() - started:.0f} s")
            add(index, rng, tenants, args.new)
            optimize_s, optimize_stall = longest_stall(index.optimize)
            print(f"optimize() after {args.new} new points: {optimize_s:.2f} s; ticker stalled {optimize_stall:.2f} s")
            query = points(rng, 1, datetime.now(UTC))[0]
            searches = 200

            def search_all() -> None:
                for number in range(searches):
                    index.search(
                        tenants[number % TENANTS],
                        dense=query.dense,
                        sparse=(query.sparse_indices, query.sparse_values),
                        mode="hybrid",
                        limit=10,
                    )

            search_s, search_stall = longest_stall(search_all)
            print(f"{searches} hybrid searches: {search_s / searches * 1000:.1f} ms each; "
                  f"ticker stalled {search_stall * 1000:.1f} ms at most")  # fmt: skip
        finally:
            index.close()
    print(
        f"edge_gil: optimize_s={optimize_s:.2f} optimize_stall_s={optimize_stall:.2f} "
        f"search_ms={search_s / searches * 1000:.1f} search_stall_ms={search_stall * 1000:.1f} "
        "(no target: a stall as long as the call means the GIL was held throughout)"
    )


if __name__ == "__main__":
    main()
