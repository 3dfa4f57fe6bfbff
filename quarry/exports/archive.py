"""The export archive: what goes in it, and the ZIP64 stream that writes it.

Every table that holds tenant rows is either exported (a JSON file lists
it in `tables`) or listed in EXCLUDED with the reason;
tests/py/quarry/exports/test_archive.py reads the catalog so that a new table
cannot be forgotten.  Columns that are secrets or machinery (API-key hashes,
the Drive token's ciphertext, Drive page tokens, dense/sparse vectors) are
simply never selected.

The archive (format version 1):

    manifest.json        format, version, created_at, export and tenant ids, and per file its
                         row count, size and SHA-256 (of the file's uncompressed bytes); the
                         originals' totals (each original's SHA-256 is in documents.json)
    documents.json       metadata + processed content (`content`) + `original` (its path here)
    chunks.json          text, position, document id, ordinal, token count
    drive_configs.json   synced folders and their sync state (never tokens)
    drive_connection.json, drive_files.json, drive_sync_runs.json
    api_keys.json        metadata only (prefix, last 4, times), never the hash
    query_log.json, subscription.json, usage.json, audit_log.json, exports.json
    originals/<document id>/<file name>   the uploaded files, byte for byte

Each JSON file is one array written row by row (Postgres renders each row's
JSON), so no file is ever whole in memory; the ZIP is written front to back
with data descriptors (ZIP64 throughout), so nothing needs seeking back.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

from quarry.exports.storage import ArchiveWriter

FORMAT = "quarry-export"
FORMAT_VERSION = 1
JSON_COMPRESS_LEVEL = 3  # zlib 3: ~4x on JSON text at several times level 6's speed
COPY_BYTES = 1024 * 1024
MAX_LISTED_MISSING = 1000
# Formats that are compressed already: stored as they are (deflating them gains nothing, costs CPU).
COMPRESSED_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/epub+zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
)

# A document's text up to this many characters travels inside its row; longer
# texts are read and written in slices of this size (so no row is huge in memory).
INLINE_CONTENT_CHARS = 65_536  # (written out in DOCUMENTS.query)
CONTENT_SLICE_CHARS = 1_048_576


@dataclass(frozen=True)
class JsonFile:
    """One JSON array in the archive: the tenant tables it exports and the query (one `row` of JSON text each)."""

    name: str
    tables: tuple[str, ...]
    query: str


DOCUMENTS = JsonFile(
    "documents.json",
    ("app.documents", "app.document_texts"),
    """
    select
        row_to_json(d)::text as row,
        coalesce(char_length(t.text), 0) as content_chars,
        case when char_length(t.text) <= 65536 then t.text end as content
    from (
        select
            id, title, source, mime_type, size_bytes, sha256, status, error_reason, page_count, chunk_count,
            char_count, created_at, updated_at, ready_at
        from app.documents
        where tenant_id = %(tenant)s
    ) as d
    left join app.document_texts as t on t.tenant_id = %(tenant)s and t.document_id = d.id
    order by d.id
    """,
)


def table_file(
    name: str, tables: tuple[str, ...], columns: str, source: str, order: str, *, where: str = "tenant_id = %(tenant)s"
) -> JsonFile:
    """A JSON file of rows of one table or view (the tenant's rows, named as a value; RLS too), those
    columns, in that order.  Every query of the archive takes the tenant as `%(tenant)s`."""
    query = (
        f"select row_to_json(x)::text as row from (select {columns} from {source} where {where} order by {order}) as x"  # noqa: S608
    )
    return JsonFile(name, tables, query)


OTHER_FILES: tuple[JsonFile, ...] = (
    table_file(
        "chunks.json",
        ("app.chunks",),
        "id, document_id, ordinal, text, position, token_count, embedding_model, created_at",
        "app.chunks",
        "document_id, ordinal",
    ),
    table_file(
        "drive_configs.json",
        ("app.drive_folders",),
        "id, google_folder_id, name, state, last_synced_at, files_seen, files_indexed, files_skipped, files_failed,"
        " last_error, created_at, updated_at",
        "app.drive_folders",
        "created_at, id",
    ),
    table_file(
        "drive_connection.json",
        ("app.drive_connections",),
        "id, status, scopes, created_at, updated_at",
        "app.drive_connections",
        "created_at",
    ),
    table_file(
        "drive_files.json",
        ("app.drive_files",),
        "folder_id, file_id, state, name, mime_type, parents, version, document_id, reason, updated_at",
        "app.drive_files",
        "folder_id, file_id",
    ),
    table_file(
        "drive_sync_runs.json",
        ("app.drive_sync_runs",),
        "id, folder_id, state, full_crawl, files_seen, files_indexed, files_skipped, files_failed, files_removed,"
        " error, created_at, started_at, finished_at",
        "app.drive_sync_runs",
        "created_at, id",
    ),
    table_file(
        "api_keys.json",
        ("app.api_keys",),
        "id, name, prefix, last4, status, created_at, expires_at, revoked_at, last_used_at",
        "api.api_keys",
        "created_at, id",
    ),
    table_file(
        "query_log.json",
        ("app.query_log",),
        "id, query, mode, result_count, latency_ms, api_key_id, created_at",
        "app.query_log",
        "created_at, id",
    ),
    JsonFile(
        "subscription.json",
        ("app.subscriptions", "app.billing_customers"),
        """
        select json_build_object(
            'plan', app.effective_plan(%(tenant)s),
            'subscription', (
                select to_jsonb(s) - 'tenant_id' from app.subscriptions as s where s.tenant_id = %(tenant)s
            ),
            'stripe_customer_id', (
                select c.stripe_customer_id from app.billing_customers as c where c.tenant_id = %(tenant)s
            )
        )::text as row
        """,
    ),
    table_file(
        "usage.json",
        ("app.usage_counters", "app.rate_limit_windows"),
        "*",
        "app.usage_of(%(tenant)s)",  # api.usage for a tenant given as a value
        "1",
        where="true",
    ),
    table_file(
        "audit_log.json",
        ("app.audit_log",),
        "id, occurred_at, actor_type, actor_id, action, target_type, target_id, request_id, details",
        "app.audit_log",
        "occurred_at, id",
    ),
    table_file(
        "exports.json",
        ("app.export_requests",),
        "id, status, counts, size_bytes, error, created_at, started_at, finished_at, expires_at",
        "api.exports",
        "created_at, id",
    ),
)

JSON_FILES: tuple[JsonFile, ...] = (DOCUMENTS, *OTHER_FILES)

# Tenant tables deliberately left out of the archive, and why.
EXCLUDED: dict[str, str] = {
    "app.outbox": "pending changes for the vector index: machinery, no data of the user's own",
    "app.idempotency_keys": "sealed replies to retried requests, readable only with the client's key; kept 24 h",
    "app.drive_oauth_states": "a Drive authorization in progress (a hash and a PKCE verifier, 10 minutes)",
    "app.api_key_creations": "how many API keys were created this hour (a rate limit), no content",
    "internal.stripe_events": "Stripe's webhook deliveries (event ids and outcomes): operational records",
    "internal.api_key_lookups": "routing of a key's public lookup id to its tenant (the keys are in api_keys.json)",
    "internal.stripe_customer_lookups": "routing of the Stripe customer to its tenant (it is in subscription.json)",
    "app.blob_deletions": "stored files of replaced revisions waiting to be deleted: machinery, no data of the user's",
}

ORIGINALS_QUERY = (
    "select id, title, mime_type, blob_key, sha256, size_bytes from app.documents"
    " where tenant_id = %(tenant)s order by id"
)


def exported_tables() -> set[str]:
    return {table for spec in JSON_FILES for table in spec.tables}


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def original_path(document_id: object, title: str | None) -> str:
    """Where a document's original goes in the archive: its id, then a safe form of its title."""
    name = _UNSAFE_NAME.sub("_", title or "").strip(" .")[:120] or "original"
    return f"originals/{document_id}/{name}"


@dataclass
class FileSummary:
    rows: int = 0
    bytes: int = 0
    sha256: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


class _Sink(io.RawIOBase):
    """What zipfile writes to: forwards to the archive writer and counts; cannot seek (so data
    descriptors are used and nothing is rewritten)."""

    def __init__(self, writer: ArchiveWriter) -> None:
        super().__init__()
        self._writer = writer
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._writer.write(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position


END_RECORD_BYTES = 22  # the end-of-central-directory record, without a comment


def central_record(info: zipfile.ZipInfo) -> bytes:
    """One entry's central-directory record, encoded by zipfile itself (its end record, less the end)."""
    output = io.BytesIO()
    probe = SimpleNamespace(filelist=[info], fp=output, start_dir=0, _allowZip64=True, _comment=b"", mode="w")
    zipfile.ZipFile._write_end_record(probe)  # type: ignore[attr-defined]
    return output.getvalue()[:-END_RECORD_BYTES]


class _SpooledDirectory(list[zipfile.ZipInfo]):
    """ZipFile.filelist, kept on disk: each finished entry's central-directory record goes to a
    temporary file, so the archive's directory costs no memory however many files it has."""

    def __init__(self) -> None:
        super().__init__()
        self.entries = 0
        self.spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed with the archive)

    def append(self, info: zipfile.ZipInfo) -> None:
        self.spool.write(central_record(info))
        self.entries += 1

    def __len__(self) -> int:
        return self.entries

    def __iter__(self) -> Iterator[zipfile.ZipInfo]:
        return iter(())


class _Forgetful(dict[str, zipfile.ZipInfo]):
    """ZipFile.NameToInfo, which would keep every entry: our names are unique by construction."""

    def __setitem__(self, name: str, info: zipfile.ZipInfo) -> None:
        return None


class SpoolingZipFile(zipfile.ZipFile):
    """A ZipFile for writing whose central directory waits on disk, not in memory, until the end."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, "w", allowZip64=True)
        self.filelist = _SpooledDirectory()
        self.NameToInfo = _Forgetful()

    def _write_end_record(self) -> None:
        directory = self.filelist
        assert isinstance(directory, _SpooledDirectory)
        directory.spool.seek(0)
        while block := directory.spool.read(COPY_BYTES):
            self.fp.write(block)  # type: ignore[union-attr]
        directory.spool.close()
        # zipfile writes the end records: no entry left to list, `len(filelist)` of them counted.
        super()._write_end_record()  # type: ignore[misc]


class Entry:
    """One file being written into the archive: its bytes pass through a SHA-256 on the way."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.summary = FileSummary()

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        self._digest.update(data)
        self.summary.bytes += len(data)

    def close(self) -> FileSummary:
        self._handle.close()
        self.summary.sha256 = self._digest.hexdigest()
        return self.summary


class JsonArray:
    """A JSON array written element by element (each element is JSON text already)."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        entry.write(b"[")

    def add(self, element: str | bytes) -> None:
        data = element.encode() if isinstance(element, str) else element
        self.entry.write(b"\n" if self.entry.summary.rows == 0 else b",\n")
        self.entry.write(data)
        self.entry.summary.rows += 1

    def add_rows(self, elements: Iterable[str]) -> None:
        for element in elements:
            self.add(element)

    def begin_partial(self, head: str) -> None:
        """An element written in pieces (a document with a long text): its head, then `continue_partial`."""
        self.entry.write(b"\n" if self.entry.summary.rows == 0 else b",\n")
        self.entry.write(head.encode())
        self.entry.summary.rows += 1

    def continue_partial(self, piece: str) -> None:
        self.entry.write(piece.encode())

    def close(self) -> FileSummary:
        self.entry.write(b"\n]\n")
        return self.entry.close()


def with_content(row: str, content: str | None) -> str:
    """A document's row (JSON text) with its `content` and `original` added."""
    document = json.loads(row)
    document["content"] = content
    document["original"] = original_path(document["id"], document.get("title"))
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def content_head(row: str) -> str:
    """A document's row up to the opening quote of its (long) content, which follows in slices."""
    document = json.loads(row)
    document["original"] = original_path(document["id"], document.get("title"))
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"content":"'


def content_piece(text: str) -> str:
    """A slice of a string, escaped for the inside of a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


@dataclass
class ArchiveBuilder:
    """The ZIP being written, file after file (all synchronous: the job calls it off the event loop)."""

    writer: ArchiveWriter
    created_at: str
    export_id: str
    tenant_id: str
    files: dict[str, FileSummary] = field(default_factory=dict)
    originals: FileSummary = field(default_factory=FileSummary)
    missing_originals: list[str] = field(default_factory=list)  # the first MAX_LISTED_MISSING
    missing_count: int = 0
    _zip: zipfile.ZipFile | None = None

    def __post_init__(self) -> None:
        self._zip = SpoolingZipFile(_Sink(self.writer))

    def _open(self, name: str, *, compress: bool) -> Entry:
        assert self._zip is not None, "the archive is closed"
        info = zipfile.ZipInfo(name, date_time=_zip_time(self.created_at))
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        if compress:
            info._compresslevel = JSON_COMPRESS_LEVEL  # type: ignore[attr-defined]  # compress_level from 3.13 on
        info.external_attr = 0o644 << 16
        return Entry(self._zip.open(info, "w", force_zip64=True))

    def json_array(self, name: str) -> JsonArray:
        return JsonArray(self._open(name, compress=True))

    def finish_json(self, name: str, array: JsonArray) -> None:
        self.files[name] = array.close()

    def original_missing(self, document_id: str) -> None:
        self.missing_count += 1
        if len(self.missing_originals) < MAX_LISTED_MISSING:
            self.missing_originals.append(document_id)

    def add_original(self, path_in_archive: str, source: Path, mime_type: str | None) -> tuple[int, str]:
        """Copy one original in; its size and SHA-256."""
        with source.open("rb") as handle:  # opened first: a missing file leaves no entry half-written
            entry = self._open(path_in_archive, compress=(mime_type or "") not in COMPRESSED_TYPES)
            while block := handle.read(COPY_BYTES):
                entry.write(block)
            summary = entry.close()
        self.originals.rows += 1
        self.originals.bytes += summary.bytes
        return summary.bytes, summary.sha256

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": self.created_at,
            "export_id": self.export_id,
            "tenant_id": self.tenant_id,
            "files": {name: summary.as_json() for name, summary in self.files.items()},
            "originals": {
                "directory": "originals/",
                "files": self.originals.rows,
                "bytes": self.originals.bytes,
                "checksums": "each document's `sha256` in documents.json",
                "missing": self.missing_originals,
                "missing_count": self.missing_count,
            },
        }

    def close(self) -> dict[str, Any]:
        """Write manifest.json and the ZIP's central directory; the manifest."""
        manifest = self.manifest()
        entry = self._open("manifest.json", compress=True)
        entry.write(json.dumps(manifest, indent=2).encode())
        entry.close()
        assert self._zip is not None
        self._zip.close()
        self._zip = None
        return manifest

    def counts(self) -> dict[str, int]:
        """Rows per JSON file and the originals' count: what the export's status shows."""
        return {**{name: summary.rows for name, summary in self.files.items()}, "originals": self.originals.rows}


def _zip_time(created_at: str) -> tuple[int, int, int, int, int, int]:
    # ZIP stores local times from 1980 on; the creation time (UTC) stands for every entry.
    date, _, time = created_at.partition("T")
    year, month, day = (int(part) for part in date.split("-"))
    hour, minute, second = (int(float(part)) for part in time[:8].split(":"))
    return (max(year, 1980), month, day, hour, minute, second)
