"""Supabase JWT verification (DESIGN §3).

Asymmetric tokens (ES256, RS256) are checked against the project's JWKS;
HS256 only against the legacy shared secret, and only when one is configured
(so a token "signed" with a public key as an HMAC secret never verifies).
Every other algorithm, `none` included, is refused.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import jwt

from gateway.auth.jwks import ASYMMETRIC_ALGORITHMS, JwksCache
from quarry.errors import Unauthorized
from quarry.principal import Principal

_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_REQUIRED_CLAIMS = ["exp", "sub", "aud", "iss"]


class JwtVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str,
        leeway_seconds: int,
        hs256_secret: str | None,
    ) -> None:
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._hs256_secret = hs256_secret

    async def verify(self, token: str) -> Principal:
        """The principal a valid token names; raises a 401 Problem otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The bearer token is not a well-formed JWT.") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise Unauthorized("The token names no signing algorithm.")
        key = await self._key_for(algorithm, header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("The token is not valid yet.") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"The token's audience must be {self._audience!r}.") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("The token was issued by another auth server.") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthorized(f"The token has no {error.claim!r} claim.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The token's signature or contents are invalid.") from None
        return _principal(claims)

    async def _key_for(self, algorithm: str, kid: object) -> Any:
        if algorithm == "HS256":
            if self._hs256_secret is None:
                raise Unauthorized("HS256 tokens are not accepted by this server.")
            return self._hs256_secret
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise Unauthorized(f"Tokens signed with {algorithm!r} are not accepted.")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("The token names no signing key (kid).")
        signing_key = await self._jwks.get(kid, algorithm)
        if signing_key is None:
            raise Unauthorized("The token was signed with an unknown key.")
        return signing_key.key


def _principal(claims: dict[str, Any]) -> Principal:
    if claims.get("role") != "authenticated":
        raise Unauthorized("The token's role must be 'authenticated'.")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not _CANONICAL_UUID.match(subject):
        raise Unauthorized("The token's subject is not a user id.")
    return Principal(tenant_id=UUID(subject), claims=claims)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header."""
    if not authorization:
        raise Unauthorized("Send `Authorization: Bearer <token>` (a Supabase access token or an API key).")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Send `Authorization: Bearer <token>` (a Supabase access token or an API key).")
    return token
