"""Signing keys, a real JWKS HTTP server and token minting for tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from quarry.dev import auth_admin

HS256_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class KeySet:
    es256: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rs256: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    es256_kid: str = "es256-key-1"
    rs256_kid: str = "rs256-key-1"

    def jwks(self) -> dict[str, Any]:
        es = json.loads(ECAlgorithm.to_jwk(self.es256.public_key()))
        rs = json.loads(RSAAlgorithm.to_jwk(self.rs256.public_key()))
        return {
            "keys": [
                {**es, "kid": self.es256_kid, "alg": "ES256", "use": "sig"},
                {**rs, "kid": self.rs256_kid, "alg": "RS256", "use": "sig"},
            ]
        }

    def es256_public_pem(self) -> bytes:
        return self.es256.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class JwksServer:
    """Serves /auth/v1/.well-known/jwks.json from a document tests can change; counts fetches.

    With `admin_database_url` set it also answers Supabase Auth's admin endpoint
    `DELETE /auth/v1/admin/users/{id}` for a service-role JWT signed by its keys
    (quarry/dev/auth_admin.py), deleting the user from that database.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        self.admin_database_url: str | None = None
        self.deleted_users: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/auth/v1/.well-known/jwks.json":
                    self.send_error(404)
                    return
                server.fetches += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_DELETE(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if server.admin_database_url is None:
                    status, answer = 404, {"code": 404, "msg": "no admin API here"}
                elif not auth_admin.is_service_key(self.headers.get("Authorization"), server.document):
                    status, answer = 401, {"code": 401, "error_code": "no_authorization", "msg": "not a service key"}
                else:
                    status, answer = auth_admin.delete_user(server.admin_database_url, self.path)
                    if status == 200:
                        server.deleted_users.append(self.path.rsplit("/", 1)[1])
                body = auth_admin.encode(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass
class TokenFactory:
    keys: KeySet
    issuer: str
    hs256_secret: str = HS256_SECRET

    def claims(self, subject: uuid.UUID | str, /, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "authenticated",
            "sub": str(subject),
            "exp": now + 600,
            "iat": now,
            "role": "authenticated",
            "email": "user@example.com",
            "app_metadata": {"provider": "email"},
            "user_metadata": {},
            "is_anonymous": False,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def es256(self, subject: uuid.UUID | str, /, *, kid: str | None = None, **overrides: Any) -> str:
        return jwt.encode(
            self.claims(subject, **overrides),
            self.keys.es256,
            algorithm="ES256",
            headers={"kid": kid or self.keys.es256_kid},
        )

    def rs256(self, subject: uuid.UUID | str, /, **overrides: Any) -> str:
        return jwt.encode(
            self.claims(subject, **overrides), self.keys.rs256, algorithm="RS256", headers={"kid": self.keys.rs256_kid}
        )

    def service_role(self) -> str:
        """A service-role key, as a Supabase project issues one (here ES256 with the test keys)."""
        return self.es256("service-role", role="service_role", aud=None, email=None, exp=int(time.time()) + 86_400)

    def hs256(self, subject: uuid.UUID | str, /, **overrides: Any) -> str:
        return jwt.encode(self.claims(subject, **overrides), self.hs256_secret, algorithm="HS256")

    def raw(self, header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None = None) -> str:
        """A token built by hand: `alg: none` or HMAC with an arbitrary key (for attacks)."""
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(signature)}"
