from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth.dependencies import authenticate, tenant_transaction
from gateway.json_body import read_json
from gateway.keys import service
from gateway.keys.verifier import ApiKeyVerifier

# The one response that carries a key in plaintext must not be stored anywhere on the way.
NO_STORE = {"Cache-Control": "no-store"}


async def create_key(request: Request) -> JSONResponse:
    """
    summary: Create an API key (the plaintext `key` is in this response and nowhere else, ever)
    description: >-
      `sk_live_<lookup id>_<secret><checksum>`; only a bcrypt hash of the secret
      is stored.  Use it as `Authorization: Bearer sk_…` or `Authorization: sk_…`
      for every route a signed-in user can call, on behalf of its owner.
      supabase-js: `rpc('create_api_key', {name, expires_at})`.
    requestBody:
      required: true
      content:
        application/json:
          schema:
            type: object
            required: [name]
            properties:
              name: {type: string, minLength: 1, maxLength: 200, description: no control characters}
              expires_at: {type: [string, "null"], format: date-time, description: in the future}
    responses:
      201:
        description: The key, once.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/IssuedApiKey'}
      403: {description: The caller authenticated with an API key; keys cannot create keys.}
      409: {description: The user already has 100 active keys.}
      422: {description: A bad name or expiry.}
    """
    principal = await authenticate(request)
    name, expires_at = service.parse_create_request(await read_json(request))
    async with tenant_transaction(request, principal) as conn:
        issued = await service.create_key(conn, name, expires_at)
    return JSONResponse(issued, status_code=201, headers={**NO_STORE, "Location": f"/api/keys/{issued['id']}"})


async def list_keys(request: Request) -> JSONResponse:
    """
    summary: The caller's API keys (never the secret or its hash), newest first
    description: supabase-js reads the same rows from the `api_keys` view.
    responses:
      200:
        description: The keys.
        content:
          application/json:
            schema:
              type: object
              properties:
                data: {type: array, items: {$ref: '#/components/schemas/ApiKey'}}
    """
    principal = await authenticate(request)
    async with tenant_transaction(request, principal) as conn:
        return JSONResponse({"data": await service.list_keys(conn)})


async def revoke_key(request: Request) -> Response:
    """
    summary: Revoke an API key (every gateway refuses it within a second)
    description: Revoking a revoked key changes nothing.  supabase-js - `rpc('revoke_api_key', {id})`.
    parameters:
      - {name: key_id, in: path, required: true, schema: {type: string, format: uuid}}
    responses:
      204: {description: Revoked.}
      404: {description: No such key (or not yours).}
      422: {description: The id is not a UUID.}
    """
    principal = await authenticate(request)
    key_id = service.parse_key_id(request.path_params["key_id"])
    async with tenant_transaction(request, principal) as conn:
        await service.revoke_key(conn, key_id)
    key_verifier: ApiKeyVerifier = request.app.state.key_verifier
    key_verifier.invalidate(str(key_id))  # here at once; other gateways hear the NOTIFY
    return Response(status_code=204)


routes = [
    Route("/api/keys", create_key, methods=["POST"]),
    Route("/api/keys", list_keys, methods=["GET"]),
    Route("/api/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
