"""Building an export: the worker's `exports:build` job and the periodic expiry.

The archive streams from Postgres to blob storage: each JSON file's rows
come through a server-side cursor a batch at a time, in one read-only
transaction (one snapshot for the whole archive), and each batch is
rendered, deflated and written (a part uploaded, with S3) on a thread while
the next batch is fetched; originals are copied one by one through scratch
files on disk.  Memory is a batch, a part and the ZIP's directory, however
large the tenant.

Progress is recorded every PROGRESS_SECONDS; an export whose account is
being deleted stops there (its partial upload is abandoned).  When the
archive is complete the export turns `ready`, its link expires after
EXPORT_LINK_EXPIRY_DAYS, and the owner gets an email with it.  A failure
(after the job's retries, for storage or database outages) turns it
`failed` with a reason, gives its place in the plan's frequency back, and is
emailed too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from quarry.db import Connection, TenantDatabase, TenantSession
from quarry.errors import QuarryError
from quarry.exports.archive import (
    CONTENT_SLICE_CHARS,
    DOCUMENTS,
    JSON_FILES,
    ORIGINALS_QUERY,
    OTHER_FILES,
    ArchiveBuilder,
    JsonArray,
    JsonFile,
    content_head,
    content_piece,
    original_path,
    with_content,
)
from quarry.exports.service import ExportService
from quarry.exports.storage import ArchiveStore, export_key
from quarry.mail import Mail, Mailer
from quarry.storage.blobs import BlobNotFound, BlobStore, LocalBlobStore
from quarry.storage.scratch import scratch_directory

logger = logging.getLogger("quarry.exports")

T = TypeVar("T")

ROW_BATCH = 1000
DOCUMENT_BATCH = 100
ORIGINAL_BATCH = 200
PROGRESS_SECONDS = 2.0
EXPIRE_BATCH = 100


class ExportCancelled(Exception):
    """The export stopped being ours to build (its account is being deleted, or it ended meanwhile)."""


@dataclass
class _Progress:
    export_id: uuid.UUID
    session: TenantSession
    files_total: int
    files_done: int = 0
    file: str = ""
    rows: int = 0
    reported_at: float = 0.0

    async def report(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.reported_at < PROGRESS_SECONDS:
            return
        self.reported_at = now
        progress = {
            "file": self.file,
            "rows": self.rows,
            "files_done": self.files_done,
            "files_total": self.files_total,
        }
        async with self.session.transaction() as conn:
            cursor = await conn.execute(
                "select internal.export_progress(%s, %s::jsonb) as running", (self.export_id, _json(progress))
            )
            row = await cursor.fetchone()
        if not (row and row["running"]):
            raise ExportCancelled


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _off_loop(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(function, *args)


class ExportBuilder:
    """One process's export machinery: where documents and archives live, the mailer, the link settings."""

    def __init__(self, exports: ExportService, blobs: BlobStore, mailer: Mailer) -> None:
        self.exports = exports
        self.store: ArchiveStore = exports.store
        self.blobs = blobs
        self.mailer = mailer

    async def build(self, session: TenantSession, export_id: uuid.UUID) -> str:
        """Build, store and announce one export; what became of it (`ready`, `skipped`, `cancelled`)."""
        async with session.transaction() as conn:
            row = await (await conn.execute("select internal.start_export(%s) as started", (export_id,))).fetchone()
        if not (row and row["started"]):
            return await self._settle(session, export_id)
        key = export_key(session.tenant_id, export_id)
        created_at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        writer = await _off_loop(self.store.writer, key)
        archive = ArchiveBuilder(writer, created_at, str(export_id), str(session.tenant_id))
        progress = _Progress(export_id, session, files_total=len(JSON_FILES) + 1)
        try:
            await progress.report(force=True)
            reader = replace(session, method="GET")
            tenant = {"tenant": session.tenant_id}  # every archive query names its tenant as a value
            async with reader.transaction() as conn:
                await self._documents(conn, archive, progress, tenant)
                for spec in OTHER_FILES:
                    await self._json_file(conn, spec, archive, progress, tenant)
                await self._originals(conn, archive, progress, tenant)
            await _off_loop(archive.close)
            size = await _off_loop(writer.commit)
        except BaseException:
            await _off_loop(writer.abort)
            raise
        days = self.exports.settings.link_expiry_days
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select internal.finish_export(%s, %s, %s::jsonb, %s) as expires_at",
                (export_id, size, _json(archive.counts()), days),
            )
            finished = await cursor.fetchone()
        if not (finished and finished["expires_at"]):
            await _off_loop(self.store.delete, key)  # no longer wanted: nothing may stay behind
            return "cancelled"
        logger.info("export %s ready: %d bytes", export_id, size)
        await self.announce(session, export_id)
        return "ready"

    async def _settle(self, session: TenantSession, export_id: uuid.UUID) -> str:
        """A run that finds the export ended already (a retry after the email failed): the email, if owed."""
        try:
            export = await self.exports.get(session, export_id)
        except QuarryError:
            return "skipped"
        if export.status == "ready":
            await self.announce(session, export_id)
        elif export.status == "failed" and export.error:
            await self._mail_failure(session, export_id, export.error)
        return export.status

    async def announce(self, session: TenantSession, export_id: uuid.UUID) -> None:
        """Email the owner the link (once: a retried job that finds it sent sends nothing)."""
        export = await self.exports.get(session, export_id)
        recipient = await _email_of(session)
        if recipient is None or export.download_url is None or export.expires_at is None:
            return
        if await self._notified(session, export_id):
            return
        # Signed now for exactly EXPORT_LINK_EXPIRY_DAYS: the export has just become ready.
        days = self.exports.settings.link_expiry_days
        link = await self.exports.link(session.tenant_id, export_id, export.created_at, days * 86_400)
        counts = export.counts or {}
        size_mb = (export.size_bytes or 0) / 1_000_000
        text = (
            "Your Quarry data export is ready.\n\n"
            f"Download it here (the link works until {export.expires_at:%Y-%m-%d %H:%M} UTC):\n\n"
            f"{link}\n\n"
            f"The archive ({size_mb:.1f} MB) holds {counts.get('documents.json', 0)} documents with their text,"
            f" {counts.get('chunks.json', 0)} chunks and {counts.get('originals', 0)} original files, plus your"
            " Drive folders, API keys (never their secrets), queries, subscription, usage and activity log."
            " manifest.json lists every file with its row count and SHA-256.\n\n"
            "If you did not ask for this export, revoke your API keys and change your password.\n"
        )
        await self.mailer.send(Mail(to=recipient, subject="Your Quarry data export is ready", text=text))
        async with session.transaction() as conn:
            await conn.execute("select internal.export_notified(%s)", (export_id,))

    async def fail(self, session: TenantSession, export_id: uuid.UUID, reason: str) -> None:
        """The export failed for good: record why, give the allowance back, tell the owner."""
        async with session.transaction() as conn:
            await conn.execute("select internal.fail_export(%s, %s)", (export_id, reason))
        await _off_loop(self.store.delete, export_key(session.tenant_id, export_id))
        await self._mail_failure(session, export_id, reason)

    async def _mail_failure(self, session: TenantSession, export_id: uuid.UUID, reason: str) -> None:
        if await self._notified(session, export_id):
            return
        recipient = await _email_of(session)
        if recipient is None:
            return
        text = (
            "Your Quarry data export could not be completed.\n\n"
            f"Reason: {reason}\n\n"
            "It does not count against your plan's export allowance: you can request a new export now.\n"
        )
        await self.mailer.send(Mail(to=recipient, subject="Your Quarry data export failed", text=text))
        async with session.transaction() as conn:
            await conn.execute("select internal.export_notified(%s)", (export_id,))

    async def _notified(self, session: TenantSession, export_id: uuid.UUID) -> bool:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select notified_at from app.export_requests where tenant_id = %s and id = %s",
                (session.tenant_id, export_id),
            )
            row = await cursor.fetchone()
        return row is None or row["notified_at"] is not None

    # --- the archive's parts

    async def _documents(
        self, conn: Connection, archive: ArchiveBuilder, progress: _Progress, tenant: dict[str, uuid.UUID]
    ) -> None:
        array = await _off_loop(archive.json_array, DOCUMENTS.name)
        progress.file, progress.rows = DOCUMENTS.name, 0
        async with conn.cursor(name="export_documents") as cursor:
            await cursor.execute(DOCUMENTS.query, tenant)
            pending: asyncio.Future[None] | None = None
            while rows := await cursor.fetchmany(DOCUMENT_BATCH):
                inline = [row for row in rows if row["content"] is not None or not row["content_chars"]]
                long_rows = [row for row in rows if row["content"] is None and row["content_chars"]]
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(_off_loop(_add_documents, array, inline))
                if long_rows:
                    await pending
                    pending = None
                    for row in long_rows:
                        await self._long_document(conn, array, row, tenant)
                progress.rows += len(rows)
                await progress.report()
            if pending is not None:
                await pending
        await _off_loop(archive.finish_json, DOCUMENTS.name, array)
        progress.files_done += 1

    async def _long_document(
        self, conn: Connection, array: JsonArray, row: dict[str, Any], tenant: dict[str, uuid.UUID]
    ) -> None:
        head = content_head(row["row"])
        await _off_loop(array.begin_partial, head)
        document_id = uuid.UUID(json.loads(row["row"])["id"])
        for start in range(1, int(row["content_chars"]) + 1, CONTENT_SLICE_CHARS):
            cursor = await conn.execute(
                "select substr(text, %(start)s, %(length)s) as piece from app.document_texts"
                " where tenant_id = %(tenant)s and document_id = %(document)s",
                {**tenant, "start": start, "length": CONTENT_SLICE_CHARS, "document": document_id},
            )
            piece = await cursor.fetchone()
            await _off_loop(array.continue_partial, content_piece(piece["piece"] if piece else ""))
        await _off_loop(array.continue_partial, '"}')

    async def _json_file(
        self,
        conn: Connection,
        spec: JsonFile,
        archive: ArchiveBuilder,
        progress: _Progress,
        tenant: dict[str, uuid.UUID],
    ) -> None:
        array = await _off_loop(archive.json_array, spec.name)
        progress.file, progress.rows = spec.name, 0
        async with conn.cursor(name=f"export_{spec.name.split('.')[0]}") as cursor:
            await cursor.execute(spec.query, tenant)
            pending: asyncio.Future[None] | None = None
            while rows := await cursor.fetchmany(ROW_BATCH):
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(_off_loop(array.add_rows, [row["row"] for row in rows]))
                progress.rows += len(rows)
                await progress.report()
            if pending is not None:
                await pending
        await _off_loop(archive.finish_json, spec.name, array)
        progress.files_done += 1

    async def _originals(
        self, conn: Connection, archive: ArchiveBuilder, progress: _Progress, tenant: dict[str, uuid.UUID]
    ) -> None:
        progress.file, progress.rows = "originals/", 0
        async with scratch_directory("quarry-export-") as scratch, conn.cursor(name="export_originals") as cursor:
            await cursor.execute(ORIGINALS_QUERY, tenant)
            pending: asyncio.Future[None] | None = None
            while rows := await cursor.fetchmany(ORIGINAL_BATCH):
                if isinstance(self.blobs, LocalBlobStore):
                    # Read in place, a batch per thread call, while the next batch is fetched.
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(_off_loop(_add_local_originals, archive, self.blobs, rows))
                else:
                    await self._downloaded_originals(scratch, archive, rows)
                progress.rows += len(rows)
                await progress.report()
            if pending is not None:
                await pending
        progress.files_done += 1
        if archive.missing_count:
            logger.warning("export: %d original(s) missing from storage (see its manifest)", archive.missing_count)

    async def _downloaded_originals(self, scratch: Path, archive: ArchiveBuilder, rows: list[dict[str, Any]]) -> None:
        """From a remote store: the next file downloads (to scratch) while this one is written into the archive."""
        fetching = self._fetch(scratch, rows[0], 0)
        for index, row in enumerate(rows):
            path = await fetching
            if index + 1 < len(rows):
                fetching = self._fetch(scratch, rows[index + 1], (index + 1) % 2)
            if path is None:
                archive.original_missing(str(row["id"]))
                continue
            await _off_loop(archive.add_original, original_path(row["id"], row["title"]), path, row["mime_type"])

    def _fetch(self, scratch: Path, row: dict[str, Any], slot: int) -> asyncio.Future[Path | None]:
        async def download() -> Path | None:
            if not row["blob_key"]:
                return None
            path = scratch / f"original-{slot}"
            try:
                await _off_loop(self.blobs.download_to, row["blob_key"], path)
            except BlobNotFound:
                return None
            return path

        return asyncio.ensure_future(download())


def _add_local_originals(archive: ArchiveBuilder, blobs: LocalBlobStore, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        path = blobs.path_of(row["blob_key"]) if row["blob_key"] else None
        try:
            if path is None:
                raise FileNotFoundError(row["id"])
            archive.add_original(original_path(row["id"], row["title"]), path, row["mime_type"])
        except FileNotFoundError:
            archive.original_missing(str(row["id"]))


def _add_documents(array: JsonArray, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        array.add(with_content(row["row"], row["content"]))


async def _email_of(session: TenantSession) -> str | None:
    async with session.transaction() as conn:
        row = await (await conn.execute("select internal.account_email() as email")).fetchone()
    email = row["email"] if row else None
    return str(email) if email else None


async def expire_exports(database: TenantDatabase, store: ArchiveStore) -> int:
    """Delete the archives of exports whose link has expired, then mark each `expired`."""
    expired = 0
    while True:
        due = await database.fetch("select tenant_id, id from internal.exports_to_expire(%s)", (EXPIRE_BATCH,))
        for row in due:
            await _off_loop(store.delete, export_key(row["tenant_id"], row["id"]))
            marked = await database.fetch_one(
                "select internal.expire_export(%s, %s) as expired", (row["tenant_id"], row["id"])
            )
            expired += bool(marked and marked["expired"])
        if len(due) < EXPIRE_BATCH:
            return expired
