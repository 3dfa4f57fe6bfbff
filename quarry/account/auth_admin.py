"""Supabase Auth's Admin API, through the official `supabase` client: the last trace of an account.

Account deletion removes the user with `auth.admin.delete_user` (a hard
delete), authenticated by the project's service-role key
(`SUPABASE_SERVICE_ROLE_KEY`).  A user that is already gone counts as
deleted, so the step can run again after a crash.  `make dev`'s auth server
and the tests' JWKS server answer the same endpoint (`DELETE
/auth/v1/admin/users/{id}`) by deleting the row from `auth.users`, so this
code runs unchanged against them.
"""

from __future__ import annotations

import logging
import uuid

import httpx

from quarry.errors import QuarryError, Unavailable

logger = logging.getLogger("quarry.account")


class AuthAdminUnavailable(Unavailable):
    slug = "auth-unavailable"

    def __init__(self, internal: str) -> None:
        super().__init__("Supabase Auth is unavailable; try again shortly.", internal=internal)


class AuthAdminRefused(QuarryError):
    """Supabase Auth refused the service-role key or the request: a configuration problem."""

    status = 502
    slug = "auth-refused"


class AuthAdmin:
    def __init__(self, supabase_url: str, service_role_key: str | None) -> None:
        self.supabase_url = supabase_url
        self._key = service_role_key

    async def delete_user(self, user_id: uuid.UUID) -> bool:
        """Hard-delete the auth user; False if it was gone already."""
        if self._key is None:
            raise AuthAdminRefused(
                "SUPABASE_SERVICE_ROLE_KEY is not set: the auth user cannot be deleted.",
                internal="no service-role key",
            )
        # Imported here: only the worker's deletions need the client (the gateway never loads it).
        from supabase_auth.errors import AuthApiError, AuthError

        from supabase import AsyncClientOptions, acreate_client

        options = AsyncClientOptions(auto_refresh_token=False, persist_session=False)
        try:
            client = await acreate_client(self.supabase_url, self._key, options=options)
            await client.auth.admin.delete_user(str(user_id))
        except AuthApiError as error:
            if error.status == 404 or error.code == "user_not_found":
                return False
            if error.status >= 500 or error.status == 429:
                raise AuthAdminUnavailable(f"Supabase Auth answered {error.status}") from None
            logger.error("Supabase Auth refused to delete a user (HTTP %s, %s)", error.status, error.code)
            raise AuthAdminRefused(
                f"Supabase Auth refused to delete the user (HTTP {error.status}).", internal=str(error.code)
            ) from None
        except (AuthError, httpx.HTTPError, OSError) as error:
            raise AuthAdminUnavailable(f"Supabase Auth unreachable ({type(error).__name__})") from None
        return True
