"""The vector index: one tenant-requiring wrapper, two backends.

`quarry.index.edge.EdgeIndex` (Qdrant Edge, in-process, the embedded default) and
`quarry.index.server.ServerIndex` (a Qdrant server through qdrant-client) both
implement `VectorIndex`; import the backend you use from its module, so that a
process loads only that engine.
"""

from quarry.index.base import (
    DEFAULT_COLLECTION,
    DENSE_SIZE,
    IndexHit,
    IndexPoint,
    IndexUnavailable,
    SearchFilters,
    SearchMode,
    VectorIndex,
    collection_name,
)

__all__ = [
    "DEFAULT_COLLECTION",
    "DENSE_SIZE",
    "IndexHit",
    "IndexPoint",
    "IndexUnavailable",
    "SearchFilters",
    "SearchMode",
    "VectorIndex",
    "collection_name",
]
