"""The outbox relay: makes the vector index follow Postgres.

Triggers record every document change in app.outbox in the transaction that
makes it (gateway, worker or PostgREST alike).  The relay leases pending
changes (internal.outbox_claim), brings each document's points in line with
its chunks in Postgres, and completes the change (which also turns an
`indexing` document `ready`).  Applying is idempotent (point id = chunk id;
stale points are removed), so a crash between the index write and the
completion only means the change is applied again.  An index or storage
outage leaves the changes pending with a growing backoff; ops.outbox_status
shows the lag and ops.outbox_failures the errors.

Where it runs: with Qdrant Edge (in-process, one owner) the gateway hosts it
and owns the index; with a Qdrant server the worker hosts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from quarry.db import TenantDatabase, is_transient, why
from quarry.errors import QuarryError
from quarry.index.base import IndexPoint
from quarry.index.handle import IndexHandle
from quarry.principal import Principal
from quarry.storage.blobs import BlobStore, blob_key

logger = logging.getLogger("quarry.outbox")

CHANNEL = "quarry_outbox"
_WAKE = f"select pg_notify('{CHANNEL}', '')"
# A lease is renewed while its change is being applied, so a short one only means
# that a relay which died (its process, or its connection) is replaced quickly.
LEASE_SECONDS = 15
RENEW_SECONDS = 5.0
CHUNK_PAGE = 500
MIN_RECONNECT_SECONDS = 0.5
MAX_RECONNECT_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 60


@dataclass(frozen=True, slots=True)
class PendingChange:
    tenant_id: uuid.UUID
    document_id: uuid.UUID
    up_to_id: int
    attempts: int
    lease: uuid.UUID


class UnindexableDocument(Exception):
    """The document's vectors can never go into this index (e.g. another model's dimensions)."""


async def wake_relay(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wake the relay when this transaction commits (a document's deletion recorded in the outbox).

    The outbox row itself is written by a trigger; the NOTIFY is not, because under
    Citus a trigger runs on the node holding the row's shard, and the relay listens
    on the coordinator.  Without it the relay's sweep still finds the change.
    """
    await conn.execute(_WAKE)


class OutboxRelay:
    def __init__(
        self,
        database: TenantDatabase,
        index: IndexHandle,
        blobs: BlobStore,
        *,
        batch: int = 32,
        sweep_seconds: float = 5.0,
        max_backoff_seconds: int = MAX_BACKOFF_SECONDS,
        optimize_when_idle: bool = True,
        idle_seconds_before_optimize: float = 5.0,
    ) -> None:
        self._database = database
        self._index = index
        self._blobs = blobs
        self._batch = batch
        self._sweep_seconds = sweep_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._optimize_when_idle = optimize_when_idle
        self._idle_seconds_before_optimize = idle_seconds_before_optimize
        self._needs_optimize = False
        self._last_sync = time.monotonic()

    async def run(self) -> None:
        """Drain on every NOTIFY and at least every sweep interval, until cancelled.

        A lost database connection is expected (restarts, failovers): one
        warning, then reconnect with a capped backoff; anything else is logged
        with its traceback and retried the same way.
        """
        backoff = MIN_RECONNECT_SECONDS
        while True:
            try:
                conninfo = self._database.service_pool.conninfo
                assert isinstance(conninfo, str)
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as listener:
                    await listener.execute(f"listen {CHANNEL}")
                    backoff = MIN_RECONNECT_SECONDS
                    await self.drain()
                    while True:
                        async for _ in listener.notifies(timeout=self._wait_seconds(), stop_after=1):
                            pass
                        await self.drain()
                        await self.optimize_if_idle()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_transient(error):
                    logger.warning("outbox relay lost the database (%s); reconnecting in %.1f s", why(error), backoff)
                else:
                    logger.exception("outbox relay error; retrying in %.1f s", backoff)
            await asyncio.sleep(backoff)
            backoff = min(MAX_RECONNECT_SECONDS, backoff * 2)

    async def drain(self) -> int:
        """Apply every change that is due; returns how many documents were synced."""
        synced = 0
        while True:
            changes = await self._claim()
            if not changes:
                break
            renewing = asyncio.create_task(self._renew([change.lease for change in changes]), name="outbox-renew")
            try:
                results = await asyncio.gather(*(self._apply(change) for change in changes))
            finally:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
            synced += sum(results)
            if not any(results):
                break  # everything due failed: wait for the backoff instead of spinning
        if synced:
            self._last_sync = time.monotonic()
        return synced

    async def _renew(self, leases: list[uuid.UUID]) -> None:
        """Keep the leases of the changes being applied; a renewal that fails is tried again."""
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._database.fetch("select internal.outbox_renew(%s, %s)", (leases, LEASE_SECONDS))
            except QuarryError as error:
                logger.warning("could not renew %d outbox lease(s) (%s)", len(leases), error.slug)

    async def optimize_if_idle(self) -> None:
        """Qdrant Edge has no background optimizer: its owner runs it, but only once
        ingestion has paused, so that index building never competes with a burst."""
        idle = time.monotonic() - self._last_sync >= self._idle_seconds_before_optimize
        if self._needs_optimize and self._optimize_when_idle and idle:
            self._needs_optimize = False
            await asyncio.to_thread(lambda: self._index.get().optimize())

    def _wait_seconds(self) -> float:
        if self._needs_optimize and self._optimize_when_idle:
            remaining = self._idle_seconds_before_optimize - (time.monotonic() - self._last_sync)
            return max(0.1, min(self._sweep_seconds, remaining))
        return self._sweep_seconds

    async def _claim(self) -> list[PendingChange]:
        rows = await self._database.fetch("select * from internal.outbox_claim(%s, %s)", (self._batch, LEASE_SECONDS))
        return [PendingChange(r["tenant_id"], r["document_id"], r["up_to_id"], r["attempts"], r["lease"]) for r in rows]

    async def _apply(self, change: PendingChange) -> bool:
        try:
            await self._sync_document(change.tenant_id, change.document_id)
        except UnindexableDocument as error:
            await self._fail_document(change, str(error))
        except QuarryError as error:
            if not error.retryable:
                logger.exception("could not apply the outbox change of document %s", change.document_id)
            await self._retry_later(change, f"{type(error).__name__}: {error}")
            return False
        except Exception as error:
            logger.exception("could not apply the outbox change of document %s", change.document_id)
            await self._retry_later(change, f"{type(error).__name__}: {error}")
            return False
        row = await self._database.fetch_one(
            "select internal.outbox_complete(%s, %s, %s, %s) as completed",
            (change.tenant_id, change.document_id, change.up_to_id, change.lease),
        )
        if not (row and row["completed"]):
            logger.warning("lost the lease on document %s; it will be synced again", change.document_id)
        return True

    async def _fail_document(self, change: PendingChange, reason: str) -> None:
        logger.error("document %s cannot be indexed: %s", change.document_id, reason)
        async with self._database.act_as(Principal.for_tenant(change.tenant_id).claims) as conn:
            await conn.execute("select internal.fail_indexing(%s, %s)", (change.document_id, reason))

    async def _sync_document(self, tenant_id: uuid.UUID, document_id: uuid.UUID) -> None:
        """Make the index hold exactly the document's chunks in Postgres (none if it is gone).

        Chunks are read and upserted a page at a time, so a huge document never
        sits in memory whole.
        """
        index = await asyncio.to_thread(self._index.get)
        written: set[uuid.UUID] = set()
        async with self._database.act_as(Principal.for_tenant(tenant_id).claims, method="GET") as conn:
            document = await (
                await conn.execute(
                    "select source::text, coalesce(mime_type, '') as mime_type, created_at"
                    " from app.documents where tenant_id = %s and id = %s",
                    (tenant_id, document_id),
                )
            ).fetchone()
            if document is not None:
                # binary: float arrays load much faster than from text
                async with conn.cursor(name="document_chunks", binary=True) as chunks:
                    await chunks.execute(
                        "select id, ordinal, dense, sparse_indices, sparse_values from app.chunks"
                        " where tenant_id = %s and document_id = %s order by ordinal",
                        (tenant_id, document_id),
                    )
                    while page := await chunks.fetchmany(CHUNK_PAGE):
                        points = [_point(document_id, document, chunk) for chunk in page]
                        try:
                            await asyncio.to_thread(index.upsert, tenant_id, points)
                        except ValueError as error:  # the index's validation: never going to fit
                            raise UnindexableDocument(f"The vector index rejected its chunks: {error}") from error
                        written.update(point.id for point in points)
                        self._needs_optimize = True
        if document is None:
            await asyncio.to_thread(index.delete_document, tenant_id, document_id)
            await asyncio.to_thread(self._blobs.delete, blob_key(tenant_id, document_id))
            return
        indexed = await asyncio.to_thread(index.document_point_ids, tenant_id, document_id)
        stale = indexed - written
        if stale:
            await asyncio.to_thread(index.delete_points, tenant_id, sorted(stale))

    async def _retry_later(self, change: PendingChange, error: str) -> None:
        delay = min(self._max_backoff_seconds, 2 ** min(change.attempts, 6))
        logger.warning(
            "outbox change of document %s failed (attempt %d): %s", change.document_id, change.attempts, error
        )
        try:
            await self._database.fetch(
                "select internal.outbox_retry_later(%s, %s, %s, %s, %s)",
                (change.tenant_id, change.document_id, change.lease, error, delay),
            )
        except QuarryError as failure:
            logger.warning(
                "could not record the failure (%s); the lease expires in %d s instead", failure.slug, LEASE_SECONDS
            )


def _point(document_id: uuid.UUID, document: dict[str, Any], chunk: dict[str, Any]) -> IndexPoint:
    return IndexPoint(
        id=chunk["id"],
        document_id=document_id,
        dense=chunk["dense"],
        sparse_indices=chunk["sparse_indices"],
        sparse_values=chunk["sparse_values"],
        source=document["source"],
        mime_type=document["mime_type"],
        created_at=document["created_at"],
        ordinal=chunk["ordinal"],
    )
