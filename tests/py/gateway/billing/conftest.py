"""Fixtures for plan and quota tests: fresh Free users, subscriptions, the quota clock."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.py.conftest import DatabaseUrls, GatewayFactory
from tests.py.gateway.documents.conftest import Api
from tests.py.support.tokens import TokenFactory


class Admin:
    """What the billing webhook and an operator do, straight in the database."""

    def __init__(self, database: DatabaseUrls) -> None:
        self.url = database.admin_url

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
        self.execute(
            """
            insert into app.subscriptions (tenant_id, plan_id, status) values (%s, %s, %s)
            on conflict (tenant_id) do update set plan_id = excluded.plan_id, status = excluded.status
            """,
            tenant,
            plan,
            status,
        )

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


@pytest.fixture
def admin(database: DatabaseUrls) -> Admin:
    return Admin(database)


@pytest.fixture
def clock(admin: Admin) -> Iterator[Callable[[datetime | None], None]]:
    """Move the quota clock (internal.billing_settings.clock_override); back to real time afterwards."""

    def set_clock(at: datetime | None) -> None:
        admin.execute("update internal.billing_settings set clock_override = %s", at)

    yield set_clock
    set_clock(None)


@pytest.fixture
def free_user(admin: Admin, make_gateway: GatewayFactory, tokens: TokenFactory) -> Api:
    """A new user with no subscription (Free), on a gateway of its own."""
    client: TestClient = make_gateway()
    tenant = admin.new_user()
    return Api(client, tokens.es256(tenant), tenant)
