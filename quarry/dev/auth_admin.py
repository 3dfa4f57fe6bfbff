"""Supabase Auth's Admin endpoint `DELETE /auth/v1/admin/users/{id}`, for development and tests.

The dev auth server and the tests' JWKS server answer it as GoTrue does, so
the worker's deletion step runs the real `supabase` client unchanged: the
bearer must be a service-role JWT signed by one of the server's own keys
(what `SUPABASE_SERVICE_ROLE_KEY` is on a real project), and the user's row
goes from `auth.users` (rows that reference it go by cascade, as on
Supabase).  Dev only: nothing in production imports this.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import jwt
import psycopg

ADMIN_USERS_PATH = re.compile(r"^/auth/v1/admin/users/([0-9a-fA-F-]{36})$")


def is_service_key(authorization: str | None, jwks: dict[str, Any]) -> bool:
    """`Bearer <JWT>` with `role: service_role`, signed by a key of this JWKS."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return False
    token = authorization.split(" ", 1)[1].strip()
    try:
        header = jwt.get_unverified_header(token)
        keys = jwt.PyJWKSet.from_dict(jwks)
        key = next(k for k in keys.keys if k.key_id == header.get("kid"))
        claims = jwt.decode(token, key.key, algorithms=[header["alg"]], options={"verify_aud": False})
    except (jwt.PyJWTError, StopIteration, KeyError):
        return False
    return claims.get("role") == "service_role"


def delete_user(admin_database_url: str, path: str) -> tuple[int, dict[str, Any]]:
    """The status and GoTrue's JSON body for a DELETE of `path`."""
    match = ADMIN_USERS_PATH.match(path)
    if match is None:
        return 404, {"code": 404, "error_code": "not_found", "msg": "Not found"}
    try:
        user_id = uuid.UUID(match.group(1))
    except ValueError:
        return 400, {"code": 400, "error_code": "validation_failed", "msg": "user id must be a UUID"}
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        deleted = conn.execute("delete from auth.users where id = %s returning id", (user_id,)).fetchone()
    if deleted is None:
        return 404, {"code": 404, "error_code": "user_not_found", "msg": "User not found"}
    return 200, {}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
