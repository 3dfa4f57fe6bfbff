"""Helpers shared by the benchmarks: free ports, subprocess servers, percentiles."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def server(args: list[str], env: dict[str, str], ready_url: str | None, timeout: float = 60.0) -> Iterator[None]:
    """Run a server subprocess until the block ends; wait for ready_url (if any) to answer 200."""
    process = subprocess.Popen(
        args, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while ready_url is not None:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited with {process.returncode}")
            try:
                if httpx.get(ready_url, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} did not become ready")
            time.sleep(0.2)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
