"""The dev supervisor starts a child that died again, after a growing pause, and says so."""

from __future__ import annotations

import io
import signal
import sys
import time

from quarry.dev import supervisor as supervision
from quarry.dev.supervisor import Supervisor
from tests.py.support.processes import wait_for


def test_a_child_that_dies_is_restarted_with_backoff() -> None:
    said = io.StringIO()
    runner = Supervisor(say=said)
    child = runner.add("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    try:

        def restarted_twice() -> bool:
            runner.poll()
            return len(child.exits) >= 2

        started = time.monotonic()
        wait_for(restarted_twice, timeout=15, interval=0.05, message="two restarts")
        assert child.exits[:2] == [3, 3]
        assert time.monotonic() - started >= supervision.MIN_BACKOFF_SECONDS  # it waited before restarting
        assert child.backoff == 4 * supervision.MIN_BACKOFF_SECONDS  # 1 s, then 2 s, next 4 s
        assert "the flaky exited (code 3); restarting it in 1 s" in said.getvalue()
        assert "restarting the flaky" in said.getvalue()
    finally:
        runner.stop()


def test_a_killed_child_is_named_by_its_signal_and_stop_ends_everything() -> None:
    said = io.StringIO()
    runner = Supervisor(say=said)
    child = runner.add("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    runner.kill("sleeper")

    def noticed() -> bool:
        runner.poll()
        return bool(child.exits)

    wait_for(noticed, timeout=10, interval=0.05, message="the kill")
    assert child.exits == [-signal.SIGKILL] and "signal SIGKILL" in said.getvalue()
    runner.stop()
    assert not child.running
