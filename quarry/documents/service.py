"""Documents: the one creation flow every importer uses, and list, read, delete, content.

`DocumentService.create` is how a file becomes a document, whoever brings it
(an HTTP upload today, a Drive sync or any later importer tomorrow):

    plan precheck (→ the bytes storage can take) → receive the file, no
    further than that → sniff its type → the plan's format → store the blob →
    row + ingest job in one transaction (the plan's format, monthly count and
    storage checked atomically by the insert's triggers) → on any failure,
    remove the blob.

A source whose bytes are already here (`in_memory`: a Drive download) skips
the two advisory prechecks, which only spare receiving and storing a file
that will be refused: its checks are the insert's, the same triggers.

`DocumentService.revise` puts a new version of an imported document in
place (same id, the same checks; see internal.revise_document).

Reads and deletes go through api.documents, the same security_invoker view
supabase-js uses, so both paths see the same rows and trigger the same
cleanup (the outbox trigger on app.documents).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from quarry.db import Connection, TenantSession
from quarry.documents.models import Document, DocumentListQuery, DocumentPage, DocumentSource
from quarry.errors import Conflict, DatabaseUnavailable, Invalid, NotFound, PayloadTooLarge
from quarry.idempotency import Created, Idempotency, fingerprint
from quarry.outbox import wake_relay
from quarry.parsing.sniff import Sniffed, sniff
from quarry.storage.blobs import BlobStore, BlobStoreUnavailable, blob_key
from quarry.storage.scratch import scratch_directory

logger = logging.getLogger("quarry.documents")

MAX_TITLE_CHARS = 255
UNTITLED = "Untitled document"
DOCUMENT_COLUMNS = (
    "id, title, source, mime_type, size_bytes, status, error_reason, page_count, chunk_count,"
    " created_at, updated_at, ready_at"
)
_INSERT_DOCUMENT = f"""
insert into app.documents (tenant_id, id, title, source, mime_type, size_bytes, blob_key, sha256)
values (%s, %s, %s, %s, %s, %s, %s, %s)
returning {DOCUMENT_COLUMNS}
"""  # noqa: S608 (DOCUMENT_COLUMNS is a constant)
# In the same transaction: no document without its job.  Not a trigger, because
# under Citus a trigger runs where the row's shard is and the queue is not there.
_QUEUE_INGEST = "select internal.queue_document_ingest(%s)"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class IncomingFile:
    """A file received into a local path, about to become a document."""

    path: Path
    filename: str | None
    size: int
    sha256: str
    title: str | None = None

    def display_title(self) -> str:
        """The title given, else the file's base name, cleaned; never empty."""
        for candidate in (self.title, self.filename):
            cleaned = clean_title(candidate or "")
            if cleaned:
                return cleaned
        return UNTITLED


class FileSource(Protocol):
    """Where a new document's bytes come from: an HTTP upload, a Drive download, …"""

    @property
    def expected_bytes(self) -> int | None:
        """The file's size if known before receiving it (for the plan precheck)."""
        ...

    @property
    def in_memory(self) -> bool:
        """The bytes are here already (a download).  The advisory prechecks exist so that nothing
        expensive (receiving, storing) happens before a refusal; here only the blob write is left,
        so the plan's checks are the insert's own (the same triggers, atomically): one transaction."""
        ...

    async def receive(self, destination: Path, max_bytes: int) -> IncomingFile:
        """Write the file to destination, refusing (PayloadTooLarge) past max_bytes."""
        ...


OnInsert = Callable[[Connection, Document], Awaitable[None]]


@dataclass(frozen=True)
class Revised:
    """What DocumentService.revise did: the document, and whether it is queued to be ingested again."""

    document: Document
    revision: int  # the document's revision now
    reingested: bool  # queued to be ingested again (false: the same content, only renamed)


class _Replay(Exception):
    def __init__(self, document: Document) -> None:
        self.document = document


def _fingerprint(incoming: IncomingFile, origin: DocumentSource) -> str:
    """The same upload: the same bytes, name and title, from the same source."""
    return fingerprint(origin, incoming.sha256, incoming.filename or "", incoming.title or "")


def clean_title(raw: str) -> str:
    name = re.split(r"[/\\]", raw)[-1]
    name = unicodedata.normalize("NFC", _CONTROL_CHARACTERS.sub("", name))
    name = " ".join(name.split())
    return name[:MAX_TITLE_CHARS].strip()


class DocumentService:
    def __init__(self, blobs: BlobStore, *, max_bytes: int) -> None:
        self._blobs = blobs
        self.max_bytes = max_bytes

    async def create(
        self,
        session: TenantSession,
        source: FileSource,
        *,
        origin: DocumentSource = "upload",
        idempotency: Idempotency | None = None,
        on_insert: OnInsert | None = None,
    ) -> Created[Document]:
        """Make a document of the file the source brings; its ingest job is queued with it.

        With an idempotency key, a file sent again (same key, same bytes and
        title) answers the document the first request created.  `on_insert`
        runs in the transaction that inserts the row (an importer records
        where the document came from, atomically with it).
        """
        allowance: int | None = None  # in memory: the insert's triggers check it
        if not source.in_memory:
            async with session.transaction() as conn:
                allowance = await upload_allowance(conn, source.expected_bytes)
        document_id = uuid.uuid4()

        async def insert(conn: Connection, incoming: IncomingFile, sniffed: Sniffed, key: str | None) -> Document:
            assert key is not None
            if idempotency is not None:
                replayed = await idempotency.claim(conn, session.tenant_id, _fingerprint(incoming, origin), Document)
                if replayed is not None:
                    raise _Replay(replayed)
            document = await _insert(conn, session.tenant_id, document_id, incoming, sniffed, key, origin)
            if on_insert is not None:
                await on_insert(conn, document)
            if idempotency is not None:
                await idempotency.complete(conn, session.tenant_id, document, document.id)
            return document

        try:
            return Created(
                await self._bring(
                    session,
                    source,
                    allowance,
                    precheck,
                    lambda incoming, sniffed: blob_key(session.tenant_id, document_id),
                    insert,
                )
            )
        except _Replay as replay:
            return Created(replay.document, replayed=True)

    async def revise(
        self, session: TenantSession, document_id: uuid.UUID, source: FileSource, *, on_revise: OnInsert | None = None
    ) -> Revised:
        """Put a new version of an imported document in place: same id, same checks as a new file.

        The new file is stored under the revision's own key and the document is
        queued for ingestion again (internal.revise_document); its old chunks
        stay searchable until the new ones replace them.  The same content
        (hash, type and size) is not stored again: only the title follows.
        `on_revise` runs in the revising transaction.
        """
        async with session.transaction() as conn:
            cursor = await conn.execute(
                "select revision, allowance, sha256, mime_type from internal.begin_document_revision(%s, %s::bigint)",
                (document_id, _as_bigint(source.expected_bytes)),
            )
            drawn = await cursor.fetchone()
        assert drawn is not None
        revision = int(drawn["revision"])

        def key(incoming: IncomingFile, sniffed: Sniffed) -> str | None:
            same = incoming.sha256 == drawn["sha256"] and sniffed.mime_type == drawn["mime_type"]
            return None if same else blob_key(session.tenant_id, document_id, revision)

        async def over_allowance(conn: Connection, expected_bytes: int) -> None:
            await conn.execute(
                "select internal.revision_allowance(%s, %s::bigint)", (document_id, _as_bigint(expected_bytes))
            )

        async def revise(conn: Connection, incoming: IncomingFile, sniffed: Sniffed, key: str | None) -> Document:
            cursor = await conn.execute(
                f"select {DOCUMENT_COLUMNS}, revision from internal.revise_document(%s, %s, %s, %s, %s, %s)",  # noqa: S608
                (document_id, revision, sniffed.mime_type, incoming.size, incoming.sha256, incoming.display_title()),
            )
            row = await cursor.fetchone()
            assert row is not None
            reingested.append(row.pop("revision") == revision)
            document = Document.model_validate(row)
            if on_revise is not None:
                await on_revise(conn, document)
            return document

        reingested: list[bool] = []
        document = await self._bring(session, source, int(drawn["allowance"]), over_allowance, key, revise)
        return Revised(document, revision=revision if reingested[-1] else revision - 1, reingested=reingested[-1])

    async def _bring(
        self,
        session: TenantSession,
        source: FileSource,
        allowance: int | None,
        over_allowance: Callable[[Connection, int], Awaitable[None]],
        key_for: Callable[[IncomingFile, Sniffed], str | None],
        write: Callable[[Connection, IncomingFile, Sniffed, str | None], Awaitable[Document]],
    ) -> Document:
        """Receive (no further than the allowance) → sniff → the plan's format → store → write the row.

        `allowance` None: the source is in memory, the insert's checks are its only ones.
        `key_for` names the stored file (None: nothing to store); `write` runs in one
        transaction; if it fails, the stored file is removed."""
        async with scratch_directory("quarry-upload-") as workdir:
            limit = self.max_bytes if allowance is None else allowance
            incoming = await self._receive(session, source, workdir / "upload", limit, over_allowance)
            sniffed = await asyncio.to_thread(sniff, incoming.path, incoming.filename)
            if allowance is not None:  # streamed: refuse before storing (the insert checks again)
                async with session.transaction() as conn:
                    await conn.execute("select internal.precheck_format(%s)", (sniffed.mime_type,), prepare=True)
            key = key_for(incoming, sniffed)
            if key is not None:
                await self._store(key, incoming)
            written = False
            try:
                async with session.transaction() as conn:
                    document = await write(conn, incoming, sniffed, key)
                    written = True
            except BaseException as error:
                # Lost during COMMIT, the row may well exist: keep its file (a retry with the
                # same key finds the row); otherwise nothing refers to the file.
                if key is not None and not (written and isinstance(error, DatabaseUnavailable)):
                    await self._discard(key)
                raise
            return document

    async def _receive(
        self,
        session: TenantSession,
        source: FileSource,
        destination: Path,
        allowance: int,
        over_allowance: Callable[[Connection, int], Awaitable[None]],
    ) -> IncomingFile:
        """The file, read no further than the upload cap or the storage the plan has left."""
        limit = min(self.max_bytes, allowance)
        try:
            return await source.receive(destination, limit)
        except PayloadTooLarge:
            if limit < self.max_bytes:  # the plan's storage ran out first: that is a 402, not a 413
                async with session.transaction() as conn:
                    await over_allowance(conn, limit + 1)
            raise

    async def _store(self, key: str, incoming: IncomingFile) -> None:
        try:
            await asyncio.to_thread(self._blobs.put_file, key, incoming.path)
        except BlobStoreUnavailable:
            raise
        except Exception as error:  # refusing us (credentials, bucket): not the caller's fault either
            logger.exception("storing a new document's file failed")
            raise BlobStoreUnavailable(f"storing {key} failed: {type(error).__name__}") from error

    async def _discard(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._blobs.delete, key)
        except Exception:  # the orphan is harmless and named by its key; log and move on
            logger.exception("could not remove blob %s after a failed upload", key)


def _as_bigint(expected_bytes: int | None) -> int:
    # Absurd sizes are the receiver's to refuse (413); here they only need to stay a bigint.
    return min(max(expected_bytes or 0, 0), 2**62)


async def precheck(conn: Connection, expected_bytes: int | None) -> None:
    """Refuse (402) if the month is used up or expected_bytes cannot fit.

    Advisory: it counts nothing; the insert's atomic check decides.
    """
    await conn.execute("select internal.precheck_upload(%s::bigint)", (_as_bigint(expected_bytes),), prepare=True)


async def upload_allowance(conn: Connection, expected_bytes: int | None) -> int:
    """precheck's refusals, else how many bytes the tenant's storage can still take."""
    cursor = await conn.execute(
        "select internal.upload_allowance(%s::bigint) as bytes", (_as_bigint(expected_bytes),), prepare=True
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["bytes"])


async def _insert(
    conn: Connection,
    tenant_id: uuid.UUID,
    document_id: uuid.UUID,
    incoming: IncomingFile,
    sniffed: Sniffed,
    key: str,
    origin: DocumentSource,
) -> Document:
    """The row (its audit entry by trigger) and its ingest job, in the caller's transaction."""
    cursor = await conn.execute(
        _INSERT_DOCUMENT,
        (
            tenant_id,
            document_id,
            incoming.display_title(),
            origin,
            sniffed.mime_type,
            incoming.size,
            key,
            incoming.sha256,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None
    await conn.execute(_QUEUE_INGEST, (document_id,))
    return Document.model_validate(row)


def encode_cursor(created_at: datetime, document_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(document_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, document_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(document_id)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise Invalid("`cursor` is not one this API returned.", extensions={"field": "cursor"}) from None


async def list_documents(session: TenantSession, query: DocumentListQuery) -> DocumentPage:
    conditions: list[str] = ["true"]
    params: list[object] = [session.tenant_id]
    if query.status:
        conditions.append("status = %s::app.document_status")
        params.append(query.status)
    if query.source:
        conditions.append("source = %s::app.document_source")
        params.append(query.source)
    if query.cursor:
        conditions.append("(created_at, id) < (%s, %s)")
        params.extend(decode_cursor(query.cursor))
    params.append(query.limit + 1)
    async with session.transaction() as conn:
        cursor = await conn.execute(
            f"select {DOCUMENT_COLUMNS} from api.documents where tenant_id = %s and {' and '.join(conditions)}"  # noqa: S608
            " order by created_at desc, id desc limit %s",
            params,
        )
        rows = await cursor.fetchall()
    page = rows[: query.limit]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > query.limit else None
    return DocumentPage(data=[Document.model_validate(row) for row in page], next_cursor=next_cursor)


def not_found() -> NotFound:
    return NotFound("No such document.")


async def get_document(session: TenantSession, document_id: uuid.UUID) -> Document:
    async with session.transaction() as conn:
        cursor = await conn.execute(
            f"select {DOCUMENT_COLUMNS} from api.documents where tenant_id = %s and id = %s",  # noqa: S608 (a constant)
            (session.tenant_id, document_id),
        )
        row = await cursor.fetchone()
    if row is None:
        raise not_found()
    return Document.model_validate(row)


async def delete_document(session: TenantSession, document_id: uuid.UUID) -> None:
    async with session.transaction() as conn:
        cursor = await conn.execute(
            "delete from api.documents where tenant_id = %s and id = %s returning id", (session.tenant_id, document_id)
        )
        if await cursor.fetchone() is None:
            raise not_found()
        await wake_relay(conn)


async def document_content(session: TenantSession, document_id: uuid.UUID) -> str:
    async with session.transaction() as conn:
        cursor = await conn.execute(
            """
            select d.status::text as status, t.text
            from api.documents as d
            left join app.document_texts as t on t.tenant_id = d.tenant_id and t.document_id = d.id
            where d.tenant_id = %s and d.id = %s
            """,
            (session.tenant_id, document_id),
        )
        row = await cursor.fetchone()
    if row is None:
        raise not_found()
    if row["text"] is None:
        raise Conflict(
            f"The document has no processed text yet (status: {row['status']}).",
            slug="not-processed",
            extensions={"document_status": row["status"]},
        )
    return str(row["text"])
