from __future__ import annotations

from starlette.responses import Response

from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.billing.models import Usage
from quarry.billing.service import get_usage


async def usage(call: Call) -> Response:
    return json_response(await get_usage(call.session))


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
    )
]
