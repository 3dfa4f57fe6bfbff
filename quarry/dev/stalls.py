"""How long a call keeps the other Python threads of this process from running (bench/edge_gil.py, tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def longest_stall(call: Callable[[], object]) -> tuple[float, float]:
    """(seconds the call took, the longest gap between the wake-ups of a thread ticking every millisecond)."""
    gaps: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick, name="stall-ticker")
    ticker.start()
    time.sleep(0.02)
    started = time.perf_counter()
    try:
        call()
    finally:
        took = time.perf_counter() - started
        stop.set()
        ticker.join()
    return took, max(gaps)
