"""One sync run of one Drive folder: a checkpointed crawl, then the Changes API.

First run: the Changes start page token is taken **before** the crawl, the
folder's tree is listed page by page (in its own corpus: a folder in a
shared drive is listed in that drive, and followed through that drive's
change log, where some of its changes only appear), and the
token is saved only once the crawl's writes have committed, so nothing that
changed during the crawl is missed.  The crawl's position (the folders left
to list and the page within the current one) is committed after every page:
a worker killed mid-crawl resumes where it was, and the files it had already
imported are recognised by (tenant, folder, Drive id) and their content
checksum, never imported twice.  A completed crawl then forgets whatever it
did not see (a crawl that hit an error never gets that far, so it deletes
nothing).

Later runs follow the Changes API from the saved token, one committed page
at a time, applying only what concerns the folder's tree: a file moved in
is added (a folder moved in is crawled), moved out, trashed, deleted or no
longer shared is removed, a modified one is ingested again in place
(`DocumentService.revise`: same document, same checks as an upload, its old
chunks searchable until the new ones replace them).  A token Google no longer honours
(410) starts a full reconciliation.

Every file becomes a document through `DocumentService.create`, the flow of
`POST /api/documents` (sniffing, the plan's formats, the monthly count and
storage checked atomically).  What cannot be indexed — an unsupported type,
over the size cap, over Google's export limit, a format outside the plan, a
shortcut to a folder or to nothing — is recorded as skipped with its reason
and the run goes on.  The plan's quota running out stops the run as
`quota_reached`, position kept; invalid_grant marks the connection
`needs_reauth` and pauses the folders, with no retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from quarry.db import Connection, TenantSession
from quarry.documents.models import Document
from quarry.documents.service import DocumentService, IncomingFile
from quarry.drive.google import (
    FOLDER,
    SHORTCUT,
    DriveAuthRevoked,
    DriveClient,
    DriveError,
    DriveExportTooLarge,
    DriveNotFound,
    DriveTokenExpired,
)
from quarry.drive.service import Connection as DriveConnection
from quarry.drive.service import Drive
from quarry.drive.sheets import MARKDOWN_SUFFIX, XLSX, sheet_as_markdown
from quarry.errors import NotFound, PayloadTooLarge, QuarryError, QuotaExceeded, Unsupported
from quarry.outbox import wake_relay
from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.pool import ParsePool

logger = logging.getLogger("quarry.drive.sync")

GOOGLE_APPS = "application/vnd.google-apps."
SPREADSHEET = f"{GOOGLE_APPS}spreadsheet"
# Google's own formats: what each is exported as, and the name the document's file gets.  Sheets as
# XLSX (the one export that keeps every tab), turned into Markdown that every plan takes (quarry.drive.sheets).
EXPORTS: dict[str, tuple[str, str]] = {
    f"{GOOGLE_APPS}document": ("text/plain", ".txt"),
    f"{GOOGLE_APPS}presentation": ("text/plain", ".txt"),
    SPREADSHEET: (XLSX, MARKDOWN_SUFFIX),
}


class QuotaStop(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class Counts:
    seen: int = 0
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0

    def as_list(self) -> list[int]:
        return [self.seen, self.indexed, self.skipped, self.failed, self.removed]


@dataclass
class Mapped:
    state: str
    version: str | None
    document_id: uuid.UUID | None
    name: str
    parents: list[str]
    reason: str | None = None


NOT_MAPPED = Mapped("", None, None, "", [])


@dataclass(frozen=True)
class DriveDownload:
    """A FileSource for DocumentService.create: bytes fetched from Drive."""

    content: bytes
    filename: str
    title: str

    @property
    def expected_bytes(self) -> int:
        return len(self.content)

    @property
    def in_memory(self) -> bool:
        return True

    async def receive(self, destination: Path, max_bytes: int) -> IncomingFile:
        if len(self.content) > max_bytes:
            raise PayloadTooLarge(f"The file is over {max_bytes} bytes.", extensions={"limit_bytes": max_bytes})
        await asyncio.to_thread(destination.write_bytes, self.content)
        return IncomingFile(
            path=destination,
            filename=self.filename,
            size=len(self.content),
            sha256=hashlib.sha256(self.content).hexdigest(),
            title=self.title,
        )


@dataclass
class FolderSync:
    drive: Drive
    documents: DocumentService
    session: TenantSession
    folder_id: uuid.UUID
    run_id: uuid.UUID
    parsers: ParsePool  # the worker's parse children (a Sheet's tabs are read there)
    counts: Counts = field(default_factory=Counts)
    root: str = ""
    drive_id: str | None = None  # the folder's shared drive (its change log and corpus); None: My Drive
    mapped: dict[str, Mapped] = field(default_factory=dict)
    concurrency: int = 4
    # One client per file in flight (httplib2 connections are not shared between threads).
    clients: asyncio.Queue[DriveClient] = field(default_factory=asyncio.Queue)

    # --- the run

    async def run(self) -> str:
        """The run's final state."""
        folder = await self._folder()
        if folder is None:
            return "gone"
        self.root = str(folder["google_folder_id"])
        self.drive_id = folder["drive_id"]
        connection = await self.drive.connection(self.session.tenant_id)
        if connection is None or connection.status != "active":
            return await self._finish("paused", "Google Drive is not connected (or needs a new consent).")
        # One per file in flight, and one to list the next page meanwhile.
        clients = [DriveClient(self.drive.settings, connection.refresh_token) for _ in range(self.concurrency + 1)]
        for client in clients:
            self.clients.put_nowait(client)
        try:
            return await self._sync(folder, connection)
        finally:
            for client in clients:
                client.close()

    async def _sync(self, folder: dict[str, Any], connection: DriveConnection) -> str:
        await self._progress("running", None)
        await self._load_mapped()
        try:
            checkpoint = folder["checkpoint"]
            if folder["page_token"] and not checkpoint:
                try:
                    await self._follow_changes(str(folder["page_token"]))
                except DriveTokenExpired:
                    logger.info("changes token expired: full reconciliation")
                    await self._crawl(None)
            else:
                await self._crawl(checkpoint)
        except DriveAuthRevoked:
            return await self._revoked(connection)
        except QuotaStop as stop:
            return await self._finish("quota_reached", stop.detail)
        except DriveError as error:
            return await self._finish("failed", error.detail)
        except QuarryError as error:
            if error.retryable:
                raise  # the job is retried (database or storage briefly away); the run stays running
            await self._finish("failed", error.detail)
            raise
        except Exception:
            # A bug must not leave the run `running` for ever: it fails, and the job says why in the log.
            await self._finish("failed", "The sync failed unexpectedly; it resumes from where it was at the next run.")
            raise
        return await self._finish("succeeded", None)

    async def _revoked(self, connection: DriveConnection) -> str:
        message = "Google refused the Drive authorization (revoked or expired): connect Google Drive again."
        await self._finish("paused", message)
        await self.drive.needs_reauth(connection, message)
        return "paused"

    async def _finish(self, state: str, message: str | None) -> str:
        await self._progress(state, message)
        logger.info(
            "drive sync %s: %s (seen %d, indexed %d, skipped %d, failed %d, removed %d)",
            self.run_id,
            state,
            *self.counts.as_list(),
        )
        return state

    # --- database

    async def _folder(self) -> dict[str, Any] | None:
        async with self.session.transaction() as conn:
            cursor = await conn.execute(
                "select google_folder_id, page_token, checkpoint, drive_id from app.drive_folders"
                " where tenant_id = %s and id = %s",
                (self.session.tenant_id, self.folder_id),
            )
            return await cursor.fetchone()

    async def _load_mapped(self) -> None:
        async with self.session.transaction() as conn:
            cursor = await conn.execute(
                "select file_id, state::text as state, version, document_id, name, parents, reason from app.drive_files"
                " where tenant_id = %s and folder_id = %s",
                (self.session.tenant_id, self.folder_id),
            )
            rows = await cursor.fetchall()
        self.mapped = {
            row["file_id"]: Mapped(
                row["state"], row["version"], row["document_id"], row["name"], list(row["parents"]), row["reason"]
            )
            for row in rows
        }

    async def _progress(self, state: str, message: str | None, full_crawl: bool | None = None) -> None:
        async with self.session.transaction() as conn:
            await conn.execute(
                "select internal.drive_run_progress(%s, %s::app.drive_run_state, %s::integer[], %s, %s::boolean)",
                (self.run_id, state, self.counts.as_list(), message, full_crawl),
            )

    async def _checkpoint(self, position: dict[str, Any] | None, token: str | None) -> None:
        async with self.session.transaction() as conn:
            await conn.execute(
                "select internal.drive_checkpoint(%s, %s::jsonb, %s::text)",
                (self.folder_id, Jsonb(position) if position is not None else None, token),
            )

    async def _put(
        self,
        conn: Connection,
        item: dict[str, Any],
        state: str,
        version: str | None,
        document: uuid.UUID | None,
        reason: str | None,
        crawl: uuid.UUID | None,
    ) -> None:
        await conn.execute(
            "select internal.put_drive_file("
            "%s, %s, %s::app.drive_file_state, %s, %s, %s::text[], %s, %s::uuid, %s, %s::uuid)",
            (
                self.folder_id,
                item["id"],
                state,
                str(item.get("name") or item["id"]),
                str(item.get("mimeType") or "application/octet-stream"),
                list(item.get("parents") or []),
                version,
                document,
                reason,
                crawl,
            ),
            prepare=True,
        )
        self.mapped[item["id"]] = Mapped(
            state, version, document, str(item.get("name") or item["id"]), list(item.get("parents") or []), reason
        )

    async def _record(
        self,
        item: dict[str, Any],
        state: str,
        version: str | None,
        reason: str | None,
        crawl: uuid.UUID | None,
        *,
        keep_document: bool = False,
    ) -> None:
        """A subfolder, a skipped or failed file, or an unchanged one (keep_document)."""
        previous = self.mapped.get(item["id"])
        old_document = previous.document_id if previous is not None else None
        async with self.session.transaction() as conn:
            document = old_document if keep_document else None
            await self._put(conn, item, state, version, document, reason, crawl)
            if old_document is not None and not keep_document:
                await self._delete_document(conn, old_document)

    async def _delete_document(self, conn: Connection, document_id: uuid.UUID) -> None:
        await conn.execute(
            "delete from api.documents where tenant_id = %s and id = %s", (self.session.tenant_id, document_id)
        )
        await wake_relay(conn)

    async def _remove(self, file_ids: list[str]) -> None:
        if not file_ids:
            return
        async with self.session.transaction() as conn:
            cursor = await conn.execute(
                "select internal.remove_drive_files(%s, %s::text[]) as removed", (self.folder_id, file_ids)
            )
            row = await cursor.fetchone()
        self.counts.removed += int(row["removed"]) if row else 0
        for file_id in file_ids:
            self.mapped.pop(file_id, None)

    # --- Google

    async def _google(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One call to Google on a free client, in a thread."""
        client = await self.clients.get()
        try:
            return await asyncio.to_thread(getattr(client, method), *args, **kwargs)
        finally:
            self.clients.put_nowait(client)

    async def _page(self, items: list[dict[str, Any]], queue: list[str], crawl: uuid.UUID | None) -> None:
        """One listed page: its subfolders (queued), then its files, `concurrency` at a time."""
        for item in items:
            if item.get("mimeType") == FOLDER:
                await self._record(item, "folder", None, None, crawl)
                queue.append(item["id"])
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(item: dict[str, Any]) -> None:
            async with semaphore:
                await self._file(item, crawl)

        files = [item for item in items if item.get("mimeType") != FOLDER]
        results = await asyncio.gather(*(one(item) for item in files), return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            # What stops the run wins: a revoked grant, then the quota, then anything else.
            for kind in (DriveAuthRevoked, QuotaStop):
                for error in errors:
                    if isinstance(error, kind):
                        raise error
            raise errors[0]

    # --- the crawl

    async def _crawl(self, checkpoint: dict[str, Any] | None) -> None:
        if not checkpoint or checkpoint.get("mode") != "crawl":
            start_token = await self._google("start_page_token", self.drive_id)
            checkpoint = {"mode": "crawl", "start_token": start_token, "crawl": str(uuid.uuid4()), "queue": [self.root]}
            await self._checkpoint(checkpoint, None)
        await self._progress("running", None, full_crawl=True)
        crawl = uuid.UUID(checkpoint["crawl"])
        queue: list[str] = list(checkpoint["queue"])
        page: str | None = checkpoint.get("page")
        listing = await self._list(queue[0], page) if queue else None
        while listing is not None:
            page = listing.get("nextPageToken")
            # The folder's next page is listed while this one's files are imported.
            following = asyncio.create_task(self._list(queue[0], page)) if page else None
            try:
                await self._page(listing.get("files", []), queue, crawl)
            except BaseException:
                if following is not None:
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                raise
            if not page:
                queue.pop(0)
            # Committed after the page's own writes: a restart lists this page again at worst.
            await self._checkpoint({**checkpoint, "queue": queue, "page": page}, None)
            if following is not None:
                listing = await following
            else:
                listing = await self._list(queue[0], None) if queue else None
        async with self.session.transaction() as conn:
            cursor = await conn.execute("select internal.sweep_drive_files(%s, %s) as removed", (self.folder_id, crawl))
            row = await cursor.fetchone()
            await conn.execute(
                "select internal.drive_checkpoint(%s, null, %s)", (self.folder_id, checkpoint["start_token"])
            )
        self.counts.removed += int(row["removed"]) if row else 0

    async def _list(self, parent: str, page: str | None) -> dict[str, Any]:
        listing: dict[str, Any] = await self._google("list_children", parent, page, drive_id=self.drive_id)
        return listing

    async def _crawl_subtree(self, folder: dict[str, Any]) -> None:
        """A folder moved into the tree: everything under it (its files have no changes of their own)."""
        await self._record(folder, "folder", None, None, None)
        queue = [folder["id"]]
        while queue:
            parent = queue.pop(0)
            page: str | None = None
            while True:
                listing = await self._list(parent, page)
                await self._page(listing.get("files", []), queue, None)
                page = listing.get("nextPageToken")
                if not page:
                    break

    # --- changes

    def _in_tree(self, parents: list[str]) -> bool:
        return any(p == self.root or self.mapped.get(p, NOT_MAPPED).state == "folder" for p in parents)

    def _subtree(self, folder_id: str) -> list[str]:
        found = [folder_id]
        index = 0
        while index < len(found):
            parent = found[index]
            found.extend(
                file_id for file_id, row in self.mapped.items() if parent in row.parents and file_id not in found
            )
            index += 1
        return found

    async def _follow_changes(self, token: str) -> None:
        await self._progress("running", None, full_crawl=False)
        while True:
            page = await self._google("changes", token, self.drive_id)
            for change in page.get("changes", []):
                await self._change(change)
            next_token = page.get("nextPageToken") or page.get("newStartPageToken")
            await self._checkpoint(None, next_token)
            if not page.get("nextPageToken"):
                return
            token = str(next_token)

    async def _change(self, change: dict[str, Any]) -> None:
        file_id = str(change.get("fileId") or "")
        item: dict[str, Any] = change.get("file") or {}
        if not file_id or file_id == self.root:
            return
        gone = bool(change.get("removed")) or not item or bool(item.get("trashed"))
        inside = not gone and self._in_tree(list(item.get("parents") or []))
        if not inside:
            if file_id in self.mapped:
                known = self.mapped[file_id]
                await self._remove(self._subtree(file_id) if known.state == "folder" else [file_id])
            return
        if item.get("mimeType") == FOLDER:
            if file_id in self.mapped:
                await self._record(item, "folder", None, None, None)
            else:
                await self._crawl_subtree(item)
            return
        await self._file(item, None)

    # --- one file

    async def _file(self, item: dict[str, Any], crawl: uuid.UUID | None) -> None:
        self.counts.seen += 1
        source = item
        if item.get("mimeType") == SHORTCUT:
            details = item.get("shortcutDetails") or {}
            if details.get("targetMimeType") == FOLDER:
                await self._skip(item, None, "A shortcut to a folder is not followed.", crawl)
                return
            try:
                source = await self._google("get", str(details.get("targetId")))
            except DriveNotFound:
                await self._skip(item, None, "The shortcut's target is missing or not shared with you.", crawl)
                return
        mime = str(source.get("mimeType") or "")
        version = str(source.get("md5Checksum") or f"v{source.get('version')}:{source.get('id')}")
        previous = self.mapped.get(item["id"])
        if (
            previous is not None
            and previous.version == version
            and (previous.state == "skipped" or previous.document_id is not None)
        ):
            await self._unchanged(item, previous, version, crawl)
            return
        export = EXPORTS.get(mime)
        if export is None and mime.startswith(GOOGLE_APPS):
            await self._skip(item, version, f"Google Drive files of type {mime} cannot be indexed.", crawl)
            return
        cap = min(self.drive.settings.max_file_bytes, self.documents.max_bytes)
        if export is None and int(source.get("size") or 0) > cap:
            await self._skip(item, version, f"The file is over the size cap ({cap} bytes).", crawl)
            return
        try:
            content = await self._download(source, export)
        except DriveExportTooLarge:
            await self._skip(item, version, "Google Drive cannot export it: it is over Google's export limit.", crawl)
            return
        except DriveNotFound:
            await self._remove([item["id"]])  # gone between the listing and the download
            return
        name = str(item.get("name") or item["id"])
        if mime == SPREADSHEET:
            try:
                content = await sheet_as_markdown(self.parsers, content, name)
            except UnreadableDocument as error:
                await self._skip(item, version, error.reason, crawl)
                return
        filename = name + export[1] if export and not name.endswith(export[1]) else name
        await self._import(item, version, DriveDownload(content, filename, name), crawl)

    async def _download(self, source: dict[str, Any], export: tuple[str, str] | None) -> bytes:
        if export is not None:
            content: bytes = await self._google("export", source["id"], export[0])
        else:
            content = await self._google("download", source["id"])
        return content

    async def _unchanged(self, item: dict[str, Any], previous: Mapped, version: str, crawl: uuid.UUID | None) -> None:
        if previous.state == "skipped":
            self.counts.skipped += 1
        else:
            self.counts.indexed += 1
        name = str(item.get("name") or item["id"])
        if crawl is None and name == previous.name and list(item.get("parents") or []) == previous.parents:
            return  # nothing to write
        async with self.session.transaction() as conn:
            await self._put(conn, item, previous.state, version, previous.document_id, previous.reason, crawl)
            if name != previous.name and previous.document_id is not None:
                await conn.execute(
                    "update app.documents set title = %s where tenant_id = %s and id = %s",
                    (name[:255], self.session.tenant_id, previous.document_id),
                )

    async def _skip(self, item: dict[str, Any], version: str | None, reason: str, crawl: uuid.UUID | None) -> None:
        self.counts.skipped += 1
        await self._record(item, "skipped", version, reason, crawl)

    async def _import(
        self, item: dict[str, Any], version: str, download: DriveDownload, crawl: uuid.UUID | None
    ) -> None:
        previous = self.mapped.get(item["id"])
        old_document = previous.document_id if previous is not None else None

        async def record(conn: Connection, document: Document) -> None:
            # In the transaction that creates or revises the document.
            await self._put(conn, item, "indexed", version, document.id, None, crawl)

        try:
            if old_document is None or not await self._revise(old_document, download, record):
                await self.documents.create(self.session, download, origin="drive", on_insert=record)
        except QuotaExceeded as error:
            if error.extensions.get("limit") in ("documents_per_month", "storage_bytes"):
                self.counts.seen -= 1  # it will be seen again when the run resumes
                raise QuotaStop(error.detail) from None
            await self._skip(item, version, error.detail, crawl)
            return
        except (Unsupported, PayloadTooLarge) as error:
            await self._skip(item, version, error.detail, crawl)
            return
        except QuarryError as error:
            if error.retryable:
                raise
            self.counts.failed += 1
            await self._record(item, "failed", version, error.detail, crawl)
            return
        self.counts.indexed += 1

    async def _revise(
        self, document_id: uuid.UUID, download: DriveDownload, record: Callable[[Connection, Document], Awaitable[None]]
    ) -> bool:
        """A modified file: its document is ingested again in place (same id; its old chunks stay
        searchable until the new ones replace them).  False if the document is gone meanwhile."""
        try:
            await self.documents.revise(self.session, document_id, download, on_revise=record)
        except NotFound:
            return False
        return True
