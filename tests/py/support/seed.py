"""Processed documents made directly, as the worker would leave them (tests of what comes after
ingestion, and bench/export.py): the stored original, the row (`ready`), its text and its chunks.

Written as the service (the admin connection, COPY for the bulk), in one
transaction per call: the rows pass every constraint and trigger the
worker's path does (the chunk ids are the derived UUIDv5s, quotas are
metered on insert, the audit log records each document), only faster.  No
points are put in the vector index (nothing here needs them).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from quarry.documents.chunking import chunk_id
from quarry.storage.blobs import BlobStore, LocalBlobStore, blob_key

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class SeedDocument:
    title: str
    original: bytes
    text: str
    chunks: Sequence[str]
    mime_type: str = "text/plain"
    source: str = "upload"
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def seed_documents(
    admin_url: str,
    blobs: BlobStore,
    tenant: uuid.UUID,
    documents: Iterable[SeedDocument],
    *,
    dimensions: int = 384,
    durable: bool = True,
) -> list[uuid.UUID]:
    """Store the originals, then the rows; returns the document ids in order.

    `durable=False` (a benchmark's bulk, local store only) writes the originals without an fsync each.
    """
    seeded = list(documents)
    with tempfile.TemporaryDirectory(prefix="quarry-seed-") as scratch:
        for document in seeded:
            key = blob_key(tenant, document.id)
            if not durable and isinstance(blobs, LocalBlobStore):
                (blobs.root / key).parent.mkdir(parents=True, exist_ok=True)
                (blobs.root / key).write_bytes(document.original)
                continue
            path = Path(scratch) / "original"
            path.write_bytes(document.original)
            blobs.put_file(key, path)
    vector = "{" + ",".join(["0.05103"] * dimensions) + "}"
    with psycopg.connect(admin_url) as conn, conn.transaction():
        with conn.cursor().copy(
            "copy app.documents (tenant_id, id, title, source, mime_type, size_bytes, status, blob_key, sha256,"
            " page_count, chunk_count, char_count, ready_at) from stdin"
        ) as copy:
            for d in seeded:
                copy.write_row(
                    (
                        tenant, d.id, d.title, d.source, d.mime_type, len(d.original), "ready", blob_key(tenant, d.id),
                        hashlib.sha256(d.original).hexdigest(), 1, len(d.chunks), len(d.text), "now",
                    )
                )  # fmt: skip
        with conn.cursor().copy("copy app.document_texts (tenant_id, document_id, text) from stdin") as copy:
            for d in seeded:
                copy.write_row((tenant, d.id, d.text))
        with conn.cursor().copy(
            "copy app.chunks (tenant_id, id, document_id, ordinal, text, token_count, position, embedding_model,"
            " dense, sparse_indices, sparse_values) from stdin"
        ) as copy:
            for d in seeded:
                for ordinal, text in enumerate(d.chunks):
                    position = json.dumps({"page": 1, "start": ordinal * 100})
                    copy.write_row(
                        (
                            tenant, chunk_id(tenant, d.id, ordinal), d.id, ordinal, text, len(text.split()), position,
                            MODEL, vector, "{1,2,3}", "{0.5,0.25,0.125}",
                        )
                    )  # fmt: skip
    return [document.id for document in seeded]
