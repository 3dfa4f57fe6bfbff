"""Blob storage for uploaded originals: `LocalBlobStore` (default) and `S3BlobStore`."""

from quarry.settings import Settings
from quarry.storage.blobs import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    LocalBlobStore,
    S3BlobStore,
    blob_key,
)

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "LocalBlobStore",
    "S3BlobStore",
    "blob_key",
    "open_blob_store",
]


def open_blob_store(settings: Settings) -> BlobStore:
    """The store the settings ask for."""
    if settings.blob_backend == "s3":
        assert settings.s3_bucket is not None  # Settings checks this
        return S3BlobStore(settings.s3_bucket, endpoint_url=settings.s3_endpoint_url)
    return LocalBlobStore(settings.blob_dir)
