"""A small supervisor for development: child processes that die are started again, with backoff.

`make dev` runs the auth server, the gateway and the worker under it, and the
fault tests and bench/restart.py run the gateway and worker under it while
they kill them.  In production, systemd or the container runtime does this
(README, "Production").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STEADY_SECONDS = 60.0  # a child that ran this long restarts from the shortest wait again


@dataclass
class Child:
    name: str
    args: list[str]
    env: Mapping[str, str] | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = MIN_BACKOFF_SECONDS
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(self, *, cwd: Path | None = None, say: IO[str] | None = None) -> None:
        self.children: dict[str, Child] = {}
        self._cwd = cwd
        self._say = say if say is not None else sys.stderr

    def add(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
    ) -> Child:
        child = Child(name, list(args), env=env, log=log)
        self.children[name] = child
        self._start(child)
        return child

    def _start(self, child: Child) -> None:
        output = child.log.open("ab") if child.log is not None else None
        try:
            child.process = subprocess.Popen(
                child.args,
                cwd=self._cwd,
                env={**os.environ, **child.env} if child.env is not None else None,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
            )
        finally:
            if output is not None:
                output.close()
        child.started_at = time.monotonic()
        child.restart_at = None

    def poll(self) -> None:
        """Notice children that exited and start them again when their backoff is over."""
        now = time.monotonic()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    print(f"restarting the {child.name}", file=self._say, flush=True)
                    self._start(child)
                continue
            if child.process is None or child.process.poll() is None:
                continue
            code = child.process.returncode
            child.exits.append(code)
            if now - child.started_at >= STEADY_SECONDS:
                child.backoff = MIN_BACKOFF_SECONDS
            print(
                f"the {child.name} exited ({_describe(code)}); restarting it in {child.backoff:.0f} s",
                file=self._say,
                flush=True,
            )
            child.restart_at = now + child.backoff
            child.backoff = min(MAX_BACKOFF_SECONDS, child.backoff * 2)

    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send a child a signal (fault tests); it is restarted like any child that dies."""
        child = self.children[name]
        if child.process is not None and child.process.poll() is None:
            child.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> None:
        for child in self.children.values():
            child.restart_at = None
            if child.running:
                assert child.process is not None
                child.process.terminate()
        for child in self.children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
