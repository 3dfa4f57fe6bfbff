"""Text extraction in a pool of persistent parse children, each with a memory cap and a deadline.

A hostile file (a JSON of twenty million empty objects, a PDF page that takes
minutes to interpret) must cost at most a known amount. Each child
(quarry.parsing.parse_child) has imported every parser already and caps its own
address space with RLIMIT_AS at budget / processes, so all parses together
stay within the budget; a parse that runs past its deadline is killed. A child
that dies, runs out of memory or times out is replaced by a fresh one, and the
document fails with ExtractionBudget.exceeded_reason(). The worker process itself
only reads the child's reply, whose size is bounded by max_text_chars.

Children are started once (`warm`, or on first use), not per document: an
interpreter that imports pypdf, python-docx, python-pptx and openpyxl takes
about half a second to start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from quarry.errors import Unavailable
from quarry.parsing.budget import MIB, ExtractionBudget
from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.segments import Extracted, Segment

logger = logging.getLogger("quarry.quarry.parsing.pool")

_LENGTH_BYTES = 8
_START_SECONDS = 30.0
# JSON escapes a character in at most 12 bytes (a surrogate pair as two \uXXXX); positions are short.
_BYTES_PER_CHAR = 12
_REPLY_OVERHEAD = 4 * MIB
_CPU_GRACE_SECONDS = 5


class _BudgetExceeded(Exception):
    pass


class _ParseChild:
    def __init__(self, budget: ExtractionBudget) -> None:
        self._budget = budget
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module, no user input)
            [sys.executable, "-m", "quarry.parsing.parse_child", str(budget.child_address_space)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own process group, so that a terminal's Ctrl-C reaches the worker only, which then closes the pool.
            start_new_session=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout.fileno()

    def wait_until_ready(self) -> None:
        try:
            ready = self._reply(time.monotonic() + _START_SECONDS)
        except _BudgetExceeded as error:
            self.kill()
            raise Unavailable("The worker could not start a parser.", internal=f"parse child: {error}") from error
        if not ready.get("ready"):
            self.kill()
            raise Unavailable("The worker could not start a parser.", internal=f"parse child said {ready!r}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def extract(self, path: Path, fmt: str) -> dict[str, Any]:
        request = {
            "path": str(path),
            "format": fmt,
            "max_text_chars": self._budget.max_text_chars,
            "cpu_seconds": self._budget.timeout_seconds + _CPU_GRACE_SECONDS,
        }
        try:
            self._stdin.write(json.dumps(request).encode() + b"\n")
            self._stdin.flush()
        except OSError as error:
            raise _BudgetExceeded("the child is gone") from error
        return self._reply(time.monotonic() + self._budget.timeout_seconds)

    def _reply(self, deadline: float) -> dict[str, Any]:
        header = self._read(_LENGTH_BYTES, deadline)
        length = int.from_bytes(header, "big")
        if length > self._budget.max_text_chars * _BYTES_PER_CHAR + _REPLY_OVERHEAD:
            raise _BudgetExceeded(f"a reply of {length} bytes")
        reply: dict[str, Any] = json.loads(self._read(length, deadline))
        return reply

    def _read(self, size: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        with selectors.DefaultSelector() as selector:
            selector.register(self._stdout, selectors.EVENT_READ)
            while size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise _BudgetExceeded("timed out")
                part = os.read(self._stdout, min(size, MIB))
                if not part:
                    raise _BudgetExceeded(f"the child exited ({self.process.poll()})")
                parts.append(part)
                size -= len(part)
        return b"".join(parts)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._stdin.close()
        if self.process.stdout is not None:
            self.process.stdout.close()


class ParsePool:
    """At most budget.processes parses at a time, each in a child within its share of the budget."""

    def __init__(self, budget: ExtractionBudget) -> None:
        self.budget = budget
        self._idle: queue.SimpleQueue[_ParseChild | None] = queue.SimpleQueue()
        for _ in range(budget.processes):
            self._idle.put(None)  # a free slot whose child starts on first use
        self._slots = asyncio.Semaphore(budget.processes)
        self._children: set[_ParseChild] = set()
        self._lock = threading.Lock()
        self._closed = False

    def warm(self) -> None:
        """Start every child now instead of on first use."""
        slots = [self._idle.get() for _ in range(self.budget.processes)]
        try:
            # Spawned together and then awaited, so that they import the parsers side by side.
            slots = [child or self._start_child(wait=False) for child in slots]
            for child in slots:
                if child is not None:
                    child.wait_until_ready()
        except Exception:
            for child in slots:
                if child is not None:
                    self._retire(child)
            slots = [None] * len(slots)
            raise
        finally:
            for child in slots:
                self._idle.put(child)

    async def extract(self, path: Path, fmt: str) -> Extracted:
        """extract_blocking off the event loop; callers beyond budget.processes wait here, not in threads."""
        async with self._slots:
            return await asyncio.to_thread(self.extract_blocking, path, fmt)

    def extract_blocking(self, path: Path, fmt: str) -> Extracted:
        """The text of the file at path as fmt, extracted by a child within the budget.

        Raises UnreadableDocument (for good: the file's fault, the budget included)
        or Unavailable (the child could not read the local file; a retry may succeed).
        """
        child = self._idle.get()
        try:
            if child is not None and child.process.poll() is not None:
                logger.warning("parse child %d had exited (%s); starting another", child.pid, child.process.returncode)
                self._retire(child)
                child = None
            if child is None:
                child = self._start_child()
            try:
                reply = child.extract(path, fmt)
            except _BudgetExceeded as error:
                logger.info("parse child %d stopped on a %s file: %s", child.pid, fmt, error)
                self._retire(child)
                child = self._replacement()
                raise UnreadableDocument(self.budget.exceeded_reason()) from None
            if "memory" in reply:
                self._retire(child)  # it exits by itself after running out of memory
                child = self._replacement()
            return self._result(reply, fmt)
        finally:
            self._idle.put(child)

    def child_pids(self) -> list[int]:
        with self._lock:
            return [child.pid for child in self._children]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children = list(self._children)
            self._children.clear()
        for child in children:
            child.kill()

    def _start_child(self, *, wait: bool = True) -> _ParseChild:
        with self._lock:
            if self._closed:
                raise Unavailable("The worker is shutting down.", internal="the parse pool is closed")
        child = _ParseChild(self.budget)
        with self._lock:
            self._children.add(child)
        if wait:
            try:
                child.wait_until_ready()
            except Unavailable:
                self._retire(child)
                raise
        return child

    def _replacement(self) -> _ParseChild | None:
        """A fresh child now, so that the next document does not wait for one; None if it cannot start."""
        try:
            return self._start_child()
        except Exception:
            logger.exception("a parse child could not be started; the next parse tries again")
            return None

    def _retire(self, child: _ParseChild) -> None:
        with self._lock:
            self._children.discard(child)
        child.kill()

    def _result(self, reply: dict[str, Any], fmt: str) -> Extracted:
        if "segments" in reply:
            segments = [Segment(text=str(text), position=dict(position)) for text, position in reply["segments"]]
            page_count = reply["page_count"]
            return Extracted(segments=segments, page_count=int(page_count) if page_count is not None else None)
        if "unreadable" in reply:
            raise UnreadableDocument(str(reply["unreadable"]))
        if "memory" in reply:
            raise UnreadableDocument(self.budget.exceeded_reason())
        if "os_error" in reply:
            raise Unavailable("Local storage failed.", internal=f"the parse child could not read: {reply['os_error']}")
        logger.error("the parse child failed on a %s file with %s", fmt, reply.get("error"))
        raise UnreadableDocument(f"The file could not be read ({reply.get('error', 'unknown error')}).")
