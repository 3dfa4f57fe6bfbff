"""Response bodies of the account API."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from quarry.models import NO_NUL_PATTERN, RequestModel, ResponseModel, Timestamp

PlanId = Literal["free", "pro", "enterprise"]


class Me(ResponseModel):
    """The verified caller and the plan that applies now."""

    tenant_id: UUID
    email: str | None
    plan: PlanId


class DeleteAccount(RequestModel):
    """Deleting the account is confirmed by typing its email address."""

    confirm: Annotated[str, StringConstraints(pattern=NO_NUL_PATTERN, max_length=320)] = Field(
        description="the account's email address, exactly (case does not matter)"
    )


DeletionStepName = Literal[
    "inventory", "google_token", "stripe_customer", "jobs", "vectors", "blobs", "rows", "auth_user", "receipt"
]


class DeletionStep(ResponseModel):
    name: DeletionStepName
    done_at: Timestamp | None = Field(description="when the step finished (null: not yet)")


class AccountDeletion(ResponseModel):
    """An account being erased: each step and when it finished, and what was found to erase."""

    state: Literal["queued", "running", "retrying"] = Field(
        description="`retrying`: a step failed (see `last_error`) and is tried again"
    )
    requested_at: Timestamp
    started_at: Timestamp | None
    updated_at: Timestamp
    steps: list[DeletionStep]
    counts: dict[str, Any] = Field(description="what was found and erased: rows per table, files, Stripe and Google")
    last_error: str | None
    attempts: int
