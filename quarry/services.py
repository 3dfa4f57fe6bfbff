"""The core's resources and services, built once per process from the settings.

The gateway keeps one in `app.state.core`; a worker builds one for its jobs.
Everything here is shared by both; nothing here knows about HTTP or jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from quarry.billing.checkout import BillingService
from quarry.db import TenantDatabase
from quarry.documents.service import DocumentService
from quarry.drive.service import Drive
from quarry.index.handle import IndexHandle
from quarry.search.service import SearchService
from quarry.settings import Settings
from quarry.storage import BlobStore, open_blob_store


@dataclass
class Core:
    settings: Settings
    database: TenantDatabase
    blobs: BlobStore
    index: IndexHandle
    documents: DocumentService
    search: SearchService
    billing: BillingService
    drive: Drive | None = None

    @classmethod
    def build(cls, settings: Settings, database: TenantDatabase) -> Core:
        """Nothing is opened here: the vector index opens on first use (IndexHandle)."""
        blobs = open_blob_store(settings)
        index = IndexHandle(settings)
        return cls(
            settings=settings,
            database=database,
            blobs=blobs,
            index=index,
            documents=DocumentService(blobs, max_bytes=settings.upload_max_bytes),
            search=SearchService(
                index, model_dir=settings.embedding_model_dir, model_cache_dir=settings.model_cache_dir
            ),
            billing=BillingService(database, settings.billing),
            drive=Drive(settings.drive, database) if settings.drive is not None else None,
        )

    def close(self) -> None:
        self.search.close()
        self.index.close()
