"""Request and response bodies of the Drive API."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import ConfigDict, Field, StringConstraints

from quarry.models import RequestModel, ResponseModel, Timestamp

# Drive ids are URL-safe base64-ish; anything else is not one.
DRIVE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,256}$"
DriveId = Annotated[str, StringConstraints(pattern=DRIVE_ID_PATTERN), Field(description="a Google Drive file id")]

ConnectionStatus = Literal["active", "needs_reauth"]
FolderState = Literal["idle", "syncing", "ready", "quota_reached", "paused", "error"]
RunState = Literal["queued", "running", "succeeded", "failed", "quota_reached", "paused"]
FileState = Literal["indexed", "skipped", "failed"]


class AuthorizeReply(ResponseModel):
    url: str = Field(description="Google's consent page; send the browser there")
    expires_at: Timestamp = Field(description="the authorization must complete before this")
    bound_to_browser: bool = Field(
        description="true: the consent must be completed in the browser that received this reply's cookie"
        " (a session's JWT); false: bound by the state alone (an API key's server flow)"
    )


class CallbackQuery(RequestModel):
    """What Google appends to the redirect URI (and whatever else it adds, ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    state: str | None = Field(None, max_length=512)
    code: str | None = Field(None, max_length=2048)
    error: str | None = Field(None, max_length=256)
    scope: str | None = Field(None, max_length=4096)


class FoldersQuery(RequestModel):
    parent: DriveId | None = Field(None, description="list the subfolders of this folder; default: My Drive's root")
    cursor: str | None = Field(None, max_length=1024, description="`next_cursor` of the previous page")


class DriveFolder(ResponseModel):
    id: str
    name: str


class DriveFolderPage(ResponseModel):
    data: list[DriveFolder]
    next_cursor: str | None


class CreateDriveConfig(RequestModel):
    folder_id: DriveId


class DriveConfig(ResponseModel):
    id: UUID
    google_folder_id: str
    name: str
    state: FolderState
    last_synced_at: Timestamp | None
    files_seen: int
    files_indexed: int
    files_skipped: int
    files_failed: int
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp


class DriveConfigList(ResponseModel):
    data: list[DriveConfig]


class DeleteConfigQuery(RequestModel):
    keep_documents: Literal["true", "false"] = Field("false", description="keep the folder's documents")


class SyncRun(ResponseModel):
    id: UUID
    folder_id: UUID
    state: RunState
    full_crawl: bool | None
    files_seen: int
    files_indexed: int
    files_skipped: int
    files_failed: int
    files_removed: int
    error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class DriveFile(ResponseModel):
    file_id: str
    name: str
    mime_type: str
    state: FileState
    document_id: UUID | None
    reason: str | None
    updated_at: Timestamp


class DriveFileList(ResponseModel):
    data: list[DriveFile]


class DriveConnection(ResponseModel):
    id: UUID
    status: ConnectionStatus
    scopes: list[str]
    created_at: Timestamp
    updated_at: Timestamp
