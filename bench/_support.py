"""Helpers shared by the benchmarks: free ports, subprocess servers, the dev stack, percentiles."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from quarry.dev.cluster import DisposableCluster

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def server(
    args: list[str], env: dict[str, str], ready_url: str | None, timeout: float = 60.0, *, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server subprocess until the block ends; wait for ready_url (if any) to answer 200.

    Its output goes to `log` if given (else nowhere); it is killed if it does not stop within 30 s."""
    output = log.open("wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        args, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
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
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        if log is not None:
            output.close()  # type: ignore[union-attr]


def cluster_urls(cluster: DisposableCluster, database: str) -> dict[str, str]:
    """The service's connection settings for a database on a disposable cluster."""
    return {
        "DATABASE_URL": cluster.url(database, "quarry_gateway"),
        "TENANT_DATABASE_URL": cluster.url(database, "quarry_authenticator"),
        "WORKER_DATABASE_URL": cluster.url(database, "quarry_worker"),
        "ADMIN_DATABASE_URL": cluster.url(database),
    }


def dev_env(database: str, dev_dir: str, data_dir: str) -> dict[str, str]:
    """Environment for a dev-mode gateway, worker and auth server on their own database and data."""
    return {
        "QUARRY_ENV": "development",
        "QUARRY_DB_NAME": database,
        "QUARRY_DEV_DIR": dev_dir,
        "QUARRY_DATA_DIR": data_dir,
        "SUPABASE_URL": f"http://127.0.0.1:{free_port()}",
        "LOG_LEVEL": "WARNING",
        # These benchmarks measure other things and send more than a plan's hourly
        # allowance; bench/quota_overhead.py measures what the limits cost.
        "RATE_LIMITS": "off",
        # upload_all sends up to 8 of one tenant's uploads at once (bench/abuse.py runs the shipped cap).
        "UPLOADS_IN_FLIGHT_PER_TENANT": "8",
    }


@contextmanager
def dev_stack(env: dict[str, str], jwks_url: str, *, ready_timeout: float = 60.0) -> Iterator[str]:
    """The dev auth server and one uvicorn gateway process; yields the gateway's base URL."""
    port = free_port()
    gateway_args = [
        PYTHON, "-m", "uvicorn", "gateway.app:create_app", "--factory",
        "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with (
        server([PYTHON, "-m", "quarry.dev", "authserver"], env, jwks_url),
        server(gateway_args, env, f"{base}/readyz", timeout=ready_timeout),
    ):
        yield base


async def upload_all(
    base: str, headers: dict[str, str], files: list[tuple[str, bytes]], concurrency: int = 8
) -> list[str]:
    """Upload files through POST /api/documents, `concurrency` at a time; their document ids."""
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def upload(name: str, content: bytes) -> str:
            async with semaphore:
                response = await client.post("/api/documents", files={"file": (name, content)})
                response.raise_for_status()
                return str(response.json()["id"])

        return await asyncio.gather(*(upload(name, content) for name, content in files))
