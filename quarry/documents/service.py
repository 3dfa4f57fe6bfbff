"""Documents: create (after an upload), list, read, delete, content.

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
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.db import Connection
from gateway.documents.upload import ReceivedUpload
from gateway.errors import Problem
from gateway.storage.blobs import BlobStore, blob_key
from worker.parsing.sniff import Sniffed

logger = logging.getLogger("quarry.documents")

DOCUMENT_COLUMNS = (
    "id, title, source, mime_type, size_bytes, status, error_reason, page_count, chunk_count,"
    " created_at, updated_at, ready_at"
)
_INSERT_DOCUMENT = f"""
insert into app.documents (id, title, source, mime_type, size_bytes, blob_key, sha256)
values (%s, %s, 'upload', %s, %s, %s, %s)
returning {DOCUMENT_COLUMNS}
"""  # noqa: S608 (DOCUMENT_COLUMNS is a constant)
STATUSES = ("queued", "processing", "indexing", "ready", "failed")
SOURCES = ("upload", "drive")
MAX_PAGE_SIZE = 100
# The multipart framing around a file is small: judging the file by the body's
# length minus this never refuses an upload that would in fact fit.
MULTIPART_ALLOWANCE = 64 * 1024
MAX_CURSOR_LENGTH = 200


def document_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (
            value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, uuid.UUID) else value
        )
        for key, value in row.items()
    }


async def precheck_upload(conn: Connection, content_length: str | None) -> None:
    """Refuse (402) before the body is read if the month is used up or the file cannot fit.

    Advisory: it counts nothing; the insert's atomic check decides.
    """
    expected = int(content_length) - MULTIPART_ALLOWANCE if content_length and content_length.isdigit() else 0
    # Absurd lengths are receive_upload's to refuse (413); here they only need to stay a bigint.
    await conn.execute("select internal.precheck_upload(%s::bigint)", (min(max(expected, 0), 2**62),), prepare=True)


async def store_blob(blobs: BlobStore, tenant_id: uuid.UUID, document_id: uuid.UUID, upload: ReceivedUpload) -> str:
    key = blob_key(tenant_id, document_id)
    try:
        await asyncio.to_thread(blobs.put_file, key, upload.path)
    except Exception:  # unavailable, or refusing us (credentials, bucket): either way not the client's fault
        logger.exception("storing the upload failed")
        raise Problem(503, "storage-unavailable", "File storage is unavailable; try again shortly.") from None
    return key


async def discard_blob(blobs: BlobStore, key: str) -> None:
    try:
        await asyncio.to_thread(blobs.delete, key)
    except Exception:  # the orphan is harmless and named by its key; log and move on
        logger.exception("could not remove blob %s after a failed upload", key)


async def insert_document(
    conn: Connection, document_id: uuid.UUID, upload: ReceivedUpload, sniffed: Sniffed, key: str
) -> dict[str, Any]:
    """The row and (by trigger) its ingest job, in the caller's transaction."""
    cursor = await conn.execute(
        _INSERT_DOCUMENT,
        (document_id, upload.title(), sniffed.mime_type, upload.size, key, upload.sha256),
    )
    row = await cursor.fetchone()
    assert row is not None
    return document_json(row)


@dataclass(frozen=True)
class ListQuery:
    limit: int
    status: str | None
    source: str | None
    after: tuple[datetime, uuid.UUID] | None


def parse_list_query(params: dict[str, str]) -> ListQuery:
    unknown = set(params) - {"limit", "cursor", "status", "source"}
    if unknown:
        raise Problem(422, "invalid-parameter", f"Unknown query parameter(s): {', '.join(sorted(unknown))}.")
    raw_limit = params.get("limit", "20")
    if not re.fullmatch(r"[0-9]{1,3}", raw_limit) or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
        raise Problem(422, "invalid-parameter", f"`limit` must be a whole number from 1 to {MAX_PAGE_SIZE}.")
    status, source = params.get("status"), params.get("source")
    if status is not None and status not in STATUSES:
        raise Problem(422, "invalid-parameter", f"`status` must be one of {', '.join(STATUSES)}.")
    if source is not None and source not in SOURCES:
        raise Problem(422, "invalid-parameter", f"`source` must be one of {', '.join(SOURCES)}.")
    cursor = params.get("cursor")
    return ListQuery(int(raw_limit), status, source, decode_cursor(cursor) if cursor else None)


def encode_cursor(created_at: datetime, document_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(document_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise Problem(422, "invalid-parameter", "`cursor` is not one this API returned.")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, document_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(document_id)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise Problem(422, "invalid-parameter", "`cursor` is not one this API returned.") from None


async def list_documents(conn: Connection, query: ListQuery) -> dict[str, Any]:
    conditions: list[str] = ["true"]
    params: list[object] = []
    if query.status:
        conditions.append("status = %s::app.document_status")
        params.append(query.status)
    if query.source:
        conditions.append("source = %s::app.document_source")
        params.append(query.source)
    if query.after:
        conditions.append("(created_at, id) < (%s, %s)")
        params.extend(query.after)
    params.append(query.limit + 1)
    cursor = await conn.execute(
        f"select {DOCUMENT_COLUMNS} from api.documents where {' and '.join(conditions)}"  # noqa: S608 (constants)
        " order by created_at desc, id desc limit %s",
        params,
    )
    rows = await cursor.fetchall()
    page = rows[: query.limit]
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > query.limit else None
    return {"data": [document_json(row) for row in page], "next_cursor": next_cursor}


def parse_document_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(422, "invalid-parameter", "The document id must be a UUID.") from None


def not_found() -> Problem:
    return Problem(404, "not-found", "No such document.")


async def get_document(conn: Connection, document_id: uuid.UUID) -> dict[str, Any]:
    cursor = await conn.execute(
        f"select {DOCUMENT_COLUMNS} from api.documents where id = %s",  # noqa: S608 (a constant)
        (document_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise not_found()
    return document_json(row)


async def delete_document(conn: Connection, document_id: uuid.UUID) -> None:
    cursor = await conn.execute("delete from api.documents where id = %s returning id", (document_id,))
    if await cursor.fetchone() is None:
        raise not_found()


async def document_content(conn: Connection, document_id: uuid.UUID) -> str:
    cursor = await conn.execute(
        """
        select d.status::text as status, t.text
        from api.documents as d left join app.document_texts as t on t.document_id = d.id
        where d.id = %s
        """,
        (document_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise not_found()
    if row["text"] is None:
        raise Problem(
            409,
            "not-processed",
            f"The document has no processed text yet (status: {row['status']}).",
            extensions={"document_status": row["status"]},
        )
    return str(row["text"])
