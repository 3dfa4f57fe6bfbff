"""Response bodies of the export API."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import Field

from quarry.models import ResponseModel, Timestamp

ExportStatus = Literal["queued", "running", "ready", "failed", "expired"]


class Export(ResponseModel):
    """One export: where it is, what it holds, and (when ready) where to get it."""

    id: UUID
    status: ExportStatus
    progress: dict[str, Any] = Field(
        description="while running: `file` being written, `rows` written so far, `files_done`, `files_total`"
    )
    counts: dict[str, int] | None = Field(description="rows per JSON file and the number of originals (when ready)")
    size_bytes: int | None = Field(description="the archive's size (when ready)")
    error: str | None = Field(description="why it failed")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    expires_at: Timestamp | None = Field(description="when the archive and its link expire (when ready)")
    download_url: str | None = Field(
        description="while ready: a presigned link (S3), or the gateway's download route for the owner (local)"
    )


class ExportList(ResponseModel):
    data: list[Export]
