"""Direct database access for tests: what the billing webhook and an operator do."""

from __future__ import annotations

import uuid

import psycopg

from quarry.dev.users import set_plan


class Admin:
    """What the billing webhook and an operator do, straight in the database."""

    def __init__(self, admin_url: str) -> None:
        self.url = admin_url

    def execute(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def scalar(self, sql: str, *params: object) -> object:
        rows = self.execute(sql, *params)
        return rows[0][0] if rows else None

    def new_user(self) -> uuid.UUID:
        user = self.scalar("select tests.create_user(%s)", f"{uuid.uuid4().hex[:12]}@example.com")
        assert isinstance(user, uuid.UUID)
        return user

    def subscribe(self, tenant: uuid.UUID, plan: str, status: str) -> None:
        set_plan(self.url, tenant, plan, status)

    def prefill(self, tenant: uuid.UUID, quota: str, used: int) -> None:
        """Set a counter in the current period, as if `used` had been consumed."""
        self.execute(
            """
            insert into app.usage_counters (tenant_id, quota, period_start, used)
            values (%s, %s, app.quota_period_start(%s, app.clock()), %s)
            on conflict (tenant_id, quota) do update set period_start = excluded.period_start, used = excluded.used
            """,
            tenant,
            quota,
            quota,
            used,
        )

    def used(self, tenant: uuid.UUID, quota: str) -> int:
        value = self.scalar("select used from app.usage_counters where tenant_id = %s and quota = %s", tenant, quota)
        return int(value) if isinstance(value, int) else 0

    def documents(self, tenant: uuid.UUID) -> int:
        count = self.scalar("select count(*) from app.documents where tenant_id = %s", tenant)
        assert isinstance(count, int)
        return count
