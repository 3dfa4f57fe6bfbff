"""Where export archives go: written as a stream, read back through a link or by the gateway.

An archive is written once, front to back, without ever being whole in
memory: `ArchiveStore.writer(key)` takes its bytes as they are produced.

- Local (the default): a hidden partial file beside the final name, made
  durable and renamed into place on commit (a reader never sees half an
  archive); the gateway serves it to its owner (`path_of`).
- S3 (`EXPORT_S3_BUCKET`, with `S3_ENDPOINT_URL` for S3-compatible stores): a
  multipart upload whose parts (PART_BYTES each, the last one shorter) are
  sent as they fill, completed on commit and aborted on failure, so no
  partial object is ever visible; the link is a presigned GET that makes the
  browser download it (`Content-Disposition: attachment`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Protocol

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from quarry.settings import Settings
from quarry.storage.blobs import (
    DEFAULT_S3_CONFIG,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    LocalBlobStore,
    S3BlobStore,
    _fsync_directory,
    _s3_errors,
    validate_key,
)

# S3 wants parts of at least 5 MiB (but the last) and at most 10,000 of them: 16 MiB parts
# allow archives of 160 GB, with one part's worth of memory.
PART_BYTES = 16 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024
SIGV4 = Config(signature_version="s3v4")


def export_key(tenant_id: object, export_id: object) -> str:
    return f"exports/{tenant_id}/{export_id}"


def export_prefix(tenant_id: object) -> str:
    return f"exports/{tenant_id}"


class ArchiveWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> int:
        """Make the archive visible under its key; its size in bytes."""
        ...

    def abort(self) -> None:
        """Forget everything written (safe to call after a failure, and twice)."""
        ...


class ArchiveStore(BlobStore, Protocol):
    def writer(self, key: str) -> ArchiveWriter: ...

    def download_url(self, key: str, *, filename: str, expires_seconds: int) -> str | None:
        """A link anyone holding it can download with for `expires_seconds`; None where the gateway serves it."""
        ...

    def path_of(self, key: str) -> Path | None:
        """The local file to serve (local store only)."""
        ...


class _LocalWriter:
    def __init__(self, destination: Path) -> None:
        self._destination = destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial")
        self._path = Path(temporary)
        self._file: IO[bytes] | None = os.fdopen(handle, "wb")
        self._size = 0

    def write(self, data: bytes) -> None:
        assert self._file is not None, "the archive was committed or aborted"
        try:
            self._file.write(data)
        except OSError as error:
            self.abort()
            raise BlobStoreUnavailable(f"cannot write {self._destination}: {error}") from error
        self._size += len(data)

    def commit(self) -> int:
        assert self._file is not None, "the archive was committed or aborted"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self._path, self._destination)
            _fsync_directory(self._destination.parent)
        except OSError as error:
            self.abort()
            raise BlobStoreUnavailable(f"cannot store {self._destination}: {error}") from error
        return self._size

    def abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class LocalArchiveStore(LocalBlobStore):
    def writer(self, key: str) -> ArchiveWriter:
        return _LocalWriter(self._path(key))

    def download_url(self, key: str, *, filename: str, expires_seconds: int) -> str | None:
        return None

    def path_of(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path


class _MultipartWriter:
    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._size = 0
        with _s3_errors("start uploading", key):
            answer = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/zip")
        self._upload_id: str | None = str(answer["UploadId"])

    def write(self, data: bytes) -> None:
        assert self._upload_id is not None, "the archive was committed or aborted"
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= self._part_bytes:
            self._send(bytes(self._buffer[: self._part_bytes]))
            del self._buffer[: self._part_bytes]

    def _send(self, body: bytes) -> None:
        number = len(self._parts) + 1
        try:
            with _s3_errors("upload a part of", self._key):
                answer = self._client.upload_part(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
                )
        except Exception:
            self.abort()
            raise
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def commit(self) -> int:
        assert self._upload_id is not None, "the archive was committed or aborted"
        if self._buffer or not self._parts:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        try:
            with _s3_errors("complete the upload of", self._key):
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except Exception:
            self.abort()
            raise
        self._upload_id = None
        return self._size

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        with contextlib.suppress(Exception):  # an upload left behind is removed by the bucket's lifecycle rule
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)


class S3ArchiveStore(S3BlobStore):
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        # Presigned links are SigV4 (what caps them at 7 days), whatever boto3's default.
        client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=DEFAULT_S3_CONFIG.merge(SIGV4)
        )
        super().__init__(bucket, client=client)
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 parts are at least {MIN_PART_BYTES} bytes")
        self.part_bytes = part_bytes

    def writer(self, key: str) -> ArchiveWriter:
        return _MultipartWriter(self._client, self.bucket, validate_key(key), self.part_bytes)

    def download_url(self, key: str, *, filename: str, expires_seconds: int) -> str | None:
        validate_key(key)
        safe_name = "".join(char for char in filename if char.isalnum() or char in "-_.") or "export.zip"
        with _s3_errors("sign a link to", key):
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": f'attachment; filename="{safe_name}"',
                    "ResponseContentType": "application/zip",
                },
                ExpiresIn=expires_seconds,
            )
        return url

    def path_of(self, key: str) -> Path | None:
        return None


def open_archive_store(settings: Settings) -> ArchiveStore:
    """EXPORT_S3_BUCKET (or S3_BUCKET with BLOB_BACKEND=s3), else the local blob directory."""
    if settings.exports.s3_bucket is not None:
        return S3ArchiveStore(settings.exports.s3_bucket, endpoint_url=settings.s3_endpoint_url)
    return LocalArchiveStore(settings.blob_dir)
