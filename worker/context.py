"""What every job gets from its worker process: the core's resources and the ingest pipeline."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from procrastinate import JobContext

from quarry.db import TenantSession
from quarry.documents.ingest import IngestPipeline
from quarry.logs import current_request_id
from quarry.services import Core

CONTEXT_KEY = "quarry"


@dataclass(frozen=True)
class WorkerContext:
    core: Core
    pipeline: IngestPipeline

    @classmethod
    def of(cls, context: JobContext) -> WorkerContext:
        worker: WorkerContext = context.additional_context[CONTEXT_KEY]
        return worker

    def session(self, tenant_id: uuid.UUID, *, task: str, job_id: int | None) -> TenantSession:
        """The job acts for its tenant through act_as, like a request through the gateway, under the
        request id of the request that deferred it (worker.observe sets it for the job's run)."""
        return TenantSession.for_job(
            self.core.database, tenant_id, task=task, job_id=job_id, request_id=current_request_id()
        )
