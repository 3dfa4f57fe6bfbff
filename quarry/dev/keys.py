"""The dev ES256 signing key (kept in .dev/, out of git) and dev tokens.

This stands in for Supabase Auth on a machine without GoTrue: tokens minted
here have the shape Supabase issues and are verified by the gateway through
the JWKS the dev auth server publishes, exactly like production tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from quarry.dev.settings import DevModeRefused, DevSettings

KEY_FILE = "jwt-es256-private.pem"


def load_or_create_key(settings: DevSettings) -> ec.EllipticCurvePrivateKey:
    path = settings.dev_dir / KEY_FILE
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DevModeRefused(f"{path} is not an EC private key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    settings.dev_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    tmp.replace(path)
    return key


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.pop("key_ops", None)
    # RFC 7638 thumbprint as kid, so the same key always has the same kid.
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def supabase_claims(settings: DevSettings, user_id: uuid.UUID, email: str, ttl_seconds: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": settings.gateway.jwt_issuer,
        "aud": "authenticated",
        "sub": str(user_id),
        "exp": now + ttl_seconds,
        "iat": now,
        "email": email,
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }


def mint_token(settings: DevSettings, user_id: uuid.UUID, email: str, *, ttl_seconds: int = 3600) -> str:
    key = load_or_create_key(settings)
    kid = public_jwk(key)["kid"]
    return jwt.encode(
        supabase_claims(settings, user_id, email, ttl_seconds), key, algorithm="ES256", headers={"kid": kid}
    )


SERVICE_ROLE_TTL_SECONDS = 10 * 365 * 24 * 3600


def mint_service_role_key(settings: DevSettings) -> str:
    """The dev project's service-role key (what SUPABASE_SERVICE_ROLE_KEY is on a real project)."""
    key = load_or_create_key(settings)
    now = int(time.time())
    claims = {
        "iss": settings.gateway.jwt_issuer,
        "role": "service_role",
        "iat": now,
        "exp": now + SERVICE_ROLE_TTL_SECONDS,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": public_jwk(key)["kid"]})
