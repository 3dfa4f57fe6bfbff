from __future__ import annotations

from starlette.responses import Response

from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.account.models import Me
from quarry.account.service import get_me


async def me(call: Call) -> Response:
    return json_response(await get_me(call.session))


resources = [
    resource(
        "/api/me",
        Operation(
            "GET",
            me,
            summary="The caller's tenant id, email and effective plan",
            replies={200: Reply("The verified caller.", Me)},
        ),
    )
]
