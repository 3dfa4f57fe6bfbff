"""Response bodies of the billing API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quarry.account.models import PlanId
from quarry.models import RequestModel, ResponseModel, Text, Timestamp


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


class CheckoutRequest(RequestModel):
    """Which paid plan to check out, and optionally where Stripe sends the customer back."""

    plan: Literal["pro", "enterprise"] = Field(description="Free needs no checkout; downgrade in the Billing Portal")
    success_url: Text | None = Field(
        default=None,
        max_length=2000,
        description="Where Checkout sends the customer after paying (its origin must be allow-listed)",
    )
    cancel_url: Text | None = Field(
        default=None,
        max_length=2000,
        description="Where Checkout sends the customer who gives up (its origin must be allow-listed)",
    )


class PortalQuery(RequestModel):
    return_url: Text | None = Field(
        default=None,
        max_length=2000,
        description="Where the Billing Portal sends the customer back (its origin must be allow-listed)",
    )


class BillingLink(ResponseModel):
    """A Stripe-hosted page to send the customer to."""

    url: str
