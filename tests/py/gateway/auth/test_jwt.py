"""The JWT matrix of DESIGN §3, answered through the real gateway (/api/me)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from tests.py.support.api import GatewayFactory
from tests.py.support.database import Users
from tests.py.support.tokens import JwksServer, KeySet, TokenFactory


def me(client: TestClient, token: str) -> httpx2.Response:
    response: httpx2.Response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    return response


def assert_unauthorized(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body: dict[str, Any] = response.json()
    assert body["status"] == 401
    assert body["type"].endswith("/unauthorized")
    assert body["detail"]
    return body


@pytest.mark.parametrize("algorithm", ["es256", "rs256", "hs256"])
def test_valid_tokens_are_accepted(gateway: TestClient, tokens: TokenFactory, users: Users, algorithm: str) -> None:
    token = getattr(tokens, algorithm)(users.alice, email="alice@example.com")
    response = me(gateway, token)
    assert response.status_code == 200, response.text
    assert response.json() == {"tenant_id": str(users.alice), "email": "alice@example.com", "plan": "enterprise"}


def test_expiry_within_the_leeway_is_accepted(gateway: TestClient, tokens: TokenFactory, users: Users) -> None:
    assert me(gateway, tokens.es256(users.alice, exp=int(time.time()) - 3)).status_code == 200


def _now() -> int:
    return int(time.time())


# Each case is a function of "now", so that the times are fresh when the test runs.
REJECTED_CLAIMS: dict[str, Callable[[int], dict[str, Any]]] = {
    "expired": lambda now: {"exp": now - 120, "iat": now - 3720},
    "not yet valid (nbf)": lambda now: {"nbf": now + 600},
    "issued in the future (iat)": lambda now: {"iat": now + 600},
    "wrong aud": lambda now: {"aud": "anon"},
    "no aud": lambda now: {"aud": None},
    "wrong iss": lambda now: {"iss": "https://evil.example.com/auth/v1"},
    "missing sub": lambda now: {"sub": None},
    "missing exp": lambda now: {"exp": None},
    "non-uuid sub": lambda now: {"sub": "alice"},
    "uuid sub in braces": lambda now: {"sub": "{6c7e2a9e-6a43-4b8e-9a57-1d5a1f0e1a01}"},
    "role anon": lambda now: {"role": "anon"},
    "role service_role": lambda now: {"role": "service_role"},
    "no role": lambda now: {"role": None},
}


@pytest.mark.parametrize("claims", REJECTED_CLAIMS.values(), ids=REJECTED_CLAIMS.keys())
@pytest.mark.parametrize("algorithm", ["es256", "hs256"])
def test_bad_claims_are_rejected(
    gateway: TestClient,
    tokens: TokenFactory,
    users: Users,
    claims: Callable[[int], dict[str, Any]],
    algorithm: str,
) -> None:
    assert_unauthorized(me(gateway, getattr(tokens, algorithm)(users.alice, **claims(_now()))))


def test_alg_none_is_rejected(gateway: TestClient, tokens: TokenFactory, users: Users) -> None:
    for alg in ("none", "None", "NONE"):
        token = tokens.raw({"alg": alg, "typ": "JWT"}, tokens.claims(users.alice))
        assert_unauthorized(me(gateway, token))


def test_hs256_signed_with_the_public_key_is_rejected(
    gateway: TestClient, tokens: TokenFactory, keys: KeySet, users: Users
) -> None:
    """Algorithm confusion: the attacker HMACs with the (public) ES256 key."""
    claims = tokens.claims(users.alice)
    for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "typ": "JWT", "kid": keys.es256_kid}):
        assert_unauthorized(me(gateway, tokens.raw(header, claims, hmac_key=keys.es256_public_pem())))


def test_tampered_payload_is_rejected(gateway: TestClient, tokens: TokenFactory, users: Users) -> None:
    for token in (tokens.es256(users.alice), tokens.rs256(users.alice), tokens.hs256(users.alice)):
        header, _, signature = token.split(".")
        forged_payload = tokens.raw({"alg": "x"}, tokens.claims(users.bob)).split(".")[1]
        assert_unauthorized(me(gateway, f"{header}.{forged_payload}.{signature}"))


def test_truncated_signature_is_rejected(gateway: TestClient, tokens: TokenFactory, users: Users) -> None:
    assert_unauthorized(me(gateway, tokens.es256(users.alice)[:-4]))


def test_unknown_kid_is_rejected_after_exactly_one_refetch(
    gateway: TestClient, tokens: TokenFactory, users: Users, jwks_server: JwksServer
) -> None:
    assert me(gateway, tokens.es256(users.alice)).status_code == 200  # keys are cached now
    before = jwks_server.fetches
    assert_unauthorized(me(gateway, tokens.es256(users.alice, kid="rotated-away")))
    assert jwks_server.fetches == before + 1


def test_a_newly_published_key_is_picked_up(
    gateway: TestClient, tokens: TokenFactory, keys: KeySet, users: Users, jwks_server: JwksServer
) -> None:
    assert me(gateway, tokens.es256(users.alice)).status_code == 200
    rotated = KeySet(es256_kid="es256-key-2")
    original = jwks_server.document
    jwks_server.document = {"keys": original["keys"] + rotated.jwks()["keys"][:1]}
    try:
        new_tokens = TokenFactory(keys=rotated, issuer=tokens.issuer)
        assert me(gateway, new_tokens.es256(users.alice)).status_code == 200
    finally:
        jwks_server.document = original


def test_unknown_kids_cannot_force_a_refetch_storm(
    make_gateway: GatewayFactory, tokens: TokenFactory, users: Users, jwks_server: JwksServer
) -> None:
    gateway = make_gateway(JWKS_MIN_REFETCH_SECONDS="60")
    assert me(gateway, tokens.es256(users.alice)).status_code == 200
    before = jwks_server.fetches
    for _ in range(20):
        assert_unauthorized(me(gateway, tokens.es256(users.alice, kid=str(uuid.uuid4()))))
    assert jwks_server.fetches - before <= 1


def test_key_type_must_match_the_algorithm(
    gateway: TestClient, tokens: TokenFactory, keys: KeySet, users: Users
) -> None:
    """An RS256 token naming the EC key's kid must not verify against it (or crash)."""
    import jwt

    token = jwt.encode(tokens.claims(users.alice), keys.rs256, algorithm="RS256", headers={"kid": keys.es256_kid})
    assert_unauthorized(me(gateway, token))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512", "RS512", "ES384", "PS256", "EdDSA"])
def test_other_algorithms_are_refused(gateway: TestClient, tokens: TokenFactory, users: Users, algorithm: str) -> None:
    token = tokens.raw({"alg": algorithm, "typ": "JWT", "kid": tokens.keys.es256_kid}, tokens.claims(users.alice), b"k")
    assert_unauthorized(me(gateway, token))


def test_hs256_is_refused_without_a_configured_secret(
    make_gateway: GatewayFactory, tokens: TokenFactory, users: Users
) -> None:
    gateway = make_gateway(SUPABASE_JWT_SECRET="")
    assert_unauthorized(me(gateway, tokens.hs256(users.alice)))
    assert me(gateway, tokens.es256(users.alice)).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer ...."],
)
def test_malformed_authorization_headers_are_rejected(gateway: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    assert_unauthorized(gateway.get("/api/me", headers=headers))


def test_jwks_outage_keeps_serving_cached_keys(
    make_gateway: GatewayFactory, tokens: TokenFactory, users: Users, jwks_server: JwksServer
) -> None:
    gateway = make_gateway(JWKS_CACHE_SECONDS="0")
    assert me(gateway, tokens.es256(users.alice)).status_code == 200
    original = jwks_server.document
    jwks_server.document = {"keys": "not a list"}
    try:
        # The stale cache is refetched, the bad document is ignored, the known key still works.
        assert me(gateway, tokens.es256(users.alice)).status_code == 200
    finally:
        jwks_server.document = original
