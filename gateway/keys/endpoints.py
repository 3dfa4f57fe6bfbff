from __future__ import annotations

from starlette.responses import Response

from gateway.auth.api_keys import ApiKeyVerifier
from gateway.operations import Call, Operation, Reply, json_response, resource
from quarry.keys import service
from quarry.keys.models import ApiKeyList, CreateApiKey, IssuedApiKey

# The one response that carries a key in plaintext must not be stored anywhere on the way.
NO_STORE = {"Cache-Control": "no-store"}


async def create_key(call: Call) -> Response:
    created = await service.create_key(call.session, call.body(CreateApiKey), idempotency=call.idempotency)
    return call.created(created, headers={**NO_STORE, "Location": f"/api/keys/{created.value.id}"})


async def list_keys(call: Call) -> Response:
    return json_response(await service.list_keys(call.session))


async def revoke_key(call: Call) -> Response:
    key_id = call.id("key_id")
    await service.revoke_key(call.session, key_id)
    key_verifier: ApiKeyVerifier = call.request.app.state.key_verifier
    key_verifier.invalidate(str(key_id))  # here at once; other gateways hear the NOTIFY
    return Response(status_code=204)


resources = [
    resource(
        "/api/keys",
        Operation(
            "POST",
            create_key,
            summary="Create an API key (the plaintext `key` is in this response and nowhere else, ever)",
            description=(
                "`sk_live_<lookup id>_<secret><checksum>`; only a bcrypt hash of the secret is stored.  Use it as"
                " `Authorization: Bearer sk_…` or `Authorization: sk_…` for every route a signed-in user can call, on"
                " behalf of its owner.  supabase-js: `rpc('create_api_key', {name, expires_at})`."
            ),
            body=CreateApiKey,
            idempotent=True,
            replies={
                201: Reply(
                    "The key, once.",
                    IssuedApiKey,
                    headers={"Location": "the key's URL", "Cache-Control": "no-store"},
                )
            },
            problems={
                403: "The caller authenticated with an API key; keys cannot create keys.",
                409: "The user already has 100 active keys.",
                422: "A bad name, or an expiry that is not in the future.",
                429: (
                    "Over the plan's hourly rate limit, or its new API keys per hour (`limit`: `api_keys_per_hour`;"
                    " revoking keys gives none back); see Retry-After."
                ),
            },
        ),
        Operation(
            "GET",
            list_keys,
            summary="The caller's API keys (never the secret or its hash), newest first",
            description="supabase-js reads the same rows from the `api_keys` view.",
            replies={200: Reply("The keys.", ApiKeyList)},
        ),
    ),
    resource(
        "/api/keys/{key_id}",
        Operation(
            "DELETE",
            revoke_key,
            summary="Revoke an API key (every gateway refuses it within a second)",
            description="Revoking a revoked key changes nothing.  supabase-js: `rpc('revoke_api_key', {id})`.",
            path_ids={"key_id": "the key's id"},
            replies={204: Reply("Revoked.")},
            problems={404: "No such key (or not yours)."},
        ),
    ),
]
