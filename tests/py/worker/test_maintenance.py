"""Housekeeping jobs run by the real worker: the periodic purge of API keys
revoked more than 30 days ago, in batches, leaving every other key alone and
the audit log's record of the purged ones."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.processes import running_worker, wait_for
from tests.py.support.tokens import JwksServer
from worker.app import procrastinate_app
from worker.maintenance import API_KEY_PURGE_BATCH, PURGE_REVOKED_API_KEYS, PURGE_REVOKED_API_KEYS_CRON

pytestmark = pytest.mark.slow

OLD_REVOKED = API_KEY_PURGE_BATCH + 5  # more than one batch


def insert_keys(admin: Admin, tenant: uuid.UUID, prefix: str, count: int, revoked_days_ago: int | None) -> None:
    admin.execute(
        """
        insert into app.api_keys (tenant_id, lookup_id, secret_hash, name, last4, revoked_at)
        select %s, %s || lpad(n::text, 8, '0'), '$2a$04$placeholder', %s || n, 'abcd',
               now() - make_interval(days => %s)
        from generate_series(1, %s) as n
        """,
        tenant,
        prefix,
        prefix,
        revoked_days_ago,
        count,
    )


async def defer_purge(database: DatabaseUrls) -> int:
    """Queue the purge as procrastinate's periodic deferrer does (its tick's timestamp)."""
    app = procrastinate_app(database.worker_url)
    async with app.open_async():
        job_id: int = await app.configure_task(PURGE_REVOKED_API_KEYS).defer_async(timestamp=int(time.time()))
    return job_id


def test_the_purge_is_periodic() -> None:
    app = procrastinate_app("postgresql://unused")
    crons = {task.task.name: task.cron for task in app.periodic_registry.periodic_tasks.values()}
    assert crons[PURGE_REVOKED_API_KEYS] == PURGE_REVOKED_API_KEYS_CRON


def test_the_worker_purges_only_keys_revoked_more_than_30_days_ago(
    database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, tmp_path: Path, admin: Admin
) -> None:
    tenant = admin.new_user()
    insert_keys(admin, tenant, "old0", OLD_REVOKED, revoked_days_ago=31)
    insert_keys(admin, tenant, "new0", 3, revoked_days_ago=29)
    admin.execute(
        "insert into app.api_keys (tenant_id, lookup_id, secret_hash, name, last4)"
        " values (%s, 'active000001', '$2a$04$placeholder', 'active', 'abcd')",
        tenant,
    )

    job_id = asyncio.run(defer_purge(database))
    log = tmp_path / "worker.log"
    with running_worker(gateway_env(database, jwks_server, data_dir), log):

        def finished() -> bool:
            status = admin.scalar("select status::text from procrastinate.procrastinate_jobs where id = %s", job_id)
            assert status not in ("failed", "aborted"), log.read_text()[-3000:]
            return status == "succeeded"

        wait_for(finished, timeout=120, message="the purge job to run")

    remaining = admin.execute("select name from app.api_keys where tenant_id = %s order by name", tenant)
    assert [row[0] for row in remaining] == ["active", "new01", "new02", "new03"]
    purged_in_audit = admin.scalar(
        "select count(*) from app.audit_log where tenant_id = %s and action = 'api_key.deleted'"
        " and actor_type = 'system' and details ->> 'name' like 'old0%%'",
        tenant,
    )
    assert purged_in_audit == OLD_REVOKED
    assert "API key(s) revoked more than 30 days ago" in log.read_text()
