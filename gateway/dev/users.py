"""Dev users in the shim's auth.users (Supabase Auth would create them)."""

from __future__ import annotations

import uuid

import psycopg


def ensure_user(admin_url: str, email: str) -> uuid.UUID:
    """The id of the auth.users row for email, creating it if needed."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            """
            insert into auth.users (id, aud, role, email, email_confirmed_at, raw_app_meta_data,
                                    raw_user_meta_data, created_at, updated_at)
            values (%(id)s, 'authenticated', 'authenticated', %(email)s, now(),
                    '{"provider": "email", "providers": ["email"]}', '{}', now(), now())
            on conflict (email) where is_sso_user = false do nothing
            """,
            {"id": uuid.uuid4(), "email": email},
        )
        row = conn.execute("select id from auth.users where email = %s and not is_sso_user", (email,)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))
