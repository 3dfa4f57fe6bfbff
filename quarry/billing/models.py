"""Response bodies of the billing API."""

from __future__ import annotations

from pydantic import Field

from quarry.account.models import PlanId
from quarry.models import ResponseModel, Timestamp


class LimitUsage(ResponseModel):
    used: int
    limit: int | None = Field(description="null: unlimited")
    resets_at: Timestamp | None = Field(description="null: the count does not reset (freed by deleting)")


class Usage(ResponseModel):
    """The effective plan, the subscription's status and, per limit, what is used."""

    plan: PlanId
    subscription_status: str | None
    limits: dict[str, LimitUsage] = Field(
        description="documents_per_month, storage_bytes, drive_folders, queries_per_day, exports, requests_per_hour"
    )
