"""The Stripe calls Quarry makes (stripe-python), in one place.

One `StripeApi` per process, built from BillingSettings: the gateway creates
customers, Checkout Sessions and Billing Portal sessions; the worker lists a
customer's subscriptions to reconcile them.  A Stripe failure leaves as
BillingUnavailable (503, try again): the caller's request changed nothing in
our database.  Keys and Stripe's messages are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import stripe

from quarry.errors import Unavailable
from quarry.settings import BillingSettings

logger = logging.getLogger("quarry.billing")

# Stripe keeps an idempotency key for 24 hours: every checkout of a tenant
# within that time names the same customer creation, so concurrent first
# checkouts create one customer.
CUSTOMER_IDEMPOTENCY_PREFIX = "quarry-customer-"
CHECKOUT_IDEMPOTENCY_PREFIX = "quarry-checkout-"
CHECKOUT_WINDOW_SECONDS = 600


class BillingUnavailable(Unavailable):
    slug = "billing-unavailable"
    stripe_status: int | None = None  # Stripe's HTTP status, when Stripe answered

    def __init__(self, detail: str = "Billing is unavailable right now; try again shortly.", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)


class BillingNotConfigured(Unavailable):
    slug = "billing-unavailable"

    def __init__(self, detail: str = "Billing is not set up on this deployment.", **kwargs: Any) -> None:
        super().__init__(detail, retry_after=3600, **kwargs)


def customer_idempotency_key(tenant_id: uuid.UUID) -> str:
    return f"{CUSTOMER_IDEMPOTENCY_PREFIX}{tenant_id}"


def checkout_idempotency_key(tenant_id: uuid.UUID, fields: Sequence[str], *, now: float | None = None) -> str:
    """The same checkout asked for again within CHECKOUT_WINDOW_SECONDS is the same Checkout Session.

    A double click or two tabs racing would otherwise open two sessions, and paying both
    makes two subscriptions (the second is refused in SQL, but Stripe would still charge it).
    """
    window = int((time.time() if now is None else now) // CHECKOUT_WINDOW_SECONDS)
    digest = hashlib.sha256("\x1f".join([str(tenant_id), *fields, str(window)]).encode()).hexdigest()
    return f"{CHECKOUT_IDEMPOTENCY_PREFIX}{digest[:48]}"


class StripeApi:
    def __init__(self, settings: BillingSettings) -> None:
        self.settings = settings
        options: dict[str, Any] = {}
        if settings.api_base:
            options["base_addresses"] = {"api": settings.api_base}
        self._http = stripe.HTTPXClient()
        self._client = stripe.StripeClient(
            settings.secret_key, http_client=self._http, max_network_retries=2, **options
        )

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, tenant_id: uuid.UUID, email: str | None) -> str:
        options: stripe.RequestOptions = {"idempotency_key": customer_idempotency_key(tenant_id)}
        with _translated("create a customer"):
            if email:
                customer = await self._client.v1.customers.create_async(
                    {"metadata": {"tenant_id": str(tenant_id)}, "email": email}, options
                )
            else:
                customer = await self._client.v1.customers.create_async(
                    {"metadata": {"tenant_id": str(tenant_id)}}, options
                )
        return str(customer.id)

    async def checkout_url(
        self, *, tenant_id: uuid.UUID, customer: str, plan: str, success_url: str, cancel_url: str
    ) -> str:
        tenant = str(tenant_id)
        price = self.settings.price_of(plan)
        options: stripe.RequestOptions = {
            "idempotency_key": checkout_idempotency_key(tenant_id, [customer, plan, price, success_url, cancel_url])
        }
        with _translated("create a Checkout Session"):
            session = await self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": customer,
                    "client_reference_id": tenant,
                    "line_items": [{"price": price, "quantity": 1}],
                    "subscription_data": {"metadata": {"tenant_id": tenant}},
                    "metadata": {"tenant_id": tenant, "plan": plan},
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                },
                options,
            )
        if not session.url:
            raise BillingUnavailable(internal="Stripe returned a Checkout Session without a URL")
        return str(session.url)

    async def portal_url(self, *, customer: str, return_url: str) -> str:
        with _translated("create a Billing Portal session"):
            session = await self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url}
            )
        return str(session.url)

    async def subscriptions_of(self, customer: str) -> list[dict[str, Any]]:
        """Every subscription of the customer (cancelled ones included), as plain JSON objects."""
        found: list[dict[str, Any]] = []
        with _translated("list subscriptions"):
            page = await self._client.v1.subscriptions.list_async({"customer": customer, "status": "all", "limit": 100})
            async for subscription in page.auto_paging_iter():
                found.append(subscription.to_dict(for_json=True))
        return found

    async def erase_customer(self, customer: str) -> int:
        """Account deletion: cancel every live subscription now, then delete the customer.

        Idempotent: a customer already deleted (404) was erased by an earlier run. Returns how
        many subscriptions were cancelled.
        """
        try:
            subscriptions = await self.subscriptions_of(customer)
        except BillingUnavailable as error:
            if _missing(error):
                return 0
            raise
        cancelled = 0
        for subscription in subscriptions:
            if subscription.get("status") in ENDED_SUBSCRIPTION_STATUSES:
                continue
            try:
                with _translated("cancel a subscription"):
                    await self._client.v1.subscriptions.cancel_async(str(subscription["id"]))
            except BillingUnavailable as error:
                if not _missing(error):
                    raise
            cancelled += 1
        try:
            with _translated("delete a customer"):
                await self._client.v1.customers.delete_async(customer)
        except BillingUnavailable as error:
            if not _missing(error):
                raise
        return cancelled


ENDED_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})


def _missing(error: BillingUnavailable) -> bool:
    """Stripe answered 404: the object is gone (an earlier run deleted it)."""
    return error.stripe_status == 404


class _translated:
    """Stripe's exceptions as BillingUnavailable, logged by kind and status only."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        if isinstance(error, stripe.StripeError):
            status = getattr(error, "http_status", None)
            logger.warning("Stripe refused to %s: %s (HTTP %s)", self.action, type(error).__name__, status)
            unavailable = BillingUnavailable(internal=f"Stripe {type(error).__name__} ({status})")
            unavailable.stripe_status = status
            raise unavailable from None
