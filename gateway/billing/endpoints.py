from __future__ import annotations

from starlette.responses import Response

from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.billing.models import BillingLink, CheckoutRequest, PortalQuery, Usage
from quarry.billing.service import get_usage

# A Stripe session URL is for this caller, now: nothing on the way keeps it.
NO_STORE = {"Cache-Control": "no-store"}


async def usage(call: Call) -> Response:
    return json_response(await get_usage(call.session))


async def checkout(call: Call) -> Response:
    link = await call.core.billing.checkout(call.session, call.body(CheckoutRequest))
    return json_response(link, headers=NO_STORE)


async def portal(call: Call) -> Response:
    link = await call.core.billing.portal(call.session, call.query(PortalQuery).return_url)
    return json_response(link, headers=NO_STORE)


BILLING_UNAVAILABLE = "Stripe cannot be reached, or billing is not set up on this deployment (Retry-After)."

resources = [
    resource(
        "/api/billing/usage",
        Operation(
            "GET",
            usage,
            summary="The caller's effective plan, subscription status and usage of every limit",
            description=(
                "For each limit of the plan: `used`, `limit` (null means unlimited) and `resets_at` (null means the"
                " count does not reset: storage and Drive folders are freed by deleting).  Monthly and daily counts"
                " reset at the UTC boundary; `requests_per_hour` is the account's gateway requests in the current UTC"
                " hour (its own session and all its API keys).  supabase-js reads the same rows from the `usage` view."
            ),
            replies={200: Reply("Plan, status and limits.", Usage)},
        ),
    ),
    resource(
        "/api/billing/checkout",
        Operation(
            "POST",
            checkout,
            summary="A Stripe Checkout Session for Pro or Enterprise: send the customer to its `url`",
            description=(
                "The account's Stripe customer is created on its first checkout.  The plan applies as soon as"
                " Stripe's webhook arrives (the next request sees it).  `success_url` and `cancel_url` default to"
                " the deployment's; given, their origin must be allow-listed.  An account with a live subscription"
                " changes it in the Billing Portal instead (409, with `portal_url`)."
            ),
            body=CheckoutRequest,
            replies={200: Reply("The Checkout Session's URL.", BillingLink, headers={"Cache-Control": "no-store"})},
            problems={
                409: "The account already has a live subscription (`subscription-exists`, with `portal_url`).",
                422: "A plan other than pro or enterprise, or a return URL on an origin that is not allowed.",
                503: BILLING_UNAVAILABLE,
            },
        ),
    ),
    resource(
        "/api/billing/portal",
        Operation(
            "GET",
            portal,
            summary="A Stripe Billing Portal session for the caller's own customer: change plan, card, cancel",
            description="`return_url` defaults to the deployment's; given, its origin must be allow-listed.",
            query=PortalQuery,
            replies={
                200: Reply("The Billing Portal session's URL.", BillingLink, headers={"Cache-Control": "no-store"})
            },
            problems={
                404: "The account has no Stripe customer yet (it never checked out).",
                422: "A return URL on an origin that is not allowed.",
                503: BILLING_UNAVAILABLE,
            },
        ),
    ),
]
