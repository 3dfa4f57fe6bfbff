"""A throwaway PostgreSQL cluster on a spare port, for fault tests and benchmarks.

Restarting the machine's own PostgreSQL would disturb every other database
on it; this one (initdb into a temporary directory, trust authentication,
127.0.0.1 only) can be restarted, crashed and removed freely.  It uses the
machine's PostgreSQL binaries (the same major version as the main server).
PostgreSQL refuses to run as root, so as root the cluster runs as `postgres`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import psycopg

ShutdownMode = Literal["smart", "fast", "immediate"]


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them in /usr/lib/postgresql/N/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name))
    if not candidates:
        found = shutil.which("initdb")
        if found is None:
            raise RuntimeError("no PostgreSQL binaries found (initdb)")
        return Path(found).parent
    return candidates[-1].parent


class DisposableCluster:
    def __init__(self, port: int, *, root: Path | None = None) -> None:
        self.port = port
        # Under /tmp, readable by `postgres` (pytest's own temporary directories are not).
        self.root = root or Path(tempfile.mkdtemp(prefix="quarry-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._bin = postgres_bin_dir()
        self._as_postgres = os.geteuid() == 0

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self._bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def create(self) -> DisposableCluster:
        self.root.chmod(0o755)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",  # a test cluster: speed over durability on power loss (restarts stay honest)
            "max_connections = 200",
        ]
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as config:
            config.write("\n" + "\n".join(settings) + "\n")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: ShutdownMode = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode: ShutdownMode = "fast", *, down_seconds: float = 0.0) -> float:
        """Stop (fast: clients are told; immediate: a crash), stay down a while, start again.

        Returns the monotonic time at which the cluster accepted connections again.
        """
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()
        self.wait_accepting()
        return time.monotonic()

    def accepting(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    def wait_accepting(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.accepting():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the disposable cluster did not come back; see {self.log}")
            time.sleep(0.05)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DisposableCluster:
        self.create()
        self.start()
        self.wait_accepting()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
