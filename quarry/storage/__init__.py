"""Blob storage for uploaded originals: `LocalBlobStore` (default) and `S3BlobStore`."""

from gateway.storage.blobs import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    LocalBlobStore,
    S3BlobStore,
    blob_key,
)

__all__ = ["BlobNotFound", "BlobStore", "BlobStoreUnavailable", "LocalBlobStore", "S3BlobStore", "blob_key"]
