"""Hybrid search: log (SQL, the daily quota), embed, query the index under the tenant, hydrate (SQL).

The tenant filter comes from the session's verified principal only; filters
are applied inside the engine; text and metadata are read back from Postgres
under RLS in one statement, so the index can never hand one tenant another's
text.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quarry.db import Connection, TenantSession
from quarry.index.base import IndexHit, VectorIndex
from quarry.index.base import SearchFilters as IndexFilters
from quarry.index.handle import IndexHandle
from quarry.models import strip_blank
from quarry.query_embedding import query_embedders
from quarry.search.models import (
    Explanation,
    ResultDocument,
    SearchFilters,
    SearchRequest,
    SearchResponse,
    SearchResult,
    SearchTimings,
)

# On SciFact (bench/retrieval.py --tune) every RRF k from 10 to 200 and prefetch from 50 to 200
# scored within run-to-run noise of each other; these are the usual k and the cheaper depth.
PREFETCH_LIMIT = 100
RRF_K = 60
# Concurrent searches beyond this wait for a thread; the model batches their queries anyway.
SEARCH_THREADS = 4


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    embed_ms: float = 0.0
    index_ms: float = 0.0
    hydrate_ms: float = 0.0

    def total_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class SearchService:
    def __init__(self, index: IndexHandle, *, model_dir: Path | None, model_cache_dir: Path) -> None:
        self._index = index
        self._model_dir = model_dir
        self._model_cache_dir = model_cache_dir
        # Searches embed and query the index on threads of their own: in the default executor
        # they queued behind uploads' blocking work (multipart parsing, a 60 MiB fsync).
        self._threads = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="search")

    def close(self) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)

    async def search(self, session: TenantSession, request: SearchRequest) -> SearchResponse:
        """Ranked chunks of the caller's documents; every query is logged (and metered) before any work."""
        timings = Timings()
        query = strip_blank(request.query)
        # The log is the gate (the daily quota): a refused query costs no embedding.
        async with session.transaction() as conn:
            log_id = await record_query(conn, query, request, session.principal.api_key_id)
        hits = await asyncio.get_running_loop().run_in_executor(
            self._threads, self._embed_and_search, session.tenant_id, query, request, timings
        )
        async with session.transaction() as conn:
            return await hydrate(conn, session.tenant_id, hits, query, request, log_id, timings)

    def _embed_and_search(
        self, tenant_id: uuid.UUID, query: str, request: SearchRequest, timings: Timings
    ) -> list[IndexHit]:
        """Embed and search (blocking: runs in a thread)."""
        index = self._index.get()
        return run_search(index, tenant_id, query, request, self._model_dir, self._model_cache_dir, timings)


async def record_query(conn: Connection, query: str, request: SearchRequest, api_key_id: uuid.UUID | None) -> uuid.UUID:
    row = await (
        await conn.execute("select app.record_query(%s, %s, %s) as id", (query, request.mode, api_key_id), prepare=True)
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def index_filters_of(filters: SearchFilters | None) -> IndexFilters | None:
    if filters is None:
        return None
    return IndexFilters(
        document_ids=filters.document_ids,
        sources=[filters.source] if filters.source else None,
        mime_types=filters.mime_types,
        created_from=_utc(filters.created_from),
        created_to=_utc(filters.created_to),
    )


def _utc(moment: datetime | None) -> datetime | None:
    """In UTC; a bound beyond what UTC can represent (year 1 at +14:00) is the calendar's edge."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == datetime.min.year else datetime.max).replace(tzinfo=UTC)


def run_search(
    index: VectorIndex,
    tenant_id: uuid.UUID,
    query: str,
    request: SearchRequest,
    model_dir: Path | None,
    model_cache_dir: Path,
    timings: Timings,
) -> list[IndexHit]:
    started = time.perf_counter()
    dense_embedder, sparse_embedder = query_embedders(model_dir, model_cache_dir)
    dense = dense_embedder.embed(query) if request.mode != "sparse" else None
    sparse_vector = sparse_embedder.query(query) if request.mode != "dense" else None
    sparse = (sparse_vector.indices, sparse_vector.values) if sparse_vector is not None else None
    timings.embed_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    hits = index.search(
        tenant_id,
        dense=dense,
        sparse=sparse,
        mode=request.mode,
        limit=request.top_k,
        prefetch_limit=max(PREFETCH_LIMIT, request.top_k),
        filters=index_filters_of(request.filters),
        rrf_k=RRF_K,
        explain=request.explain,
    )
    timings.index_ms = (time.perf_counter() - started) * 1000
    return hits


_HYDRATE = """
select h.rank, c.id, c.text, c.position, c.document_id, d.title, d.source::text as source, d.mime_type
from unnest(%s::uuid[]) with ordinality as h (id, rank)
inner join app.chunks as c on c.tenant_id = %s and c.id = h.id
inner join app.documents as d on d.tenant_id = c.tenant_id and d.id = c.document_id
where d.tenant_id = %s
order by h.rank
"""


async def hydrate(
    conn: Connection,
    tenant_id: uuid.UUID,
    hits: list[IndexHit],
    query: str,
    request: SearchRequest,
    log_id: uuid.UUID,
    timings: Timings,
) -> SearchResponse:
    started = time.perf_counter()
    rows = await (
        await conn.execute(_HYDRATE, ([hit.id for hit in hits], tenant_id, tenant_id), prepare=True)
    ).fetchall()
    by_id = {hit.id: hit for hit in hits}
    results = [_result(row, by_id[row["id"]], request.explain) for row in rows]
    timings.hydrate_ms = (time.perf_counter() - started) * 1000
    latency_ms = timings.total_ms()
    await conn.execute(
        "select app.complete_query(%s, %s::integer, %s::real)",
        (log_id, len(results), round(latency_ms, 3)),
        prepare=True,
    )
    return SearchResponse(
        query=query,
        mode=request.mode,
        results=results,
        latency_ms=round(latency_ms, 3),
        timings_ms=SearchTimings(
            embed=round(timings.embed_ms, 3), index=round(timings.index_ms, 3), hydrate=round(timings.hydrate_ms, 3)
        ),
    )


def _result(row: dict[str, Any], hit: IndexHit, explain: bool) -> SearchResult:
    return SearchResult(
        chunk_id=row["id"],
        text=row["text"],
        score=hit.score,
        position=row["position"],
        document=ResultDocument(
            id=row["document_id"], title=row["title"], source=row["source"], mime_type=row["mime_type"]
        ),
        explain=Explanation(
            dense_rank=hit.dense_rank,
            dense_score=hit.dense_score,
            sparse_rank=hit.sparse_rank,
            sparse_score=hit.sparse_score,
            fused_score=hit.score,
            rrf_k=RRF_K,
        )
        if explain
        else None,
    )
