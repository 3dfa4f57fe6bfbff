"""A local Google for tests: OAuth (consent, PKCE-checked code exchange, refresh, revoke) and Drive v3.

The official clients talk to it unchanged: google-api-python-client with
`client_options={"api_endpoint": f"{base_url}/drive/v3/"}` and its bundled
discovery document, google-auth with `token_uri=f"{base_url}/token"`.  Only
what Quarry uses is here: files.list (the `q` forms `'<id>' in parents`,
`trashed = false`, `mimeType = '…'`, joined by `and`), files.get (+
`alt=media`), files.export, changes.getStartPageToken, changes.list.

Shared drives behave as Google documents them: a shared drive's files are
listed only with `includeItemsFromAllDrives=true` (which needs
`supportsAllDrives=true`) in the `drive` (with `driveId`) or `allDrives`
corpus, never in `user`; files.get and alt=media find them only with
`supportsAllDrives=true`; and each shared drive has its own change log
(changes.getStartPageToken / changes.list with `driveId`): the user's log
never shows a shared drive's changes (Google says some only appear in the
drive's log; here none do, the strictest case).  Pages may be shorter than
`pageSize` asked (`max_page_size`), as Google's may.  Faults
are queued per path prefix (429, 403 rate limit, 5xx with Retry-After, 410 for
expired change tokens, 403 exportSizeLimitExceeded), and every request is
logged so that a test can count what a sync asked for.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
SHORTCUT = "application/vnd.google-apps.shortcut"
DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
_Q_TERM = re.compile(r"^(?:'([^']+)' in parents|trashed = (true|false)|mimeType (=|!=) '([^']+)')$")


@dataclass
class FakeFile:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    content: bytes = b""
    exports: dict[str, bytes] = field(default_factory=dict)
    export_too_large: bool = False
    trashed: bool = False
    version: int = 1
    target: str | None = None  # a shortcut's target file id
    accessible: bool = True
    drive_id: str | None = None  # the shared drive it is in; None: My Drive

    def resource(self, files: dict[str, FakeFile]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": list(self.parents),
            "trashed": self.trashed,
            "version": str(self.version),
            "modifiedTime": "2026-12-01T00:00:00.000Z",
        }
        if not self.mime_type.startswith("application/vnd.google-apps."):
            body["size"] = str(len(self.content))
            body["md5Checksum"] = hashlib.md5(self.content).hexdigest()  # noqa: S324 (Drive's checksum)
        if self.drive_id is not None:
            body["driveId"] = self.drive_id
        if self.target is not None:
            target = files.get(self.target)
            body["shortcutDetails"] = {
                "targetId": self.target,
                "targetMimeType": target.mime_type if target else "application/octet-stream",
            }
        return body


@dataclass
class Fault:
    path_prefix: str
    status: int
    times: int
    reason: str = "rateLimitExceeded"
    retry_after: str | None = None


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    offline: bool


class FakeGoogle:
    """One Google account's Drive plus Google's OAuth endpoints, on 127.0.0.1."""

    def __init__(self, *, client_id: str = "test-client", client_secret: str = "test-secret") -> None:  # noqa: S107
        self.client_id = client_id
        self.client_secret = client_secret
        self.lock = threading.RLock()
        self.files: dict[str, FakeFile] = {}
        # (number, file id, removed, the change logs it is in: None for the user's, a shared drive's id)
        self.changes: list[tuple[int, str, bool, frozenset[str | None]]] = []
        self.drives: dict[str, str] = {}  # shared drive id → name
        self.change_counter = itertools.count(1)
        self.last_change = 0
        self.oldest_valid_token = 0
        self.codes: dict[str, PendingCode] = {}
        self.refresh_tokens: dict[str, str] = {}  # refresh token → scope
        self.access_tokens: dict[str, str] = {}  # access token → refresh token
        self.revoked: list[str] = []
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        # Consent behaviour: what the next authorization answers.
        self.consent = "grant"  # or "deny"
        self.granted_scope: str | None = None  # None: what was asked for
        self.issue_refresh_token = True
        self.invalid_grant = False  # every refresh is refused
        self.list_delay = 0.0  # seconds each files.list takes (to catch a sync mid-crawl)
        self.revoke_delay = 0.0  # seconds a revocation takes (to catch an account deletion mid-step)
        self.max_page_size = 1000  # Google's own cap; lower it for short pages
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle

    def start(self) -> FakeGoogle:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-google").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The gateway's and worker's settings that point Drive at this fake."""
        return {
            "GOOGLE_OAUTH_CLIENT_ID": self.client_id,
            "GOOGLE_OAUTH_CLIENT_SECRET": self.client_secret,
            "GOOGLE_OAUTH_AUTH_URI": f"{self.base_url}/o/oauth2/v2/auth",
            "GOOGLE_OAUTH_TOKEN_URI": f"{self.base_url}/token",
            "GOOGLE_OAUTH_REVOKE_URI": f"{self.base_url}/revoke",
            "GOOGLE_DRIVE_API_ENDPOINT": f"{self.base_url}/drive/v3/",
        }

    # --- the Drive, for tests to arrange

    def new_id(self, prefix: str = "f") -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _changed(self, file_id: str, was_in: str | None, *, removed: bool = False) -> None:
        """A change, in the log of the drive the file is in now and of the one it was in."""
        number = next(self.change_counter)
        file = self.files.get(file_id)
        logs = frozenset({was_in, file.drive_id if file is not None else was_in})
        self.changes.append((number, file_id, removed, logs))
        self.last_change = number

    def shared_drive(self, name: str) -> str:
        """A new shared drive; its id is also the id of its root folder (parent of its top-level files)."""
        with self.lock:
            drive_id = self.new_id("0A")
            self.drives[drive_id] = name
            return drive_id

    def _drive_of(self, parent: str | None) -> str | None:
        if parent is None:
            return None
        if parent in self.drives:
            return parent
        folder = self.files.get(parent)
        return folder.drive_id if folder is not None else None

    def add(self, name: str, mime_type: str, parent: str | None, content: bytes = b"", **kwargs: Any) -> FakeFile:
        with self.lock:
            file = FakeFile(
                self.new_id("d" if mime_type == FOLDER else "f"),
                name,
                mime_type,
                [parent] if parent else [],
                content,
                drive_id=self._drive_of(parent),
                **kwargs,
            )
            self.files[file.id] = file
            self._changed(file.id, file.drive_id)
            return file

    def folder(self, name: str, parent: str | None = None) -> FakeFile:
        return self.add(name, FOLDER, parent)

    def modify(self, file_id: str, content: bytes | None = None, **changes: Any) -> None:
        with self.lock:
            file = self.files[file_id]
            was_in = file.drive_id
            if content is not None:
                file.content = content
            for name, value in changes.items():
                setattr(file, name, value)
            if "parents" in changes:
                file.drive_id = self._drive_of(file.parents[0] if file.parents else None)
            file.version += 1
            self._changed(file_id, was_in)

    def move(self, file_id: str, new_parent: str) -> None:
        self.modify(file_id, parents=[new_parent])

    def trash(self, file_id: str) -> None:
        self.modify(file_id, trashed=True)

    def delete(self, file_id: str) -> None:
        with self.lock:
            file = self.files.pop(file_id)
            self._changed(file_id, file.drive_id, removed=True)

    def lose_access(self, file_id: str) -> None:
        with self.lock:
            self.files[file_id].accessible = False
            self._changed(file_id, self.files[file_id].drive_id, removed=True)

    def expire_change_tokens(self) -> None:
        with self.lock:
            self.oldest_valid_token = self.last_change + 1

    def fail(self, path_prefix: str, status: int, times: int = 1, **kwargs: Any) -> None:
        with self.lock:
            self.faults.append(Fault(path_prefix, status, times, **kwargs))

    def count(self, method: str, path_prefix: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    # --- consent, as a browser would follow it

    def consent_redirect(self, authorize_url: str) -> str:
        """Follow the authorization URL as a user who consents (or not): the redirect back to the app."""
        parts = urlsplit(authorize_url)
        assert f"{parts.scheme}://{parts.netloc}" == self.base_url, authorize_url
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            back: dict[str, str] = {"state": query.get("state", "")}
            if self.consent == "deny":
                back["error"] = "access_denied"
            else:
                code = secrets.token_urlsafe(24)
                scope = self.granted_scope if self.granted_scope is not None else query["scope"]
                self.codes[code] = PendingCode(
                    query["client_id"],
                    query["redirect_uri"],
                    query.get("code_challenge", ""),
                    scope,
                    query.get("access_type") == "offline" and self.issue_refresh_token,
                )
                back.update(code=code, scope=scope)
        return f"{query['redirect_uri']}?{urlencode(back)}"

    # --- HTTP

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((method, handler.path))
            fault = self._take_fault(parts.path)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._error(handler, fault.status, fault.reason, headers)
            return
        try:
            if parts.path == "/o/oauth2/v2/auth":
                location = self.consent_redirect(self.base_url + handler.path)
                self._send(handler, 302, b"", {"Location": location})
            elif parts.path == "/token" and method == "POST":
                self._token(handler, {k: v[0] for k, v in parse_qs(raw.decode()).items()})
            elif parts.path == "/revoke" and method == "POST":
                if self.revoke_delay:
                    time.sleep(self.revoke_delay)
                form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                with self.lock:
                    token = form.get("token") or query.get("token", "")
                    self.revoked.append(token)
                    self.refresh_tokens.pop(token, None)
                self._json(handler, 200, {})
            elif parts.path.startswith("/drive/v3/"):
                if parts.path == "/drive/v3/files" and self.list_delay:
                    time.sleep(self.list_delay)
                self._drive(handler, parts.path.removeprefix("/drive/v3/"), query)
            else:
                self._error(handler, 404, "notFound")
        except BrokenPipeError:
            pass

    def _take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if path.startswith(fault.path_prefix) and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _token(self, handler: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        with self.lock:
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                self._json(handler, 401, {"error": "invalid_client"})
                return
            if form.get("grant_type") == "authorization_code":
                pending = self.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if (
                    pending is None
                    or pending.redirect_uri != form.get("redirect_uri")
                    or challenge != pending.challenge
                ):
                    self._json(handler, 400, {"error": "invalid_grant", "error_description": "Bad code or verifier."})
                    return
                body: dict[str, Any] = {"token_type": "Bearer", "expires_in": 3599, "scope": pending.scope}
                body["access_token"] = access = secrets.token_urlsafe(24)
                if pending.offline:
                    body["refresh_token"] = refresh = "1//" + secrets.token_urlsafe(32)
                    self.refresh_tokens[refresh] = pending.scope
                    self.access_tokens[access] = refresh
                self._json(handler, 200, body)
            elif form.get("grant_type") == "refresh_token":
                refresh = form.get("refresh_token", "")
                if self.invalid_grant or refresh not in self.refresh_tokens:
                    self._json(
                        handler,
                        400,
                        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
                    )
                    return
                access = secrets.token_urlsafe(24)
                self.access_tokens[access] = refresh
                self._json(
                    handler,
                    200,
                    {
                        "access_token": access,
                        "expires_in": 3599,
                        "scope": self.refresh_tokens[refresh],
                        "token_type": "Bearer",
                    },
                )
            else:
                self._json(handler, 400, {"error": "unsupported_grant_type"})

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        header = handler.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        with self.lock:
            refresh = self.access_tokens.get(token)
            return refresh is not None and refresh in self.refresh_tokens

    def _drive(self, handler: BaseHTTPRequestHandler, path: str, query: dict[str, str]) -> None:
        if not self._authorized(handler):
            www = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
            self._error(handler, 401, "authError", {"WWW-Authenticate": www})
            return
        with self.lock:
            if path == "files":
                self._list(handler, query)
            elif path == "changes/startPageToken":
                if self._unknown_drive(handler, query):
                    return
                self._json(handler, 200, {"kind": "drive#startPageToken", "startPageToken": str(self.last_change + 1)})
            elif path == "changes":
                self._changes(handler, query)
            elif match := re.fullmatch(r"files/([^/]+)(/export)?", path):
                self._file(handler, match.group(1), bool(match.group(2)), query)
            else:
                self._error(handler, 404, "notFound")

    def _visible(self) -> Iterator[FakeFile]:
        return (file for file in self.files.values() if file.accessible)

    def _unknown_drive(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> bool:
        """A `driveId` needs supportsAllDrives=true and a shared drive that exists (else the error is sent)."""
        drive_id = query.get("driveId")
        if drive_id is None:
            return False
        if query.get("supportsAllDrives") != "true":
            self._error(handler, 403, "teamDrivesSupportRequired", message="supportsAllDrives must be true.")
            return True
        if drive_id not in self.drives:
            self._error(handler, 404, "notFound", message=f"Shared drive not found: {drive_id}")
            return True
        return False

    def _corpus(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> list[FakeFile] | None:
        """The files a files.list may see, by its corpora (None: the error was sent)."""
        all_drives = query.get("includeItemsFromAllDrives") == "true"
        if all_drives and query.get("supportsAllDrives") != "true":
            message = "includeItemsFromAllDrives needs supportsAllDrives."
            self._error(handler, 403, "teamDrivesSupportRequired", message=message)
            return None
        corpora = query.get("corpora", "user")
        if corpora == "user":
            return [file for file in self._visible() if file.drive_id is None]
        if corpora == "allDrives" and all_drives:
            return list(self._visible())
        if corpora == "drive" and all_drives and query.get("driveId"):
            if self._unknown_drive(handler, query):
                return None
            return [file for file in self._visible() if file.drive_id == query["driveId"]]
        self._error(handler, 400, "invalid", message=f"Invalid corpora: {corpora}")
        return None

    def expire_access_tokens(self) -> None:
        """Every access token handed out so far stops working (the next call is a 401, then a refresh)."""
        with self.lock:
            self.access_tokens.clear()

    def _list(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        terms = [term.strip() for term in query.get("q", "").split(" and ") if term.strip()]
        corpus = self._corpus(handler, query)
        if corpus is None:
            return
        matches = sorted(corpus, key=lambda file: file.id)
        for term in terms:
            parsed = _Q_TERM.match(term)
            if parsed is None:
                self._error(handler, 400, "invalid", message=f"Invalid Value: {term}")
                return
            parent, trashed, operator, mime = parsed.groups()
            if parent is not None:
                matches = [file for file in matches if parent in file.parents]
            elif trashed is not None:
                matches = [file for file in matches if file.trashed == (trashed == "true")]
            else:
                matches = [file for file in matches if (file.mime_type == mime) == (operator == "=")]
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("pageSize") or 100), self.max_page_size)
        page = matches[start : start + size]
        body: dict[str, Any] = {"kind": "drive#fileList", "files": [file.resource(self.files) for file in page]}
        if start + size < len(matches):
            body["nextPageToken"] = str(start + size)
        self._json(handler, 200, body)

    def _changes(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        raw = query.get("pageToken", "")
        if not raw.isdigit():
            self._error(handler, 400, "invalid", message="Invalid Value: pageToken")
            return
        token = int(raw)
        if token < self.oldest_valid_token:
            self._error(handler, 410, "invalidPageToken", message="The page token is no longer valid.")
            return
        if self._unknown_drive(handler, query):
            return
        log = query.get("driveId")  # a shared drive's own log, or (None) the user's
        size = min(int(query.get("pageSize") or 100), self.max_page_size)
        pending = [change for change in self.changes if change[0] >= token and log in change[3]]
        page = pending[:size]
        changes = []
        for _number, file_id, removed, _logs in page:
            file = self.files.get(file_id)
            if removed or file is None or not file.accessible or file.drive_id != log:
                changes.append({"kind": "drive#change", "changeType": "file", "fileId": file_id, "removed": True})
            else:
                changes.append(
                    {
                        "kind": "drive#change",
                        "changeType": "file",
                        "fileId": file_id,
                        "removed": False,
                        "file": file.resource(self.files),
                    }
                )
        body: dict[str, Any] = {"kind": "drive#changeList", "changes": changes}
        if len(pending) > size:
            body["nextPageToken"] = str(page[-1][0] + 1)
        else:
            body["newStartPageToken"] = str(self.last_change + 1)
        self._json(handler, 200, body)

    def _file(self, handler: BaseHTTPRequestHandler, file_id: str, export: bool, query: dict[str, str]) -> None:
        if file_id in self.drives and not export and query.get("alt") != "media":
            if query.get("supportsAllDrives") != "true":
                self._error(handler, 404, "notFound", message=f"File not found: {file_id}.")
                return
            root = {"kind": "drive#file", "id": file_id, "name": self.drives[file_id], "mimeType": FOLDER}
            self._json(handler, 200, {**root, "driveId": file_id, "parents": [], "trashed": False, "version": "1"})
            return
        file = self.files.get(file_id)
        hidden = (
            file is not None and file.drive_id is not None and query.get("supportsAllDrives") != "true" and not export
        )
        if file is None or not file.accessible or hidden:
            self._error(handler, 404, "notFound", message=f"File not found: {file_id}.")
            return
        if export:
            if file.export_too_large:
                self._error(handler, 403, "exportSizeLimitExceeded", message="This file is too large to be exported.")
                return
            content = file.exports.get(query.get("mimeType", ""))
            if content is None:
                self._error(handler, 400, "badRequest", message="Export only supports Docs Editors files.")
                return
            self._send(handler, 200, content, {"Content-Type": query["mimeType"]})
        elif query.get("alt") == "media":
            if file.mime_type.startswith("application/vnd.google-apps."):
                self._error(handler, 403, "fileNotDownloadable", message="Use Export with Docs Editors files.")
                return
            self._send(handler, 200, file.content, {"Content-Type": file.mime_type})
        else:
            self._json(handler, 200, file.resource(self.files))

    # --- responses

    def _error(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        body = {
            "error": {
                "code": status,
                "message": message or reason,
                "errors": [{"domain": "usageLimits" if "ate" in reason else "global", "reason": reason}],
            }
        }
        self._json(handler, status, body, headers)

    def _json(
        self, handler: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None
    ) -> None:
        self._send(handler, status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


DRIVE_SCOPE = DRIVE_READONLY
