"""Google's Drive v3 through the official client (google-api-python-client, google-auth).

The service is built from the discovery document bundled with the client
(`static_discovery=True`: nothing is fetched), at the endpoint the settings
name, with google-auth credentials that refresh against the settings'
`token_uri`.  Every call goes through `DriveClient.call`: rate limits (429,
403 rateLimitExceeded/userRateLimitExceeded) and 5xx are retried with capped
exponential backoff and full jitter, never sooner than a `Retry-After`; 401
makes the credentials refresh (google-auth-httplib2 does it); Google refusing
the refresh token (`invalid_grant`) is `DriveAuthRevoked`, never retried.

The client is synchronous (httplib2); the async callers run it in a thread,
one call at a time per client.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from quarry.errors import QuarryError
from quarry.settings import DriveSettings

logger = logging.getLogger("quarry.drive.google")

DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
FILE_FIELDS = "id, name, mimeType, parents, trashed, size, md5Checksum, version, modifiedTime, shortcutDetails, driveId"
# list_children's corpus when the folder's drive is not known (the folder picker).
ANY_DRIVE = "*"
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
HTTP_TIMEOUT_SECONDS = 60


class DriveError(QuarryError):
    """Google answered with a failure the sync cannot retry away."""

    status = 502
    slug = "drive-error"


class DriveAuthRevoked(DriveError):
    """The refresh token was refused (`invalid_grant`): the user must consent again."""

    status = 409
    slug = "drive-needs-reauth"


class DriveNotFound(DriveError):
    status = 404
    slug = "not-found"


class DriveExportTooLarge(DriveError):
    status = 413
    slug = "payload-too-large"


class DriveTokenExpired(DriveError):
    """A Changes page token Google no longer honours (410): the folder needs a full reconciliation."""

    status = 410
    slug = "drive-token-expired"


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 1.0
    max_seconds: float = 32.0
    max_retries: int = 6

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter under a capped exponential; never less than Retry-After."""
        ceiling = min(self.max_seconds, self.base_seconds * 2**attempt)
        jittered = random.uniform(0, ceiling)  # noqa: S311 (jitter, not a secret)
        return min(self.max_seconds, max(jittered, retry_after or 0.0))


def _reason(error: HttpError) -> str:
    try:
        body = json.loads(error.content or b"{}")
        errors = body.get("error", {}).get("errors") or [{}]
        return str(errors[0].get("reason") or "")
    except (ValueError, AttributeError):
        return ""


def _retry_after(error: HttpError) -> float | None:
    raw = error.resp.get("retry-after") if error.resp is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def retryable(error: HttpError) -> bool:
    status = int(error.resp.status)
    return status == 429 or status >= 500 or (status == 403 and _reason(error) in RATE_LIMIT_REASONS)


class DriveClient:
    """One tenant's Drive, for one sync (or one request): not shared between threads."""

    def __init__(
        self,
        settings: DriveSettings,
        refresh_token: str,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self.credentials = Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=refresh_token,
            token_uri=settings.token_uri,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            scopes=[DRIVE_READONLY],
        )
        self._http = httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS)
        http = google_auth_httplib2.AuthorizedHttp(self.credentials, http=self._http)
        self.service: Any = build(
            "drive",
            "v3",
            http=http,
            client_options={"api_endpoint": settings.api_endpoint},
            static_discovery=True,
            cache_discovery=False,
        )
        # Each `service.files()` builds every method of the resource from the discovery document
        # again (about 3 ms of CPU, under the GIL): built once per client instead.
        self._files: Any = self.service.files()
        self._changes: Any = self.service.changes()
        self.backoff = backoff or Backoff(
            base_seconds=settings.backoff_base_seconds,
            max_seconds=settings.max_backoff_seconds,
            max_retries=settings.max_retries,
        )
        self._sleep = sleep
        self.retries = 0  # how many times a call was retried (for logs and tests)

    def close(self) -> None:
        """Close the connections to Google (httplib2 keeps them open)."""
        self._http.close()

    def call(self, request: Callable[[], Any]) -> Any:
        """Run one request (a function building and executing it), retrying what Google asks to retry."""
        attempt = 0
        while True:
            try:
                return request()
            except RefreshError as error:
                if "invalid_grant" in str(error):
                    raise DriveAuthRevoked("Google refused the Drive authorization (invalid_grant).") from None
                raise DriveError(f"Google refused to refresh the Drive token: {type(error).__name__}") from None
            except HttpError as error:
                status = int(error.resp.status)
                if status == 404:
                    raise DriveNotFound("Not found in Google Drive.") from None
                if status == 410:
                    raise DriveTokenExpired("The Drive changes token expired.") from None
                if status == 403 and _reason(error) == "exportSizeLimitExceeded":
                    raise DriveExportTooLarge("Google Drive cannot export this file: it is too large.") from None
                if not retryable(error) or attempt >= self.backoff.max_retries:
                    raise DriveError(f"Google Drive answered {status} ({_reason(error) or 'no reason'}).") from None
                delay = self.backoff.delay(attempt, _retry_after(error))
            except (TransportError, OSError, httplib2.HttpLib2Error) as error:
                if attempt >= self.backoff.max_retries:
                    raise DriveError(f"Google Drive cannot be reached ({type(error).__name__}).") from None
                delay = self.backoff.delay(attempt, None)
            attempt += 1
            self.retries += 1
            logger.info("Drive call retried in %.2fs (attempt %d)", delay, attempt)
            self._sleep(delay)

    # --- the calls the sync and the endpoints use

    def get(self, file_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            lambda: self._files.get(fileId=file_id, fields=FILE_FIELDS, supportsAllDrives=True).execute()
        )
        return result

    def list_children(
        self, parent: str, page_token: str | None, *, folders_only: bool = False, drive_id: str | None = None
    ) -> dict[str, Any]:
        """One page of a folder's children, in the folder's own corpus: its shared drive's
        (`drive_id`), or the user's (My Drive); `ANY_DRIVE` when the folder's drive is unknown."""
        q = f"'{_quoted(parent)}' in parents and trashed = false"
        if folders_only:
            q += f" and mimeType = '{FOLDER}'"
        corpus: dict[str, Any] = {"corpora": "user"}
        if drive_id == ANY_DRIVE:
            corpus = {"corpora": "allDrives"}
        elif drive_id is not None:
            corpus = {"corpora": "drive", "driveId": drive_id}
        result: dict[str, Any] = self.call(
            lambda: self._files.list(
                q=q,
                pageSize=self._settings.page_size,
                pageToken=page_token,
                fields=f"nextPageToken, files({FILE_FIELDS})",
                includeItemsFromAllDrives=True,
                supportsAllDrives=True,
                **corpus,
            ).execute()
        )
        return result

    def download(self, file_id: str) -> bytes:
        content: bytes = self.call(lambda: self._files.get_media(fileId=file_id, supportsAllDrives=True).execute())
        return content

    def export(self, file_id: str, mime_type: str) -> bytes:
        content: bytes = self.call(lambda: self._files.export(fileId=file_id, mimeType=mime_type).execute())
        return content

    def start_page_token(self, drive_id: str | None = None) -> str:
        """Where the change log starts now: the shared drive's own (`drive_id`), or the user's."""
        result = self.call(lambda: self._changes.getStartPageToken(supportsAllDrives=True, driveId=drive_id).execute())
        return str(result["startPageToken"])

    def changes(self, page_token: str, drive_id: str | None = None) -> dict[str, Any]:
        """A page of the change log: a shared drive's own (some of its changes are only there), or the user's."""
        result: dict[str, Any] = self.call(
            lambda: self._changes.list(
                pageToken=page_token,
                driveId=drive_id,
                pageSize=self._settings.page_size,
                fields=f"nextPageToken, newStartPageToken, changes(fileId, removed, file({FILE_FIELDS}))",
                includeItemsFromAllDrives=True,
                supportsAllDrives=True,
                includeRemoved=True,
            ).execute()
        )
        return result


def _quoted(value: str) -> str:
    """A value inside a `q` string literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
