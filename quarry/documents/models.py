"""Request and response bodies of the documents API (declared once: validation, OpenAPI, services)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from quarry.models import INTEGRAL, RequestModel, ResponseModel, Timestamp

DocumentStatus = Literal["queued", "processing", "indexing", "ready", "failed"]
DocumentSource = Literal["upload", "drive"]
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_CURSOR_LENGTH = 200


class Document(ResponseModel):
    """A document and where its processing stands."""

    id: UUID
    title: str
    source: DocumentSource
    mime_type: str | None
    size_bytes: int
    status: DocumentStatus
    error_reason: str | None = Field(description="Why processing failed, in words a user understands.")
    page_count: int | None = Field(description="Pages, slides, sheets or sections, once processed.")
    chunk_count: int | None
    created_at: Timestamp
    updated_at: Timestamp
    ready_at: Timestamp | None


class DocumentPage(ResponseModel):
    data: list[Document]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class DocumentListQuery(RequestModel):
    """The query string of GET /api/documents."""

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE), INTEGRAL] = DEFAULT_PAGE_SIZE
    cursor: Annotated[str, Field(max_length=MAX_CURSOR_LENGTH)] | None = Field(
        None, description="`next_cursor` of the previous page"
    )
    status: DocumentStatus | None = None
    source: DocumentSource | None = None
