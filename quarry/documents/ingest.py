"""The ingest pipeline: blob → text → chunks → vectors → Postgres (→ outbox).

Statuses: queued → processing → indexing (chunks and vectors committed; the
outbox relay takes it from there) → ready, or failed(reason), each step a SQL
transition function (internal.start_processing, finish_processing,
fail_processing).  Everything for the tenant runs in the job's TenantSession
(act_as), so RLS applies to the worker as it does to the gateway.  Re-running
a job is harmless: a document that is no longer queued/processing is left
alone, and the chunks are replaced in one transaction with ids that are
stable per (tenant, document, ordinal).

Failures follow the error hierarchy: an unreadable file fails the document
with its reason; a retryable QuarryError (database, storage briefly away)
propagates so that the job is retried, and fails the document on the last
attempt; anything else is a bug, logged with its traceback, and fails it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from quarry.db import TenantSession
from quarry.documents.chunking import Chunker, ChunkText, chunk_id
from quarry.embedding import EmbeddingBatcher, SparseEmbedder
from quarry.errors import QuarryError, Unavailable
from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.pool import ParsePool
from quarry.parsing.segments import Extracted
from quarry.parsing.sniff import FORMATS
from quarry.storage.blobs import BlobNotFound, BlobStore, blob_key
from quarry.storage.scratch import scratch_directory

logger = logging.getLogger("quarry.quarry.documents.ingest")

FORMAT_BY_MIME_TYPE = {mime: fmt for fmt, mime in FORMATS.items()}


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    chunk: ChunkText
    id: uuid.UUID
    dense: list[float]
    sparse_indices: list[int]
    sparse_values: list[float]


class IngestPipeline:
    def __init__(
        self,
        blobs: BlobStore,
        chunker: Chunker,
        dense: EmbeddingBatcher,
        sparse: SparseEmbedder,
        *,
        embedding_model: str,
        parsers: ParsePool,
    ) -> None:
        self._blobs = blobs
        self._parsers = parsers
        self._chunker = chunker
        self._dense = dense
        self._sparse = sparse
        self._embedding_model = embedding_model

    @property
    def parsers(self) -> ParsePool:
        """The parse children (the Drive sync reads a Sheet's tabs there too)."""
        return self._parsers

    async def ingest(self, session: TenantSession, document_id: uuid.UUID, *, final_attempt: bool) -> None:
        """Every outcome ends the document `indexing` or `failed`, or raises a retryable QuarryError.

        A failure names the revision this job started (once it has): a newer version put in
        place meanwhile (a modified Drive file) is not this job's to fail."""
        started: list[int] = []  # the revision, once started
        try:
            await self._ingest(session, document_id, started)
        except UnreadableDocument as error:
            await self.fail(session, document_id, error.reason, revision=started[0] if started else None)
        except QuarryError as error:
            if not error.retryable:
                logger.exception("ingest of document %s failed unexpectedly", document_id)
                reason = f"Processing failed unexpectedly ({error.slug})."
                await self.fail(session, document_id, reason, revision=started[0] if started else None)
            elif final_attempt:
                reason = f"Processing kept failing ({error.slug}); upload it again later."
                await self.fail(session, document_id, reason, revision=started[0] if started else None)
            else:
                # Expected (a database restart, storage briefly away): one line, the job retries.
                logger.warning(
                    "document %s (%s): %s%s; the job will retry",
                    document_id,
                    session.headers.get("x-request-id", "-"),
                    error.slug,
                    f", SQLSTATE {error.sqlstate}" if error.sqlstate else "",
                )
                raise
        except Exception as error:  # a bug or an input nobody foresaw: say so, don't leave it hanging
            logger.exception("ingest of document %s failed unexpectedly", document_id)
            reason = f"Processing failed unexpectedly ({type(error).__name__})."
            await self.fail(session, document_id, reason, revision=started[0] if started else None)

    async def _ingest(self, session: TenantSession, document_id: uuid.UUID, started: list[int]) -> None:
        begun = await self._start(session, document_id)
        if begun is None:
            return
        mime_type, revision = begun
        started.append(revision)
        # The key is derived here, never read from the row (a constraint also ties the two).
        key = blob_key(session.tenant_id, document_id, revision)
        extracted = await self._extract(key, mime_type)
        embedded = await self._embed(session.tenant_id, document_id, extracted)
        await self._store(session, document_id, extracted, embedded)

    async def fail(
        self, session: TenantSession, document_id: uuid.UUID, reason: str, *, revision: int | None = None
    ) -> None:
        """Fail the document: the revision the job started (if it did), else whatever it is at."""
        async with session.transaction() as conn:
            if revision is None:
                await conn.execute("select internal.fail_processing(%s, %s)", (document_id, reason))
            else:
                await conn.execute("select internal.fail_revision(%s, %s, %s)", (document_id, revision, reason))
        logger.info("document %s failed: %s", document_id, reason)

    async def _start(self, session: TenantSession, document_id: uuid.UUID) -> tuple[str, int] | None:
        """The document's type and revision, or None if it is gone or an earlier run already processed it.

        Both are read under the row lock start_processing takes: a new revision put in place
        meanwhile is either this one (it committed first) or waits for this transaction."""
        async with session.transaction() as conn:
            row = await (
                await conn.execute("select internal.start_processing(%s) as mime_type", (document_id,))
            ).fetchone()
            if row is None or row["mime_type"] is None:
                return None
            revision = await (
                await conn.execute(
                    "select revision from app.documents where tenant_id = %s and id = %s",
                    (session.tenant_id, document_id),
                )
            ).fetchone()
        return str(row["mime_type"]), int(revision["revision"]) if revision else 0

    async def _extract(self, key: str, mime_type: str) -> Extracted:
        fmt = FORMAT_BY_MIME_TYPE.get(mime_type)
        if fmt is None:
            raise UnreadableDocument(f"Documents of type {mime_type} cannot be processed.")
        async with scratch_directory("quarry-ingest-") as workdir:
            path = workdir / "original"
            try:
                await asyncio.to_thread(self._blobs.download_to, key, path)
            except BlobNotFound:
                raise UnreadableDocument("The uploaded file is missing from storage; upload it again.") from None
            try:
                # In a parse child within the extraction budget: a hostile file fails alone.
                return await self._parsers.extract(path, fmt)
            except (UnreadableDocument, Unavailable):
                raise
            except OSError as error:  # the temporary disk, not the document
                raise Unavailable("Local storage failed.", internal=f"local I/O failed: {error!r}") from error

    async def _embed(self, tenant_id: uuid.UUID, document_id: uuid.UUID, extracted: Extracted) -> list[EmbeddedChunk]:
        # Tokenising and BM25 are CPU work: off the event loop, so heartbeats keep flowing.
        segments = [(segment.text, clean_position(segment.position)) for segment in extracted.segments]
        chunks = await asyncio.to_thread(self._chunker.chunk, segments)
        if not chunks:
            raise UnreadableDocument("The document contains no text.")
        dense = await self._dense.embed([chunk.text for chunk in chunks])
        sparse = await asyncio.to_thread(lambda: [self._sparse.document(chunk.text) for chunk in chunks])
        return [
            EmbeddedChunk(chunk, chunk_id(tenant_id, document_id, chunk.ordinal), vector, bm25.indices, bm25.values)
            for chunk, vector, bm25 in zip(chunks, dense, sparse, strict=True)
        ]

    async def _store(
        self,
        session: TenantSession,
        document_id: uuid.UUID,
        extracted: Extracted,
        embedded: list[EmbeddedChunk],
    ) -> None:
        text = "\n\n".join(segment.text for segment in extracted.segments)
        try:
            async with session.transaction() as conn:
                # Users cannot write text or chunks: these definer functions do, for the caller's own
                # document while it is processing (the first one also drops an earlier attempt's chunks).
                row = await (
                    await conn.execute("select internal.store_document_text(%s, %s) as storing", (document_id, text))
                ).fetchone()
                if not (row and row["storing"]):  # deleted or failed meanwhile: keep nothing
                    raise _DocumentGone
                # executemany pipelines the calls: one round trip for all the chunks.
                await conn.cursor().executemany(
                    _STORE_CHUNK,
                    [
                        (
                            document_id,
                            item.id,
                            item.chunk.ordinal,
                            item.chunk.text,
                            item.chunk.token_count,
                            Jsonb(item.chunk.position),
                            self._embedding_model,
                            item.dense,
                            item.sparse_indices,
                            item.sparse_values,
                        )
                        for item in embedded
                    ],
                )
                row = await (
                    await conn.execute(
                        "select internal.finish_processing(%s, %s, %s, %s) as finished",
                        (document_id, extracted.page_count, len(embedded), len(text)),
                    )
                ).fetchone()
                if not (row and row["finished"]):  # deleted or failed meanwhile: keep nothing
                    raise _DocumentGone
        except _DocumentGone:
            return


class _DocumentGone(Exception):
    pass


def clean_position(position: dict[str, int | str]) -> dict[str, int | str]:
    """Positions go into jsonb, which refuses NUL; headings come straight from the file."""
    return {
        key: "".join(ch for ch in value if ch >= " " or ch == "\t")[:200] if isinstance(value, str) else value
        for key, value in position.items()
    }


_STORE_CHUNK = """
select internal.store_chunk(%s, %s, %s, %s, %s, %s, %s, %b::real[], %b::integer[], %b::real[])
"""
