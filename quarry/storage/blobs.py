"""Blob storage for uploaded originals: a local directory (default) or S3 (boto3).

Keys are built by the server from ids only (`blob_key`), never from a
user-supplied file name, and every store checks a key's shape before using it.
Writes are atomic: a reader sees the previous object or the new one, never a
partial one; downloads are streamed to a temporary file that replaces the
destination only when complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import boto3  # type: ignore[import-untyped]
from boto3.exceptions import RetriesExceededError  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError, HTTPClientError  # type: ignore[import-untyped]
from botocore.exceptions import ConnectionError as BotoConnectionError

from quarry.errors import NotFound, Unavailable

# Segments of letters, digits, '_' and '-' joined by '/': no '.', so no '..' and no hidden names.
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
MAX_KEY_LENGTH = 1024  # S3's limit, in bytes (the charset is ASCII)

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ServiceUnavailable", "InternalError"}
)


class BlobNotFound(NotFound):
    """No blob under that key."""

    def __init__(self, key: str) -> None:
        super().__init__("The stored file is missing.", internal=f"no blob under {key}")


class BlobStoreUnavailable(Unavailable):
    """The store cannot be reached or is overloaded right now; retry later."""

    slug = "storage-unavailable"

    def __init__(self, internal: str) -> None:
        super().__init__("File storage is unavailable; try again shortly.", internal=internal)


def blob_key(tenant_id: UUID, document_id: UUID, revision: int = 0) -> str:
    """A document's stored file: each revision (a new version ingested in place) has its own."""
    if not isinstance(tenant_id, UUID) or not isinstance(document_id, UUID):
        raise TypeError("blob keys are built from UUIDs only")
    if not isinstance(revision, int) or revision < 0:
        raise TypeError("a revision is a non-negative integer")
    suffix = f"-r{revision}" if revision else ""
    return f"documents/{tenant_id}/{document_id}{suffix}"


def validate_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH or not _KEY_PATTERN.fullmatch(key):
        raise ValueError(f"invalid blob key {key!r}: expected '/'-separated segments of [A-Za-z0-9_-]")
    return key


class BlobStore(Protocol):
    """Synchronous and thread-safe; async callers run it in a worker thread."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file's bytes under key, replacing any previous blob atomically."""
        ...

    def download_to(self, key: str, path: Path) -> None:
        """Write the blob to path (replaced only once complete); raises BlobNotFound."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is fine."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob whose key is under `prefix/` (a tenant's, when erasing it); how many."""
        ...


@contextlib.contextmanager
def _replacing(destination: Path) -> Iterator[Path]:
    """A temporary path beside destination that replaces it if the block succeeds."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The '.' in the name keeps it outside the key charset: no key can ever name a partial file.
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial")
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _copy(source: Path, destination: Path, *, durable: bool) -> None:
    # copyfile copies in the kernel (sendfile) without holding the GIL: a 60 MiB upload does
    # not slow the gateway's event loop the way a copy loop of Python reads and writes does.
    shutil.copyfile(source, destination)
    if durable:
        with destination.open("rb") as written:
            os.fsync(written.fileno())


class LocalBlobStore:
    """Blobs as files under root, one per key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_file(self, key: str, path: Path) -> None:
        destination = self._path(key)
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        try:
            with _replacing(destination) as temporary:
                _copy(Path(path), temporary, durable=True)
            _fsync_directory(destination.parent)
        except OSError as error:
            raise BlobStoreUnavailable(f"cannot write {key} under {self.root}: {error}") from error

    def download_to(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise BlobNotFound(key)
        try:
            # A working copy for the reader: no fsync, it is thrown away after use.
            with _replacing(Path(path)) as temporary:
                _copy(source, temporary, durable=False)
        except OSError as error:
            if not source.is_file():  # deleted while being read
                raise BlobNotFound(key) from error
            raise BlobStoreUnavailable(f"cannot copy {key} from {self.root} to {path}: {error}") from error

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as error:
            raise BlobStoreUnavailable(f"cannot delete {key} under {self.root}: {error}") from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def path_of(self, key: str) -> Path:
        """Where the blob's file is (readers in this process may read it in place)."""
        return self._path(key)

    def delete_prefix(self, prefix: str) -> int:
        directory = self._path(prefix)
        try:
            if not directory.is_dir():
                return 0
            # Partial files of interrupted writes go too: they hold the same data.
            removed = sum(1 for path in directory.rglob("*") if path.is_file() and not path.name.startswith("."))
            shutil.rmtree(directory)
        except OSError as error:
            raise BlobStoreUnavailable(f"cannot delete {prefix}/ under {self.root}: {error}") from error
        return removed


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- S3 -------------------------------------------------------------------------------------

DEFAULT_S3_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=60,
)


def _client_error_code(error: BaseException) -> tuple[str, int] | None:
    if not isinstance(error, ClientError):
        return None
    response: dict[str, Any] = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return code, status


@contextlib.contextmanager
def _s3_errors(action: str, key: str) -> Iterator[None]:
    try:
        yield
    except (BotoConnectionError, HTTPClientError, RetriesExceededError) as error:
        raise BlobStoreUnavailable(f"S3 unreachable while trying to {action} {key}: {error}") from error
    except Exception as error:
        # boto3's upload_file re-raises a ClientError as S3UploadFailedError, keeping it as the context.
        details = _client_error_code(error) or _client_error_code(error.__context__ or error)
        if details is None:
            raise
        code, status = details
        if code in _NOT_FOUND_CODES or status == 404:
            raise BlobNotFound(key) from error
        if status >= 500 or code in _TRANSIENT_CODES:
            raise BlobStoreUnavailable(f"S3 answered {code} ({status}) while trying to {action} {key}") from error
        raise


class S3BlobStore:
    """Blobs as objects in one S3 (or S3-compatible, e.g. Supabase Storage) bucket."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        # boto3 clients are thread-safe (sessions are not: boto3.client uses the default one once, here).
        self._client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=DEFAULT_S3_CONFIG
        )

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r})"

    def put_file(self, key: str, path: Path) -> None:
        validate_key(key)
        if not Path(path).is_file():
            raise FileNotFoundError(path)
        # upload_file streams from disk, in parallel parts above its multipart threshold;
        # S3 makes the object visible only once the whole upload completes.
        with _s3_errors("upload", key):
            self._client.upload_file(str(path), self.bucket, key)

    def download_to(self, key: str, path: Path) -> None:
        validate_key(key)
        with _replacing(Path(path)) as temporary, _s3_errors("download", key):
            self._client.download_file(self.bucket, key, str(temporary))

    def delete(self, key: str) -> None:
        validate_key(key)
        with _s3_errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            with _s3_errors("look up", key):
                self._client.head_object(Bucket=self.bucket, Key=key)
        except BlobNotFound:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        validate_key(prefix)
        removed = 0
        with _s3_errors("delete everything under", prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{prefix}/"):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not keys:
                    continue
                answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                if answer.get("Errors"):
                    raise BlobStoreUnavailable(f"S3 could not delete {len(answer['Errors'])} object(s) under {prefix}/")
                removed += len(keys)
        return removed
