"""Request and response bodies of search (declared once: validation, OpenAPI, the service)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints

from quarry.documents.models import DocumentSource
from quarry.index.base import SearchMode
from quarry.models import INTEGRAL, NOT_BLANK_PATTERN, RequestModel, ResponseModel, Text

MAX_QUERY_CHARS = 1000
MAX_TOP_K = 50
DEFAULT_TOP_K = 10
MAX_FILTER_VALUES = 100


class SearchFilters(RequestModel):
    """Narrow the search; every filter given must hold.  An empty time range matches nothing."""

    document_ids: Annotated[list[UUID], Field(min_length=1, max_length=MAX_FILTER_VALUES)] | None = None
    source: DocumentSource | None = None
    mime_types: Annotated[list[Text], Field(min_length=1, max_length=MAX_FILTER_VALUES)] | None = None
    created_from: AwareDatetime | None = Field(None, description="documents created at or after")
    created_to: AwareDatetime | None = Field(None, description="documents created at or before")


class SearchRequest(RequestModel):
    query: Annotated[
        str, StringConstraints(max_length=MAX_QUERY_CHARS, pattern=NOT_BLANK_PATTERN), Field(description="not blank")
    ]
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), INTEGRAL] = DEFAULT_TOP_K
    mode: SearchMode = "hybrid"
    explain: bool = False
    filters: SearchFilters | None = None


class ResultDocument(ResponseModel):
    id: UUID
    title: str
    source: DocumentSource
    mime_type: str | None


class Explanation(ResponseModel):
    """How a result got its rank: each list's rank and score (null: not in that list) and the fusion."""

    dense_rank: int | None
    dense_score: float | None
    sparse_rank: int | None
    sparse_score: float | None
    fused_score: float
    rrf_k: int


class SearchResult(ResponseModel):
    chunk_id: UUID
    text: str
    score: float
    position: dict[str, int | str] = Field(description="where in the document: page, slide, sheet, section …")
    document: ResultDocument
    explain: Explanation | None = None


class SearchTimings(ResponseModel):
    embed: float
    index: float
    hydrate: float


class SearchResponse(ResponseModel):
    query: str
    mode: SearchMode
    results: list[SearchResult]
    latency_ms: float
    timings_ms: SearchTimings
