"""Hybrid search: validate, log (SQL), embed, query the index under the tenant, hydrate (SQL).

The tenant filter comes from the verified principal only; filters are applied
inside the engine; text and metadata are read back from Postgres under RLS in
one statement, so the index can never hand one tenant another's text.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.db import Connection
from gateway.errors import Problem
from gateway.index.base import SEARCH_MODES, IndexHit, SearchFilters, SearchMode, VectorIndex
from gateway.query_embedding import query_embedders

MAX_QUERY_CHARS = 1000
MAX_TOP_K = 50
DEFAULT_TOP_K = 10
MAX_FILTER_VALUES = 100
# On SciFact (bench/retrieval.py --tune) every RRF k from 10 to 200 and prefetch from 50 to 200
# scored within run-to-run noise of each other; these are the usual k and the cheaper depth.
PREFETCH_LIMIT = 100
RRF_K = 60
SOURCES = ("upload", "drive")


def invalid(detail: str) -> Problem:
    return Problem(422, "invalid-query", detail)


@dataclass(frozen=True)
class SearchRequest:
    query: str
    top_k: int
    mode: SearchMode
    filters: SearchFilters | None
    explain: bool


def parse_request(body: Any) -> SearchRequest:
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object.")
    unknown = set(body) - {"query", "top_k", "mode", "filters", "explain"}
    if unknown:
        raise invalid(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise invalid("`query` must be a non-empty string.")
    if len(query) > MAX_QUERY_CHARS:
        raise invalid(f"`query` is longer than {MAX_QUERY_CHARS} characters.")
    top_k = body.get("top_k", DEFAULT_TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise invalid(f"`top_k` must be a whole number from 1 to {MAX_TOP_K}.")
    mode = body.get("mode", "hybrid")
    if mode not in SEARCH_MODES:
        raise invalid(f"`mode` must be one of {', '.join(SEARCH_MODES)}.")
    explain = body.get("explain", False)
    if not isinstance(explain, bool):
        raise invalid("`explain` must be true or false.")
    return SearchRequest(query.strip(), top_k, mode, parse_filters(body.get("filters")), explain)


def parse_filters(raw: Any) -> SearchFilters | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("`filters` must be an object.")
    unknown = set(raw) - {"document_ids", "source", "mime_types", "created_from", "created_to"}
    if unknown:
        raise invalid(f"Unknown filter(s): {', '.join(sorted(unknown))}.")
    document_ids = None
    if "document_ids" in raw:
        values = _string_list(raw["document_ids"], "document_ids")
        try:
            document_ids = [uuid.UUID(value) for value in values]
        except ValueError:
            raise invalid("`filters.document_ids` must contain document ids (UUIDs).") from None
    sources = None
    if "source" in raw:
        if raw["source"] not in SOURCES:
            raise invalid(f"`filters.source` must be one of {', '.join(SOURCES)}.")
        sources = [raw["source"]]
    mime_types = _string_list(raw["mime_types"], "mime_types") if "mime_types" in raw else None
    created_from = _timestamp(raw.get("created_from"), "created_from")
    created_to = _timestamp(raw.get("created_to"), "created_to")
    if created_from and created_to and created_from > created_to:
        raise invalid("`filters.created_from` is after `filters.created_to`.")
    return SearchFilters(document_ids, sources, mime_types, created_from, created_to)


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise invalid(f"`filters.{name}` must be a non-empty list of strings.")
    if len(value) > MAX_FILTER_VALUES:
        raise invalid(f"`filters.{name}` has more than {MAX_FILTER_VALUES} values.")
    return value


def _timestamp(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise invalid(f"`filters.{name}` must be an ISO 8601 timestamp with a time zone.")
    return parsed


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    embed_ms: float = 0.0
    index_ms: float = 0.0
    hydrate_ms: float = 0.0

    def total_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


async def record_query(conn: Connection, request: SearchRequest, api_key_id: uuid.UUID | None) -> uuid.UUID:
    row = await (
        await conn.execute(
            "select app.record_query(%s, %s, %s) as id", (request.query, request.mode, api_key_id), prepare=True
        )
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def run_search(
    index: VectorIndex,
    tenant_id: uuid.UUID,
    request: SearchRequest,
    model_dir: Path | None,
    model_cache_dir: Path,
    timings: Timings,
) -> list[IndexHit]:
    """Embed and search (blocking: the caller runs it in a thread)."""
    started = time.perf_counter()
    dense_embedder, sparse_embedder = query_embedders(model_dir, model_cache_dir)
    dense = dense_embedder.embed(request.query) if request.mode != "sparse" else None
    sparse_vector = sparse_embedder.query(request.query) if request.mode != "dense" else None
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
        filters=request.filters,
        rrf_k=RRF_K,
        explain=request.explain,
    )
    timings.index_ms = (time.perf_counter() - started) * 1000
    return hits


_HYDRATE = """
select h.rank, c.id, c.text, c.position, c.document_id, d.title, d.source::text as source, d.mime_type
from unnest(%s::uuid[]) with ordinality as h (id, rank)
inner join app.chunks as c on c.id = h.id
inner join app.documents as d on d.tenant_id = c.tenant_id and d.id = c.document_id
order by h.rank
"""


async def hydrate(
    conn: Connection, hits: list[IndexHit], request: SearchRequest, log_id: uuid.UUID, timings: Timings
) -> dict[str, Any]:
    started = time.perf_counter()
    rows = await (await conn.execute(_HYDRATE, ([hit.id for hit in hits],), prepare=True)).fetchall()
    by_id = {hit.id: hit for hit in hits}
    results = [_result(row, by_id[row["id"]], request.explain) for row in rows]
    timings.hydrate_ms = (time.perf_counter() - started) * 1000
    latency_ms = timings.total_ms()
    await conn.execute(
        "select app.complete_query(%s, %s::integer, %s::real)",
        (log_id, len(results), round(latency_ms, 3)),
        prepare=True,
    )
    return {
        "query": request.query,
        "mode": request.mode,
        "results": results,
        "latency_ms": round(latency_ms, 3),
        "timings_ms": {
            "embed": round(timings.embed_ms, 3),
            "index": round(timings.index_ms, 3),
            "hydrate": round(timings.hydrate_ms, 3),
        },
    }


def _result(row: dict[str, Any], hit: IndexHit, explain: bool) -> dict[str, Any]:
    result: dict[str, Any] = {
        "chunk_id": str(row["id"]),
        "text": row["text"],
        "score": hit.score,
        "position": row["position"],
        "document": {
            "id": str(row["document_id"]),
            "title": row["title"],
            "source": row["source"],
            "mime_type": row["mime_type"],
        },
    }
    if explain:
        result["explain"] = {
            "dense_rank": hit.dense_rank,
            "dense_score": hit.dense_score,
            "sparse_rank": hit.sparse_rank,
            "sparse_score": hit.sparse_score,
            "fused_score": hit.score,
            "rrf_k": RRF_K,
        }
    return result
