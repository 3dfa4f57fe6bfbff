"""The core's resources and services, built once per process from the settings.

The gateway keeps one in `app.state.core`; a worker builds one for its jobs.
Everything here is shared by both; nothing here knows about HTTP or jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from quarry.account.auth_admin import AuthAdmin
from quarry.account.deletion import AccountEraser
from quarry.billing.checkout import BillingService
from quarry.db import TenantDatabase
from quarry.documents.service import DocumentService
from quarry.drive.service import Drive
from quarry.exports.build import ExportBuilder
from quarry.exports.service import ExportService
from quarry.exports.storage import ArchiveStore, open_archive_store
from quarry.index.handle import IndexHandle
from quarry.mail import Mailer, mailer_for
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
    archives: ArchiveStore
    mailer: Mailer
    exports: ExportService
    export_builder: ExportBuilder
    drive: Drive | None = None

    @classmethod
    def build(cls, settings: Settings, database: TenantDatabase) -> Core:
        """Nothing is opened here: the vector index opens on first use (IndexHandle)."""
        blobs = open_blob_store(settings)
        index = IndexHandle(settings)
        archives = open_archive_store(settings)
        mailer = mailer_for(settings.mail)
        exports = ExportService(settings.exports, archives)
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
            archives=archives,
            mailer=mailer,
            exports=exports,
            export_builder=ExportBuilder(exports, blobs, mailer),
            drive=Drive(settings.drive, database) if settings.drive is not None else None,
        )

    def account_eraser(self) -> AccountEraser:
        """What erases accounts in this process (the worker's `account:delete`)."""
        return AccountEraser(
            database=self.database,
            blobs=self.blobs,
            archives=self.archives,
            index=self.index,
            owns_index=not self.settings.relay_in_gateway,
            drive=self.drive,
            stripe=self.billing.stripe,
            auth=AuthAdmin(self.settings.supabase_url, self.settings.supabase_service_role_key),
            mailer=self.mailer,
        )

    def close(self) -> None:
        self.search.close()
        self.index.close()
