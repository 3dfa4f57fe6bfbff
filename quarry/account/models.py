"""Response bodies of the account API."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from quarry.models import ResponseModel

PlanId = Literal["free", "pro", "enterprise"]


class Me(ResponseModel):
    """The verified caller and the plan that applies now."""

    tenant_id: UUID
    email: str | None
    plan: PlanId
