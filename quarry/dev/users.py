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


PLANS = ("free", "pro", "enterprise")
SUBSCRIPTION_STATUSES = (
    "active", "trialing", "past_due", "canceled", "unpaid", "incomplete", "incomplete_expired", "paused",
)  # fmt: skip


def set_plan(admin_url: str, user_id: uuid.UUID, plan: str, status: str = "active") -> None:
    """Write the user's subscription as the billing webhook would; `free` removes it."""
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {', '.join(PLANS)}, not {plan!r}")
    if status not in SUBSCRIPTION_STATUSES:
        raise ValueError(f"status must be one of {', '.join(SUBSCRIPTION_STATUSES)}, not {status!r}")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if plan == "free":
            conn.execute("delete from app.subscriptions where tenant_id = %s", (user_id,))
            return
        conn.execute(
            """
            insert into app.subscriptions (tenant_id, plan_id, status) values (%s, %s, %s)
            on conflict (tenant_id) do update set plan_id = excluded.plan_id, status = excluded.status
            """,
            (user_id, plan, status),
        )
