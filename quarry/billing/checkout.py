"""Checkout and the Billing Portal: the caller's own Stripe customer, never anyone else's.

The customer is the caller's row of app.billing_customers (read under RLS);
the first checkout creates it in Stripe (metadata.tenant_id, an idempotency
key from the tenant, so concurrent first checkouts make one) and records it
through internal.record_billing_customer (the gateway's login role only).
internal.begin_checkout refuses a checkout while a live subscription exists
(409 subscription-exists, which this answers with a Billing Portal link).
Where Stripe sends the customer back comes from the settings, or from the
request when its origin is allow-listed: never an open redirect.
"""

from __future__ import annotations

import json

from quarry.billing.models import BillingLink, CheckoutRequest
from quarry.billing.stripe_api import BillingNotConfigured, StripeApi
from quarry.db import TenantDatabase, TenantSession
from quarry.errors import Conflict, Invalid, NotFound
from quarry.settings import BillingSettings, origin_of


class BillingService:
    def __init__(self, database: TenantDatabase, settings: BillingSettings | None) -> None:
        self.database = database
        self.settings = settings
        self.stripe = StripeApi(settings) if settings is not None else None
        self._prices_recorded = False

    async def aclose(self) -> None:
        if self.stripe is not None:
            await self.stripe.aclose()

    def _configured(self) -> tuple[BillingSettings, StripeApi]:
        if self.settings is None or self.stripe is None:
            raise BillingNotConfigured()
        return self.settings, self.stripe

    async def record_prices(self) -> None:
        """The configured prices into the price map (once per process; idempotent in SQL)."""
        settings, _ = self._configured()
        if not self._prices_recorded:
            await self.database.fetch("select internal.set_stripe_prices(%s::jsonb)", (json.dumps(settings.prices),))
            self._prices_recorded = True

    async def checkout(self, session: TenantSession, request: CheckoutRequest) -> BillingLink:
        settings, api = self._configured()
        success_url = self._allowed(request.success_url, settings.success_url, "success_url")
        cancel_url = self._allowed(request.cancel_url, settings.cancel_url, "cancel_url")
        await self.record_prices()
        try:
            async with session.transaction() as conn:
                row = await (await conn.execute("select internal.begin_checkout() as customer")).fetchone()
        except Conflict as conflict:
            if conflict.slug != "subscription-exists":
                raise
            raise await self._with_portal_link(session, conflict) from None
        customer = row["customer"] if row else None
        if customer is None:
            created = await api.create_customer(session.tenant_id, session.principal.email)
            recorded = await self.database.fetch_one(
                "select internal.record_billing_customer(%s, %s) as customer", (session.tenant_id, created)
            )
            assert recorded is not None
            customer = recorded["customer"]
        url = await api.checkout_url(
            tenant_id=session.tenant_id,
            customer=customer,
            plan=request.plan,
            success_url=success_url,
            cancel_url=cancel_url,
        )
        return BillingLink(url=url)

    async def portal(self, session: TenantSession, return_url: str | None) -> BillingLink:
        settings, api = self._configured()
        back = self._allowed(return_url, settings.return_url, "return_url")
        customer = await self.customer_of(session)
        if customer is None:
            raise NotFound("The account has no Stripe customer yet: check out a plan first.")
        return BillingLink(url=await api.portal_url(customer=customer, return_url=back))

    async def customer_of(self, session: TenantSession) -> str | None:
        """The caller's own Stripe customer (RLS: nobody else's row is visible)."""
        async with session.transaction() as conn:
            row = await (
                await conn.execute(
                    "select stripe_customer_id from app.billing_customers where tenant_id = %s",
                    (session.tenant_id,),
                    prepare=True,
                )
            ).fetchone()
        return str(row["stripe_customer_id"]) if row else None

    async def _with_portal_link(self, session: TenantSession, conflict: Conflict) -> Conflict:
        settings, api = self._configured()
        customer = await self.customer_of(session)
        extensions = dict(conflict.extensions)
        extensions.pop("code", None)
        if customer is not None:
            extensions["portal_url"] = await api.portal_url(customer=customer, return_url=settings.return_url)
        return Conflict(conflict.detail, slug=conflict.slug, extensions=extensions)

    def _allowed(self, requested: str | None, default: str, field: str) -> str:
        if requested is None:
            return default
        assert self.settings is not None
        origin = origin_of(requested)
        if origin is None or origin not in self.settings.redirect_origins:
            raise Invalid(
                f"`{field}` must be an http(s) URL on an allowed origin.",
                extensions={"field": field, "allowed_origins": sorted(self.settings.redirect_origins)},
            )
        return requested
