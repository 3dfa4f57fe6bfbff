"""The vector index contract shared by the Qdrant Edge and qdrant-client backends.

Every operation takes the tenant id as a required argument and every read and
write is filtered by it inside the engine: nothing in a caller's points or
filters can widen a call to another tenant.  Both backends build their filters
from the same engine-neutral conditions (`search_conditions`), so they cannot
drift apart.

Scoring, identical in both backends:

- dense: cosine similarity on the `dense` vector.
- sparse: BM25 on the `bm25` vector; the engine multiplies the query side by
  IDF computed over the caller's tenant only (an IDF corpus filter), so one
  tenant's documents never move another tenant's scores, and the explain
  output cannot be used to probe which terms other tenants' documents contain.
- hybrid: both prefetches fused with RRF inside the engine, where the fused
  score is exactly `sum(1 / (rrf_k + rank))` over the lists a point is in,
  ranks counted from 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from quarry.errors import Unavailable

COLLECTION_PREFIX = "chunks_"
DEFAULT_MODEL = "all-minilm-l6-v2"
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
DENSE_SIZE = 384

# HNSW: no global graph; payload_m builds one graph per tenant_id value.
HNSW_M = 0
HNSW_PAYLOAD_M = 16
HNSW_EF_CONSTRUCT = 100
HNSW_FULL_SCAN_THRESHOLD_KB = 10_000

TENANT_FIELD = "tenant_id"
DOCUMENT_FIELD = "document_id"
SOURCE_FIELD = "source"
MIME_TYPE_FIELD = "mime_type"
CREATED_AT_FIELD = "created_at"
ORDINAL_FIELD = "ordinal"

KEYWORD_FIELDS = (DOCUMENT_FIELD, SOURCE_FIELD, MIME_TYPE_FIELD)
HIT_PAYLOAD_FIELDS = [TENANT_FIELD, DOCUMENT_FIELD]

MIN_RRF_K = 1

SearchMode = Literal["hybrid", "dense", "sparse"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "sparse")


def collection_name(model: str = DEFAULT_MODEL) -> str:
    """One collection (or edge shard) per embedding model."""
    return f"{COLLECTION_PREFIX}{model}"


DEFAULT_COLLECTION = collection_name()


class IndexUnavailable(Unavailable):
    """The index cannot be reached (server down, shard locked or unopenable); retry later."""

    slug = "index-unavailable"

    def __init__(self, internal: str) -> None:
        super().__init__("Search is unavailable for a moment; try again shortly.", internal=internal)


@dataclass(frozen=True)
class IndexPoint:
    """One chunk: its id is the chunk id, so re-applying a change is idempotent."""

    id: UUID
    document_id: UUID
    dense: Sequence[float]
    sparse_indices: Sequence[int]
    sparse_values: Sequence[float]
    source: str
    mime_type: str
    created_at: datetime
    ordinal: int


@dataclass(frozen=True)
class SearchFilters:
    """Optional narrowing of a search; None means "no condition", an empty list matches nothing.

    The created range is inclusive at both ends.
    """

    document_ids: Sequence[UUID] | None = None
    sources: Sequence[str] | None = None
    mime_types: Sequence[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    @property
    def matches_nothing(self) -> bool:
        lists = (self.document_ids, self.sources, self.mime_types)
        return any(values is not None and len(values) == 0 for values in lists)


@dataclass(frozen=True)
class IndexHit:
    """A search result; the dense and sparse fields explain a hybrid rank (None: not in that list)."""

    id: UUID
    document_id: UUID
    score: float
    dense_rank: int | None
    dense_score: float | None
    sparse_rank: int | None
    sparse_score: float | None


class VectorIndex(Protocol):
    """Synchronous and thread-safe; async callers run it in a worker thread."""

    def upsert(self, tenant_id: UUID, points: Sequence[IndexPoint]) -> None:
        """Insert or overwrite points of tenant_id; a point id held by another tenant is left alone."""
        ...

    def delete_document(self, tenant_id: UUID, document_id: UUID) -> None: ...

    def delete_tenant(self, tenant_id: UUID) -> None:
        """Every point of the tenant (account deletion)."""
        ...

    def delete_points(self, tenant_id: UUID, point_ids: Sequence[UUID]) -> None:
        """Delete those of point_ids that belong to tenant_id."""
        ...

    def document_point_ids(self, tenant_id: UUID, document_id: UUID) -> set[UUID]: ...

    def count(self, tenant_id: UUID, document_id: UUID | None = None) -> int: ...

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
        """The tenant's best `limit` points, all filters applied inside the engine.

        hybrid fuses the dense and sparse top `prefetch_limit` lists with RRF (score =
        sum of 1 / (rrf_k + rank)); its explain ranks come from running those two
        queries again on their own, so for points whose single-vector scores tie
        exactly, the reported order among them may differ from the one fusion used.
        With explain=False hybrid skips those two queries and its hits carry no ranks.
        dense and sparse return one list, scored by cosine or BM25.
        """
        ...

    def optimize(self) -> None:
        """Build pending indexes (Qdrant Edge has no background optimizer); a no-op on a server."""
        ...

    def close(self) -> None: ...


# --- Engine-neutral filter conditions -------------------------------------------------------


@dataclass(frozen=True)
class KeywordMatch:
    """The field equals one of values."""

    field: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class TimeRange:
    """The datetime field lies within [gte, lte] (aware, UTC); a None bound is open."""

    field: str
    gte: datetime | None
    lte: datetime | None


Condition = KeywordMatch | TimeRange


def tenant_condition(tenant_id: UUID) -> KeywordMatch:
    if not isinstance(tenant_id, UUID):
        raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
    return KeywordMatch(TENANT_FIELD, (str(tenant_id),))


def document_conditions(tenant_id: UUID, document_id: UUID) -> list[Condition]:
    return [tenant_condition(tenant_id), KeywordMatch(DOCUMENT_FIELD, _uuid_keywords("document_id", [document_id]))]


def search_conditions(tenant_id: UUID, filters: SearchFilters | None) -> list[Condition]:
    """The tenant condition first, then the caller's filters, all of which must hold."""
    conditions: list[Condition] = [tenant_condition(tenant_id)]
    if filters is None:
        return conditions
    if filters.document_ids is not None:
        conditions.append(KeywordMatch(DOCUMENT_FIELD, _uuid_keywords("document_ids", filters.document_ids)))
    if filters.sources is not None:
        conditions.append(KeywordMatch(SOURCE_FIELD, _string_keywords("sources", filters.sources)))
    if filters.mime_types is not None:
        conditions.append(KeywordMatch(MIME_TYPE_FIELD, _string_keywords("mime_types", filters.mime_types)))
    if filters.created_from is not None or filters.created_to is not None:
        conditions.append(
            TimeRange(
                CREATED_AT_FIELD,
                gte=None if filters.created_from is None else as_utc(filters.created_from),
                lte=None if filters.created_to is None else as_utc(filters.created_to),
            )
        )
    return conditions


def _string_keywords(name: str, values: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):  # a str is a Sequence[str] of its characters
        raise TypeError(f"{name} must be a list of strings, not a string")
    if not all(isinstance(value, str) for value in values):
        raise TypeError(f"{name} must hold strings")
    return tuple(values)


def _uuid_keywords(name: str, values: Sequence[UUID]) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(value, UUID) for value in values):
        raise TypeError(f"{name} must be a list of UUIDs")
    return tuple(str(value) for value in values)


# --- Validation and payloads ----------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetimes given to the index must be timezone-aware")
    return moment.astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with microseconds, the form both engines' datetime indexes parse."""
    return as_utc(moment).isoformat(timespec="microseconds")


def point_payload(tenant_id: UUID, point: IndexPoint) -> dict[str, Any]:
    """The payload stored with a point; the tenant comes from the argument, never from the point."""
    return {
        TENANT_FIELD: tenant_condition(tenant_id).values[0],
        DOCUMENT_FIELD: str(point.document_id),
        SOURCE_FIELD: point.source,
        MIME_TYPE_FIELD: point.mime_type,
        CREATED_AT_FIELD: rfc3339(point.created_at),
        ORDINAL_FIELD: point.ordinal,
    }


def validate_points(points: Sequence[IndexPoint], dense_size: int) -> None:
    seen: set[UUID] = set()
    for point in points:
        if not isinstance(point.id, UUID) or not isinstance(point.document_id, UUID):
            raise TypeError(f"point {point.id}: id and document_id must be UUIDs")
        if point.id in seen:
            raise ValueError(f"point {point.id} appears twice in one upsert")
        seen.add(point.id)
        if len(point.dense) != dense_size:
            raise ValueError(f"point {point.id}: dense vector has {len(point.dense)} dimensions, expected {dense_size}")
        _validate_sparse(point.sparse_indices, point.sparse_values, f"point {point.id}")


def validate_search(
    *,
    dense: Sequence[float] | None,
    sparse: tuple[Sequence[int], Sequence[float]] | None,
    mode: str,
    limit: int,
    prefetch_limit: int,
    rrf_k: int,
    dense_size: int,
) -> None:
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; expected one of {', '.join(SEARCH_MODES)}")
    if limit < 1 or prefetch_limit < 1:
        raise ValueError("limit and prefetch_limit must be at least 1")
    if rrf_k < MIN_RRF_K:
        raise ValueError(f"rrf_k must be at least {MIN_RRF_K}")
    if mode in ("hybrid", "dense"):
        if dense is None:
            raise ValueError(f"{mode} search needs a dense query vector")
        if len(dense) != dense_size:
            raise ValueError(f"dense query has {len(dense)} dimensions, expected {dense_size}")
    if mode in ("hybrid", "sparse"):
        if sparse is None:
            raise ValueError(f"{mode} search needs a sparse query vector")
        _validate_sparse(sparse[0], sparse[1], "sparse query")


def _validate_sparse(indices: Sequence[int], values: Sequence[float], what: str) -> None:
    if len(indices) != len(values):
        raise ValueError(f"{what}: {len(indices)} sparse indices but {len(values)} values")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{what}: sparse indices repeat")
    if len(indices) and (min(indices) < 0 or max(indices) > 0xFFFF_FFFF):
        raise ValueError(f"{what}: sparse indices must fit in an unsigned 32-bit integer")


def as_list(values: Sequence[Any]) -> list[Any]:
    """The engines take lists; converting their elements one by one in Python would cost more than the write."""
    return values if isinstance(values, list) else list(values)


# --- Result assembly ------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedPoint:
    """One engine result, reduced to what an IndexHit needs."""

    id: UUID
    tenant_id: str
    document_id: UUID
    score: float


Ranks = Mapping[UUID, tuple[int, float]]


def as_uuid(point_id: Any) -> UUID:
    return point_id if isinstance(point_id, UUID) else UUID(str(point_id))


def ranked_point(point_id: Any, payload: Mapping[str, Any] | None, score: float) -> RankedPoint:
    payload = payload or {}
    return RankedPoint(
        id=as_uuid(point_id),
        tenant_id=str(payload.get(TENANT_FIELD)),
        document_id=UUID(str(payload[DOCUMENT_FIELD])),
        score=float(score),
    )


def ranks(scored: Iterable[tuple[Any, float]]) -> dict[UUID, tuple[int, float]]:
    """Rank (from 1) and score by point id, for a single-vector result list."""
    return {as_uuid(point_id): (rank, float(score)) for rank, (point_id, score) in enumerate(scored, start=1)}


def assemble_hits(
    tenant_id: UUID,
    mode: SearchMode,
    results: Sequence[RankedPoint],
    dense_ranks: Ranks | None = None,
    sparse_ranks: Ranks | None = None,
) -> list[IndexHit]:
    """IndexHits for results; for hybrid, ranks come from the two single-vector lists."""
    expected_tenant = str(tenant_id)
    for result in results:
        # Defence in depth: the engine filtered by tenant; a stray point would be a leak.
        if result.tenant_id != expected_tenant:
            raise RuntimeError(f"the index returned point {result.id} of another tenant")
    own_ranks = ranks((result.id, result.score) for result in results)
    if mode == "dense":
        dense_ranks, sparse_ranks = own_ranks, {}
    elif mode == "sparse":
        dense_ranks, sparse_ranks = {}, own_ranks
    dense_ranks = dense_ranks or {}
    sparse_ranks = sparse_ranks or {}
    hits = []
    for result in results:
        dense_rank, dense_score = dense_ranks.get(result.id, (None, None))
        sparse_rank, sparse_score = sparse_ranks.get(result.id, (None, None))
        hits.append(
            IndexHit(
                id=result.id,
                document_id=result.document_id,
                score=result.score,
                dense_rank=dense_rank,
                dense_score=dense_score,
                sparse_rank=sparse_rank,
                sparse_score=sparse_score,
            )
        )
    return hits


def engine_rrf_k(rrf_k: int) -> int:
    """Qdrant scores a point 1 / (k + position) with positions from 0; textbook RRF ranks from 1.

    So Qdrant's k is the textbook k plus one (its default of 2 is the textbook k=1).
    """
    return rrf_k + 1
