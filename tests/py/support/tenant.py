"""Acting as a tenant on a plain (sync) psycopg connection, with the settings
quarry.db.request_settings makes, as the gateway and PostgREST do."""

from __future__ import annotations

import uuid

import psycopg

from quarry.db import request_settings, set_local


def act_as(conn: psycopg.Connection[object], tenant: uuid.UUID) -> None:
    """Inside the connection's transaction: role authenticated, the tenant's claims."""
    settings = request_settings(
        {"sub": str(tenant), "aud": "authenticated"}, role="authenticated", method="POST", path="/", headers=None
    )
    conn.execute(set_local(settings))
