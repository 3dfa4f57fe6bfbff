"""The embedded backend: a Qdrant Edge shard (the real Qdrant engine, in-process).

A shard is owned by one process: Qdrant Edge locks its write-ahead log, so a
second open, from this process or another, fails; here that is IndexUnavailable.
Edge has no background optimizer: upserts land in an unindexed appendable segment
(searched by brute force within the tenant) until the owner calls optimize(),
which builds the per-tenant HNSW graphs.  upsert() therefore only writes.

Thread safety: the engine synchronises its segments, so reads may overlap
writes and optimize(); writes and optimize() are serialised by one lock;
close() waits for calls in flight.  But qdrant-edge-py 0.9.0 holds the GIL for
the whole of every call: while a search runs (~2 ms) no other Python thread of
the process runs, and optimize() freezes the process outright, for ~4.5 s
after 10,000 new points on a 50,000-point shard and ~14 s on a 200,000-point
one (bench/edge_gil.py, 2 cores).  The relay therefore optimizes only once ingestion has
paused; a gateway can host the shard in a child process instead
(INDEX_EDGE_PROCESS=on, quarry.index.edge_process) or use the server backend
(README, "Edge's limit").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

from qdrant_edge import (
    CountRequest,
    DatetimeIndexParams,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    Fusion,
    HasIdCondition,
    HnswIndexConfig,
    IdfParams,
    KeywordIndexParams,
    MatchAny,
    MatchValue,
    Modifier,
    Point,
    Prefetch,
    Query,
    QueryBatchRequest,
    QueryRequest,
    RangeDateTime,
    ScoredPoint,
    ScrollRequest,
    SearchParams,
    SparseVector,
    UpdateOperation,
)

from quarry.index.base import (
    CREATED_AT_FIELD,
    DENSE_SIZE,
    DENSE_VECTOR,
    HIT_PAYLOAD_FIELDS,
    HNSW_EF_CONSTRUCT,
    HNSW_FULL_SCAN_THRESHOLD_KB,
    HNSW_M,
    HNSW_PAYLOAD_M,
    KEYWORD_FIELDS,
    SPARSE_VECTOR,
    TENANT_FIELD,
    Condition,
    IndexHit,
    IndexPoint,
    IndexUnavailable,
    KeywordMatch,
    SearchFilters,
    SearchMode,
    as_list,
    assemble_hits,
    document_conditions,
    engine_rrf_k,
    point_payload,
    ranked_point,
    ranks,
    rfc3339,
    search_conditions,
    tenant_condition,
    validate_points,
    validate_search,
)

if TYPE_CHECKING:
    from qdrant_edge import ConditionType

_SCROLL_PAGE = 1_000
# Present in every shard directory Qdrant Edge has created.
_SHARD_MARKER = "edge_config.json"

_T = TypeVar("_T")


def edge_config(dense_size: int = DENSE_SIZE) -> EdgeConfig:
    return EdgeConfig(
        vectors={DENSE_VECTOR: EdgeVectorParams(size=dense_size, distance=Distance.Cosine)},
        sparse_vectors={SPARSE_VECTOR: EdgeSparseVectorParams(modifier=Modifier.Idf)},
        hnsw_config=HnswIndexConfig(
            m=HNSW_M,
            ef_construct=HNSW_EF_CONSTRUCT,
            full_scan_threshold=HNSW_FULL_SCAN_THRESHOLD_KB,
            payload_m=HNSW_PAYLOAD_M,
        ),
    )


def edge_filter(conditions: Sequence[Condition]) -> Filter:
    must: list[ConditionType] = []
    for condition in conditions:
        if isinstance(condition, KeywordMatch):
            if len(condition.values) == 1:
                must.append(FieldCondition(condition.field, match=MatchValue(condition.values[0])))
            else:
                must.append(FieldCondition(condition.field, match=MatchAny(list(condition.values))))
        else:
            gte = None if condition.gte is None else rfc3339(condition.gte)
            lte = None if condition.lte is None else rfc3339(condition.lte)
            must.append(FieldCondition(condition.field, range=RangeDateTime(gte=gte, lte=lte)))
    return Filter(must=must)


def tenant_filter(tenant_id: UUID) -> Filter:
    return edge_filter([tenant_condition(tenant_id)])


def _has_ids(tenant_id: UUID, point_ids: Sequence[UUID]) -> Filter:
    return Filter(must=[tenant_filter(tenant_id), HasIdCondition(set(point_ids))])


@contextmanager
def _engine_errors(action: str) -> Iterator[None]:
    """Qdrant Edge raises bare Exception for engine failures (I/O, lock, closed shard)."""
    try:
        yield
    except Exception as error:
        # Subclasses (TypeError, ValueError, IndexUnavailable, ...) are not engine failures: let them through.
        if type(error) is not Exception:
            raise
        raise IndexUnavailable(f"Qdrant Edge failed to {action}: {error}") from error


class _CallGate:
    """Lets calls run concurrently and lets close() wait for the ones in flight."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._in_flight = 0
        self._closed = False

    @contextmanager
    def call(self, description: str) -> Iterator[None]:
        with self._condition:
            if self._closed:
                raise IndexUnavailable(f"{description} is closed")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._condition:
                self._in_flight -= 1
                self._condition.notify_all()

    def close(self) -> bool:
        """Wait for calls in flight; True the first time only."""
        with self._condition:
            if self._closed:
                return False
            self._closed = True
            self._condition.wait_for(lambda: self._in_flight == 0)
            return True


class EdgeIndex:
    """The VectorIndex backed by a Qdrant Edge shard directory (created on first use)."""

    def __init__(self, path: Path, *, dense_size: int = DENSE_SIZE) -> None:
        self.path = Path(path)
        self._dense_size = dense_size
        self._gate = _CallGate()
        self._write_lock = threading.Lock()
        self._shard = self._open()

    def __repr__(self) -> str:
        return f"EdgeIndex({str(self.path)!r})"

    def _open(self) -> EdgeShard:
        config = edge_config(self._dense_size)
        try:
            if (self.path / _SHARD_MARKER).exists():
                shard = EdgeShard.load(str(self.path), config)
            else:
                shard = EdgeShard.create(str(self.path), config)
        except Exception as error:
            hint = " (another process, or another EdgeIndex here, has it open)" if "WouldBlock" in str(error) else ""
            raise IndexUnavailable(f"cannot open the Qdrant Edge shard at {self.path}{hint}: {error}") from error
        try:
            with _engine_errors("create the payload indexes"):
                self._create_missing_field_indexes(shard)
        except BaseException:
            shard.close()
            raise
        return shard

    @staticmethod
    def _create_missing_field_indexes(shard: EdgeShard) -> None:
        # enable_hnsw=False: payload_m would otherwise build an extra graph per value of every
        # indexed field (per document, per day...), which made optimize() ~50x slower.
        wanted: dict[str, KeywordIndexParams | DatetimeIndexParams] = {
            TENANT_FIELD: KeywordIndexParams(is_tenant=True),
            **{field: KeywordIndexParams(enable_hnsw=False) for field in KEYWORD_FIELDS},
            CREATED_AT_FIELD: DatetimeIndexParams(enable_hnsw=False),
        }
        existing = shard.info().payload_schema
        for field, schema in wanted.items():
            if field not in existing:
                shard.update(UpdateOperation.create_field_index(field, schema))

    def _read(self, action: str, run: Callable[[EdgeShard], _T]) -> _T:
        with self._gate.call(repr(self)), _engine_errors(action):
            return run(self._shard)

    def _write(self, action: str, operation: UpdateOperation) -> None:
        with self._gate.call(repr(self)), self._write_lock, _engine_errors(action):
            self._shard.update(operation)

    # --- writes ---------------------------------------------------------------------------

    def upsert(self, tenant_id: UUID, points: Sequence[IndexPoint]) -> None:
        validate_points(points, self._dense_size)
        if not points:
            return
        engine_points = [
            Point(
                point.id,
                {
                    DENSE_VECTOR: as_list(point.dense),
                    SPARSE_VECTOR: SparseVector(as_list(point.sparse_indices), as_list(point.sparse_values)),
                },
                point_payload(tenant_id, point),
            )
            for point in points
        ]
        # The condition applies to existing points only: another tenant's point is never overwritten.
        self._write("upsert points", UpdateOperation.upsert_points(engine_points, condition=tenant_filter(tenant_id)))

    def delete_document(self, tenant_id: UUID, document_id: UUID) -> None:
        operation = UpdateOperation.delete_points_by_filter(edge_filter(document_conditions(tenant_id, document_id)))
        self._write("delete a document", operation)

    def delete_tenant(self, tenant_id: UUID) -> None:
        self._write("delete a tenant", UpdateOperation.delete_points_by_filter(tenant_filter(tenant_id)))

    def delete_points(self, tenant_id: UUID, point_ids: Sequence[UUID]) -> None:
        if not point_ids:
            return
        self._write("delete points", UpdateOperation.delete_points_by_filter(_has_ids(tenant_id, point_ids)))

    def optimize(self) -> None:
        with self._gate.call(repr(self)), self._write_lock, _engine_errors("optimize"):
            self._shard.optimize()
            self._shard.flush()

    def close(self) -> None:
        if self._gate.close():
            with self._write_lock:
                try:
                    self._shard.flush()
                finally:
                    self._shard.close()

    # --- reads ----------------------------------------------------------------------------

    def document_point_ids(self, tenant_id: UUID, document_id: UUID) -> set[UUID]:
        document_filter = edge_filter(document_conditions(tenant_id, document_id))

        def scroll_all(shard: EdgeShard) -> set[UUID]:
            ids: set[UUID] = set()
            offset = None
            while True:
                request = ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=document_filter, with_payload=False)
                records, offset = shard.scroll(request)
                ids.update(UUID(str(record.id)) for record in records)
                if offset is None:
                    return ids

        return self._read("list a document's points", scroll_all)

    def count(self, tenant_id: UUID, document_id: UUID | None = None) -> int:
        if document_id is None:
            count_filter = tenant_filter(tenant_id)
        else:
            count_filter = edge_filter(document_conditions(tenant_id, document_id))
        return self._read("count points", lambda shard: shard.count(CountRequest(exact=True, filter=count_filter)))

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
        validate_search(
            dense=dense,
            sparse=sparse,
            mode=mode,
            limit=limit,
            prefetch_limit=prefetch_limit,
            rrf_k=rrf_k,
            dense_size=self._dense_size,
        )
        search_filter = edge_filter(search_conditions(tenant_id, filters))
        if filters is not None and filters.matches_nothing:
            return []
        # BM25 IDF over this tenant's points only (see quarry.index.base).
        idf_params = SearchParams(idf=IdfParams(corpus=tenant_filter(tenant_id)))
        dense_query = None if dense is None else Query.Nearest(as_list(dense), using=DENSE_VECTOR)
        sparse_query = None
        if sparse is not None:
            sparse_query = Query.Nearest(SparseVector(as_list(sparse[0]), as_list(sparse[1])), using=SPARSE_VECTOR)

        def single(query: Query | None, params: SearchParams | None, request_limit: int, explain: bool) -> QueryRequest:
            assert query is not None
            return QueryRequest(
                limit=request_limit,
                query=query,
                filter=search_filter,
                params=params,
                with_payload=False if explain else HIT_PAYLOAD_FIELDS,
            )

        if mode == "dense":
            requests = [single(dense_query, None, limit, explain=False)]
        elif mode == "sparse":
            requests = [single(sparse_query, idf_params, limit, explain=False)]
        else:
            fused = QueryRequest(
                limit=limit,
                prefetches=[
                    Prefetch(limit=prefetch_limit, query=dense_query, filter=search_filter),
                    Prefetch(limit=prefetch_limit, query=sparse_query, filter=search_filter, params=idf_params),
                ],
                # The stub types `query` as Fusion, whose variants are its nested classes such as Rrf.
                query=Fusion.Rrf(k=engine_rrf_k(rrf_k)),  # type: ignore[arg-type]
                filter=search_filter,
                with_payload=HIT_PAYLOAD_FIELDS,
            )
            requests = [fused]
            if explain:  # the two prefetches again on their own, for the ranks; one planned batch
                requests += [
                    single(dense_query, None, prefetch_limit, explain=True),
                    single(sparse_query, idf_params, prefetch_limit, explain=True),
                ]

        def run(shard: EdgeShard) -> list[list[ScoredPoint]]:
            return shard.query_batch(QueryBatchRequest(requests))

        responses = self._read("search", run)
        results = [ranked_point(point.id, point.payload, point.score) for point in responses[0]]
        if mode == "hybrid" and explain:
            dense_ranks = ranks((point.id, point.score) for point in responses[1])
            sparse_ranks = ranks((point.id, point.score) for point in responses[2])
            return assemble_hits(tenant_id, mode, results, dense_ranks, sparse_ranks)
        return assemble_hits(tenant_id, mode, results)
