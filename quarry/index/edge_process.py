"""Qdrant Edge in a child process of its own, so that building the index stops the child, not the caller.

qdrant-edge-py holds the GIL for the whole of each call (bench/edge_gil.py):
in the process that owns the shard, optimize() stops every other thread for
seconds.  With INDEX_EDGE_PROCESS=on the gateway hosts the shard in a child
process serving EdgeIndex through a multiprocessing manager (one Unix-socket
connection and one server thread per calling thread), so its event
loop, health checks, key heartbeat, uploads and lists go on while the child
builds; searches wait for the build instead.

The child exits when its parent is gone, so a killed gateway never leaves the
shard locked.  A child that died (or was killed) makes the call in progress
IndexUnavailable; the next call starts a new child.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from quarry.index.base import DENSE_SIZE, IndexHit, IndexPoint, IndexUnavailable, SearchFilters, SearchMode
from quarry.index.edge import EdgeIndex

PARENT_POLL_SECONDS = 0.5
STOP_SECONDS = 10.0
# What a dead or unreachable child looks like to the caller's side of the connection.
_LOST = (EOFError, ConnectionError)


class _ChildEdgeIndex(EdgeIndex):
    """EdgeIndex opened by a method call: the manager sends a method's exception back as itself
    (IndexUnavailable), but a constructor's only as a RemoteError carrying its traceback."""

    def __init__(self) -> None:
        pass

    def open(self, path: Path, dense_size: int) -> None:
        EdgeIndex.__init__(self, path, dense_size=dense_size)

    def close(self) -> None:
        if hasattr(self, "_shard"):  # not if open() failed
            super().close()


class _EdgeManager(BaseManager):
    pass


_EdgeManager.register("EdgeIndex", _ChildEdgeIndex)


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    manager: _EdgeManager
    remote: Any
    directory: str


class EdgeProcessIndex:
    """A VectorIndex: EdgeIndex's methods, run in a child process (`python -m quarry.index.edge_process`)."""

    def __init__(self, path: Path, *, dense_size: int = DENSE_SIZE) -> None:
        self.path = path
        self._dense_size = dense_size
        self._lock = threading.Lock()
        self._closed = False
        self._child: _Child | None = self._start()

    def __repr__(self) -> str:
        return f"EdgeProcessIndex({str(self.path)!r})"

    def _start(self) -> _Child:
        """Start a child and open the shard in it (IndexUnavailable if either fails).

        A plain subprocess, not multiprocessing's spawn: that would import the caller's
        __main__ again in the child.  The manager's key goes through stdin, never argv."""
        directory = tempfile.mkdtemp(prefix="quarry-edge-")
        address = os.path.join(directory, "socket")
        authkey = secrets.token_bytes(32)
        process = subprocess.Popen(  # noqa: S603 (our own module, under this interpreter)
            [sys.executable, "-m", "quarry.index.edge_process", address, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C or a TERM to the caller's group is the caller's to handle
        )
        assert process.stdin is not None
        assert process.stdout is not None
        child = _Child(process, _EdgeManager(address=address, authkey=authkey), None, directory)
        try:
            process.stdin.write(authkey.hex().encode() + b"\n")
            process.stdin.close()
            if process.stdout.readline().strip() != b"ready":
                raise IndexUnavailable(f"the Qdrant Edge process exited at start ({process.wait(10)})")
            process.stdout.close()
            child.manager.connect()
            child.remote = child.manager.EdgeIndex()  # type: ignore[attr-defined]
            child.remote.open(self.path, self._dense_size)
        except BaseException:
            _stop(child)
            raise
        return child

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._closed:
                raise IndexUnavailable(f"{self!r} is closed")
            if self._child is None:
                self._child = self._start()
            child = self._child
        try:
            return getattr(child.remote, method)(*args, **kwargs)
        except _LOST as error:
            self._lost(child)
            raise IndexUnavailable(f"the Qdrant Edge process stopped during {method}: {error!r}") from error

    def _lost(self, child: _Child) -> None:
        """Forget a child that stopped answering, once, so that the next call starts another."""
        with self._lock:
            if self._child is not child:
                return
            self._child = None
        _stop(child)

    # --- VectorIndex --------------------------------------------------------------------

    def upsert(self, tenant_id: UUID, points: Sequence[IndexPoint]) -> None:
        self._call("upsert", tenant_id, list(points))

    def delete_document(self, tenant_id: UUID, document_id: UUID) -> None:
        self._call("delete_document", tenant_id, document_id)

    def delete_tenant(self, tenant_id: UUID) -> None:
        self._call("delete_tenant", tenant_id)

    def delete_points(self, tenant_id: UUID, point_ids: Sequence[UUID]) -> None:
        self._call("delete_points", tenant_id, list(point_ids))

    def document_point_ids(self, tenant_id: UUID, document_id: UUID) -> set[UUID]:
        return cast(set[UUID], self._call("document_point_ids", tenant_id, document_id))

    def count(self, tenant_id: UUID, document_id: UUID | None = None) -> int:
        return cast(int, self._call("count", tenant_id, document_id))

    def search(
        self,
        tenant_id: UUID,
        *,
        dense: Sequence[float] | None,
        sparse: tuple[Sequence[int], Sequence[float]] | None,
        mode: SearchMode,
        limit: int,
        prefetch_limit: int = 100,
        filters: SearchFilters | None = None,
        rrf_k: int = 60,
        explain: bool = True,
    ) -> list[IndexHit]:
        hits = self._call(
            "search",
            tenant_id,
            dense=None if dense is None else list(dense),
            sparse=None if sparse is None else (list(sparse[0]), list(sparse[1])),
            mode=mode,
            limit=limit,
            prefetch_limit=prefetch_limit,
            filters=filters,
            rrf_k=rrf_k,
            explain=explain,
        )
        return cast(list[IndexHit], hits)

    def optimize(self) -> None:
        self._call("optimize")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            _stop(child)

    def child_pid(self) -> int | None:
        """The pid of the process that owns the shard now (None between a lost child and the next call)."""
        with self._lock:
            return None if self._child is None else self._child.process.pid


def _stop(child: _Child) -> None:
    """Close the shard (flushed, after the calls in flight) if the child still answers, then end it."""
    try:
        if child.remote is not None:
            with contextlib.suppress(*_LOST):
                child.remote.close()
    finally:
        child.process.terminate()
        try:
            child.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        shutil.rmtree(child.directory, ignore_errors=True)


def serve(address: str, parent: int) -> None:
    """The child: serve EdgeIndex on `address` until terminated, or until the parent is gone."""
    authkey = bytes.fromhex(sys.stdin.readline().strip())

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)  # the OS releases the shard's lock; the write-ahead log keeps what was written

    threading.Thread(target=watch_parent, name="edge-parent-watch", daemon=True).start()
    server = _EdgeManager(address=address, authkey=authkey).get_server()
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
