"""The server backend: a Qdrant server or cluster through qdrant-client (REST, synchronous).

Any number of gateways and workers may share the collection.  The collection and
its payload indexes are created on first use, not in the constructor, so a process
starts while the server is down and the first call raises IndexUnavailable.

`location=":memory:"` runs qdrant-client's local mode (a pure-Python engine, for
tests): it scans rather than indexes, and it is not thread-safe, so calls to it
are serialised.  The server needs per-query IDF corpora (IdfCorpusParams), i.e.
a Qdrant server at least as new as this qdrant-client.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar
from uuid import UUID

from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from quarry.index.base import (
    CREATED_AT_FIELD,
    DEFAULT_COLLECTION,
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
    search_conditions,
    tenant_condition,
    validate_points,
    validate_search,
)

_SCROLL_PAGE = 1_000
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CONFLICT = 409
_NOT_FOUND = 404

_T = TypeVar("_T")


def server_filter(conditions: Sequence[Condition]) -> qm.Filter:
    must: list[qm.Condition] = []
    for condition in conditions:
        if isinstance(condition, KeywordMatch):
            if len(condition.values) == 1:
                match: qm.Match = qm.MatchValue(value=condition.values[0])
            else:
                match = qm.MatchAny(any=list(condition.values))
            must.append(qm.FieldCondition(key=condition.field, match=match))
        else:
            time_range = qm.DatetimeRange(gte=condition.gte, lte=condition.lte)
            must.append(qm.FieldCondition(key=condition.field, range=time_range))
    return qm.Filter(must=must)


def tenant_filter(tenant_id: UUID) -> qm.Filter:
    return server_filter([tenant_condition(tenant_id)])


class ServerIndex:
    """The VectorIndex backed by one Qdrant collection."""

    def __init__(
        self,
        url: str | None = None,
        *,
        location: str | None = None,
        api_key: str | None = None,
        collection: str = DEFAULT_COLLECTION,
        timeout: int = 10,
        dense_size: int = DENSE_SIZE,
    ) -> None:
        if (url is None) == (location is None):
            raise ValueError("give exactly one of url (a Qdrant server) and location (':memory:' or a path)")
        self.collection = collection
        self._dense_size = dense_size
        self._local = location is not None
        # check_compatibility would probe the server from a background thread at construction.
        self._client = QdrantClient(
            url=url, location=location, api_key=api_key, timeout=timeout, check_compatibility=False
        )
        self._engine_lock: AbstractContextManager[object] = threading.Lock() if self._local else nullcontext()
        self._setup_lock = threading.Lock()
        self._collection_ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"ServerIndex(collection={self.collection!r})"

    # --- connection and setup -------------------------------------------------------------

    @contextmanager
    def _engine_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except ResponseHandlingException as error:  # transport: refused, timed out, reset
            raise IndexUnavailable(f"Qdrant is unreachable ({action}): {error}") from error
        except UnexpectedResponse as error:
            if error.status_code == _NOT_FOUND and "collection" in str(error).lower():
                # Dropped under us: recreate it on the next call (the relay must then rebuild it from PG).
                self._collection_ready = False
                raise IndexUnavailable(f"Qdrant collection {self.collection!r} is missing ({action})") from error
            if error.status_code in _TRANSIENT_STATUSES:
                raise IndexUnavailable(f"Qdrant answered {error.status_code} ({action}): {error}") from error
            raise

    def _call(self, action: str, run: Callable[[QdrantClient], _T]) -> _T:
        if self._closed:
            raise IndexUnavailable(f"{self!r} is closed")
        with self._engine_errors(action):
            self._ensure_collection()
            with self._engine_lock:
                return run(self._client)

    def _ensure_collection(self) -> None:
        if self._collection_ready:
            return
        with self._setup_lock, self._engine_lock:
            if self._collection_ready:
                return
            if not self._client.collection_exists(self.collection):
                self._create_collection()
            self._check_collection()
            self._create_payload_indexes()
            self._collection_ready = True

    def _create_collection(self) -> None:
        try:
            self._client.create_collection(
                self.collection,
                vectors_config={DENSE_VECTOR: qm.VectorParams(size=self._dense_size, distance=qm.Distance.COSINE)},
                sparse_vectors_config={SPARSE_VECTOR: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                hnsw_config=qm.HnswConfigDiff(
                    m=HNSW_M,
                    payload_m=HNSW_PAYLOAD_M,
                    ef_construct=HNSW_EF_CONSTRUCT,
                    full_scan_threshold=HNSW_FULL_SCAN_THRESHOLD_KB,
                ),
            )
        except UnexpectedResponse as error:
            if error.status_code != _CONFLICT:  # another process created it first
                raise

    def _check_collection(self) -> None:
        params = self._client.get_collection(self.collection).config.params
        vectors = params.vectors
        dense = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        sparse = (params.sparse_vectors or {}).get(SPARSE_VECTOR)
        if dense is None or dense.size != self._dense_size or dense.distance != qm.Distance.COSINE:
            expected = f"a {self._dense_size}-d cosine {DENSE_VECTOR!r} vector"
            raise ValueError(f"collection {self.collection!r} lacks {expected}")
        if sparse is None or sparse.modifier != qm.Modifier.IDF:
            raise ValueError(f"collection {self.collection!r} has no IDF-weighted sparse {SPARSE_VECTOR!r} vector")

    def _create_payload_indexes(self) -> None:
        keyword = qm.KeywordIndexType.KEYWORD
        # enable_hnsw=False: payload_m would otherwise build an extra graph per value of every
        # indexed field (per document, per day...); only tenants get their own graphs.
        schemas: dict[str, qm.KeywordIndexParams | qm.DatetimeIndexParams] = {
            TENANT_FIELD: qm.KeywordIndexParams(type=keyword, is_tenant=True),
            **{field: qm.KeywordIndexParams(type=keyword, enable_hnsw=False) for field in KEYWORD_FIELDS},
            CREATED_AT_FIELD: qm.DatetimeIndexParams(type=qm.DatetimeIndexType.DATETIME, enable_hnsw=False),
        }
        with warnings.catch_warnings() if self._local else nullcontext():
            if self._local:  # it accepts payload indexes but warns that it scans anyway
                warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
            for field, schema in schemas.items():
                self._client.create_payload_index(self.collection, field, field_schema=schema, wait=True)

    # --- writes ---------------------------------------------------------------------------

    def upsert(self, tenant_id: UUID, points: Sequence[IndexPoint]) -> None:
        validate_points(points, self._dense_size)
        if not points:
            return
        structs = [
            qm.PointStruct(
                id=str(point.id),
                vector={
                    DENSE_VECTOR: as_list(point.dense),
                    SPARSE_VECTOR: qm.SparseVector(
                        indices=as_list(point.sparse_indices), values=as_list(point.sparse_values)
                    ),
                },
                payload=point_payload(tenant_id, point),
            )
            for point in points
        ]
        # update_filter applies to existing points only: another tenant's point is never overwritten.
        only_own = tenant_filter(tenant_id)
        self._call(
            "upsert points",
            lambda client: client.upsert(self.collection, structs, wait=True, update_filter=only_own),
        )

    def delete_document(self, tenant_id: UUID, document_id: UUID) -> None:
        selector = qm.FilterSelector(filter=server_filter(document_conditions(tenant_id, document_id)))
        self._call("delete a document", lambda client: client.delete(self.collection, selector, wait=True))

    def delete_tenant(self, tenant_id: UUID) -> None:
        selector = qm.FilterSelector(filter=tenant_filter(tenant_id))
        self._call("delete a tenant", lambda client: client.delete(self.collection, selector, wait=True))

    def delete_points(self, tenant_id: UUID, point_ids: Sequence[UUID]) -> None:
        if not point_ids:
            return
        own_ids = qm.Filter(
            must=[tenant_filter(tenant_id), qm.HasIdCondition(has_id=[str(point_id) for point_id in point_ids])]
        )
        selector = qm.FilterSelector(filter=own_ids)
        self._call("delete points", lambda client: client.delete(self.collection, selector, wait=True))

    def optimize(self) -> None:
        """The server optimises in the background."""

    def close(self) -> None:
        self._closed = True
        with self._engine_lock:
            self._client.close()

    # --- reads ----------------------------------------------------------------------------

    def document_point_ids(self, tenant_id: UUID, document_id: UUID) -> set[UUID]:
        document_filter = server_filter(document_conditions(tenant_id, document_id))

        def scroll_all(client: QdrantClient) -> set[UUID]:
            ids: set[UUID] = set()
            offset: qm.ExtendedPointId | None = None
            while True:
                records, offset = client.scroll(
                    self.collection,
                    scroll_filter=document_filter,
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
                ids.update(UUID(str(record.id)) for record in records)
                if offset is None:
                    return ids

        return self._call("list a document's points", scroll_all)

    def count(self, tenant_id: UUID, document_id: UUID | None = None) -> int:
        if document_id is None:
            count_filter = tenant_filter(tenant_id)
        else:
            count_filter = server_filter(document_conditions(tenant_id, document_id))
        result = self._call("count points", lambda client: client.count(self.collection, count_filter, exact=True))
        return result.count

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
        search_filter = server_filter(search_conditions(tenant_id, filters))
        if filters is not None and filters.matches_nothing:
            return []
        # BM25 IDF over this tenant's points only (see quarry.index.base).
        idf_params = qm.SearchParams(idf=qm.IdfCorpusParams(corpus=tenant_filter(tenant_id)))
        dense_query = None if dense is None else as_list(dense)
        sparse_query = None
        if sparse is not None:
            sparse_query = qm.SparseVector(indices=as_list(sparse[0]), values=as_list(sparse[1]))

        def single(
            query: list[float] | qm.SparseVector | None,
            using: str,
            params: qm.SearchParams | None,
            request_limit: int,
            explain: bool,
        ) -> qm.QueryRequest:
            assert query is not None
            return qm.QueryRequest(
                query=query,
                using=using,
                filter=search_filter,
                params=params,
                limit=request_limit,
                with_payload=False if explain else HIT_PAYLOAD_FIELDS,
            )

        if mode == "dense":
            requests = [single(dense_query, DENSE_VECTOR, None, limit, explain=False)]
        elif mode == "sparse":
            requests = [single(sparse_query, SPARSE_VECTOR, idf_params, limit, explain=False)]
        else:
            fused = qm.QueryRequest(
                prefetch=[
                    qm.Prefetch(query=dense_query, using=DENSE_VECTOR, filter=search_filter, limit=prefetch_limit),
                    qm.Prefetch(
                        query=sparse_query,
                        using=SPARSE_VECTOR,
                        filter=search_filter,
                        params=idf_params,
                        limit=prefetch_limit,
                    ),
                ],
                query=qm.RrfQuery(rrf=qm.Rrf(k=engine_rrf_k(rrf_k))),
                filter=search_filter,
                limit=limit,
                with_payload=HIT_PAYLOAD_FIELDS,
            )
            requests = [fused]
            if explain:  # the two prefetches again on their own, for the ranks; one round trip
                requests += [
                    single(dense_query, DENSE_VECTOR, None, prefetch_limit, explain=True),
                    single(sparse_query, SPARSE_VECTOR, idf_params, prefetch_limit, explain=True),
                ]

        batch = self._call("search", lambda client: client.query_batch_points(self.collection, requests))
        results = [ranked_point(point.id, point.payload, point.score) for point in batch[0].points]
        if mode == "hybrid" and explain:
            dense_ranks = ranks((point.id, point.score) for point in batch[1].points)
            sparse_ranks = ranks((point.id, point.score) for point in batch[2].points)
            return assemble_hits(tenant_id, mode, results, dense_ranks, sparse_ranks)
        return assemble_hits(tenant_id, mode, results)
