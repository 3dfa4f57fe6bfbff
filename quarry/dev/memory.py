"""Resident memory of a process and of its process tree, and their peaks over time (Linux /proc).

For the hostile-file acceptance test and bench/abuse.py, which both watch the
gateway and the worker (its parse children included) while attacks run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def rss(pid: int) -> int:
    """Resident bytes of one process, 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((line for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return int(line.split()[1]) * 1024 if line else 0


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The command may hold spaces and parentheses; the parent pid follows the last ")".
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree.extend(children)
        frontier = children
    return tree


def tree_rss(pid: int) -> int:
    return rss(pid) + sum(rss(child) for child in descendants(pid))


class PeakRss:
    """The peak RSS of the gateway and of the worker's process tree, sampled every `interval` s.

    The baselines are taken when it is made; the peaks start from them.
    """

    def __init__(self, gateway_pid: int, worker_pid: int, *, interval: float = 0.05) -> None:
        self.gateway_pid, self.worker_pid = gateway_pid, worker_pid
        self.gateway_base, self.worker_base = rss(gateway_pid), tree_rss(worker_pid)
        self.gateway_peak, self.worker_peak = self.gateway_base, self.worker_base
        self.samples = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def gateway_growth(self) -> int:
        return self.gateway_peak - self.gateway_base

    @property
    def worker_growth(self) -> int:
        return self.worker_peak - self.worker_base

    @contextmanager
    def running(self) -> Iterator[PeakRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.gateway_peak = max(self.gateway_peak, rss(self.gateway_pid))
            self.worker_peak = max(self.worker_peak, tree_rss(self.worker_pid))
            self.samples += 1
