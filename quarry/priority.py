"""Lower a process's CPU priority so that latency-sensitive work on the same machine goes first.

With the scheduler's autogroups (most Linux systems) the CPU is shared between sessions by
their autogroup's niceness, and the niceness of a process counts only inside its session; so
both are lowered, and a process that shares a session with work that must not slow down leaves
it first (`own_session`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def lower_cpu_priority(niceness: int, *, own_session: bool = False) -> None:
    if own_session:
        with contextlib.suppress(PermissionError):  # already a session leader
            os.setsid()
    os.nice(niceness)
    with contextlib.suppress(OSError):  # no autogroups (a kernel without them, some containers)
        Path("/proc/self/autogroup").write_text(str(niceness))
