"""The vector index the settings ask for, opened on first use."""

from __future__ import annotations

import threading

from quarry.index.base import VectorIndex
from quarry.settings import Settings


def open_vector_index(settings: Settings) -> VectorIndex:
    if settings.index_backend == "server":
        from quarry.index.server import ServerIndex

        return ServerIndex(settings.qdrant_url, api_key=settings.qdrant_api_key)
    if settings.index_edge_process:
        from quarry.index.edge_process import EdgeProcessIndex

        return EdgeProcessIndex(settings.index_dir)
    from quarry.index.edge import EdgeIndex

    return EdgeIndex(settings.index_dir)


class IndexHandle:
    """Opens the vector index on first use and keeps trying while it is unavailable.

    An embedded shard that another process holds, or a Qdrant server that is
    down, must not stop the gateway from starting or accepting uploads: the
    outbox keeps the changes until the index can be opened.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._index: VectorIndex | None = None
        self._lock = threading.Lock()

    def get(self) -> VectorIndex:
        with self._lock:
            if self._index is None:
                self._index = open_vector_index(self._settings)  # raises IndexUnavailable
            return self._index

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
