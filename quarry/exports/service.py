"""Exports for the gateway: request one, list them, read one, hand out the archive.

A request is api.request_export (what supabase-js calls too): its insert's
triggers refuse a second export while one is queued or running (409 naming
it) and beyond the plan's frequency (402 with the next allowed time), then
internal.queue_export defers the build job, in the same transaction.  A ready export's `download_url` is a
presigned S3 link that expires with the export (never later), or, with the
local store, the gateway's own download route, which serves the file to its
owner only.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from quarry.db import TenantSession
from quarry.errors import Conflict, NotFound
from quarry.exports.models import Export, ExportList
from quarry.exports.storage import ArchiveStore, export_key
from quarry.idempotency import Created, Idempotency, fingerprint
from quarry.settings import ExportSettings

COLUMNS = (
    "id, status, progress, counts, size_bytes, error, created_at, started_at, finished_at, expires_at,"
    " greatest(0, floor(extract(epoch from expires_at - app.clock())))::bigint as seconds_left"
)


class ExportGone(Conflict):
    """The export is not (or no longer) downloadable."""

    slug = "export-not-ready"


def archive_filename(created_at: datetime) -> str:
    return f"quarry-export-{created_at:%Y-%m-%d}.zip"


class ExportService:
    def __init__(self, settings: ExportSettings, store: ArchiveStore) -> None:
        self.settings = settings
        self.store = store

    async def request(self, session: TenantSession, *, idempotency: Idempotency | None = None) -> Created[Export]:
        async with session.transaction() as conn:
            if idempotency is not None:
                replayed = await idempotency.claim(conn, session.tenant_id, fingerprint("export"), Export)
                if replayed is not None:
                    return Created(replayed, replayed=True)
            cursor = await conn.execute("select id from api.request_export()")
            created = await cursor.fetchone()
            assert created is not None
            row = await self._row(conn, session.tenant_id, created["id"])
            assert row is not None
            export = await self._model(session.tenant_id, row)
            if idempotency is not None:
                await idempotency.complete(conn, session.tenant_id, export, export.id)
        return Created(export)

    async def list(self, session: TenantSession) -> ExportList:
        async with session.transaction() as conn:
            cursor = await conn.execute(
                f"select {COLUMNS} from api.exports where tenant_id = %s"  # noqa: S608
                " order by created_at desc, id desc limit 100",
                (session.tenant_id,),
            )
            rows = await cursor.fetchall()
        return ExportList(data=[await self._model(session.tenant_id, row) for row in rows])

    async def get(self, session: TenantSession, export_id: uuid.UUID) -> Export:
        async with session.transaction() as conn:
            row = await self._row(conn, session.tenant_id, export_id)
        if row is None:
            raise NotFound("No such export.")
        return await self._model(session.tenant_id, row)

    async def archive_path(self, session: TenantSession, export_id: uuid.UUID) -> tuple[Path | None, str, str | None]:
        """For the download route: the local file to serve (or None), its download name, and with S3 a
        fresh presigned link to send the owner to instead."""
        export = await self.get(session, export_id)
        if export.status != "ready":
            raise ExportGone(
                f"The export is {export.status}: only a ready export can be downloaded.",
                extensions={"export_status": export.status},
            )
        name = archive_filename(export.created_at)
        key = export_key(session.tenant_id, export_id)
        path = await asyncio.to_thread(self.store.path_of, key)
        return path, name, export.download_url

    async def _row(self, conn: Any, tenant_id: uuid.UUID, export_id: uuid.UUID) -> dict[str, Any] | None:
        cursor = await conn.execute(
            f"select {COLUMNS} from api.exports where tenant_id = %s and id = %s",  # noqa: S608
            (tenant_id, export_id),
        )
        row: dict[str, Any] | None = await cursor.fetchone()
        return row

    async def _model(self, tenant_id: uuid.UUID, row: dict[str, Any]) -> Export:
        fields = {key: value for key, value in row.items() if key != "seconds_left"}
        url = None
        if row["status"] == "ready" and row["seconds_left"]:
            url = await self.link(tenant_id, row["id"], row["created_at"], int(row["seconds_left"]))
        return Export.model_validate({**fields, "download_url": url})

    async def link(self, tenant_id: uuid.UUID, export_id: uuid.UUID, created_at: datetime, seconds_left: int) -> str:
        """A presigned link valid no longer than the export itself (S3), or the gateway's download route."""
        expires = max(1, min(seconds_left, self.settings.link_expiry_days * 86_400))
        presigned = await asyncio.to_thread(
            self.store.download_url,
            export_key(tenant_id, export_id),
            filename=archive_filename(created_at),
            expires_seconds=expires,
        )
        return presigned or f"{self.settings.public_api_url}/api/export/{export_id}/download"
