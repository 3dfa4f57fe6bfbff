from __future__ import annotations

from starlette.responses import Response

from gateway.auth.api_keys import ApiKeyVerifier
from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.account.deletion import deletion_status, request_deletion
from quarry.account.models import AccountDeletion, DeleteAccount, Me
from quarry.account.service import get_me
from quarry.errors import Forbidden


async def me(call: Call) -> Response:
    return json_response(await get_me(call.session))


async def delete_account(call: Call) -> Response:
    principal = call.principal
    assert principal is not None
    if principal.api_key_id is not None:
        raise Forbidden("An API key cannot delete the account: sign in and use your session token.")
    deletion = await request_deletion(call.core.database, principal, call.body(DeleteAccount))
    key_verifier: ApiKeyVerifier = call.request.app.state.key_verifier
    key_verifier.invalidate_tenant(principal.tenant_id)  # here at once; other gateways hear the revocations
    return json_response(deletion, status_code=202, headers={"Location": "/api/account/deletion"})


async def get_account_deletion(call: Call) -> Response:
    assert call.principal is not None
    return json_response(await deletion_status(call.core.database, call.principal.tenant_id))


resources = [
    resource(
        "/api/me",
        Operation(
            "GET",
            me,
            summary="The caller's tenant id, email and effective plan",
            replies={200: Reply("The verified caller.", Me)},
        ),
    ),
    resource(
        "/api/account",
        Operation(
            "DELETE",
            delete_account,
            summary="Delete the account and everything in it (GDPR Art. 17); confirm with the account's email",
            description=(
                "At once: every API key stops working and every request of the account is refused (403), but"
                " `GET /api/account/deletion`.  Then a background job revokes the Google Drive token, cancels the"
                " Stripe subscription and deletes the customer, deletes every vector, file and row, deletes the"
                " login, and emails a receipt.  Asking again while it runs answers the same deletion.  A session"
                " token (JWT) only: an API key gets 403."
            ),
            body=DeleteAccount,
            while_deleting=True,
            replies={202: Reply("Deleting.", AccountDeletion, headers={"Location": "where to follow it"})},
            problems={
                403: "The caller used an API key.",
                422: "`confirm` is not the account's email address.",
            },
        ),
    ),
    resource(
        "/api/account/deletion",
        Operation(
            "GET",
            get_account_deletion,
            summary="The account deletion's progress, step by step (until the account is gone: then 401)",
            while_deleting=True,
            replies={200: Reply("The deletion under way.", AccountDeletion)},
            problems={404: "The account is not being deleted."},
        ),
    ),
]
