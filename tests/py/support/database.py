"""The test database: its URLs, the two session users, and SQL as supabase-js reaches it."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from tests.py.support.tokens import HS256_SECRET, JwksServer

ADMIN_SERVER_URL = os.environ.get("QUARRY_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Under pytest-xdist (`make test-py`) each worker process has a database of its own.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_BASE_DATABASE = os.environ.get("QUARRY_TEST_DATABASE", "quarry_pytest")
TEST_DATABASE = f"{_BASE_DATABASE}_{_XDIST_WORKER}" if _XDIST_WORKER else _BASE_DATABASE
# The Drive token keys of every test process (a fixed test key: test data only).
TEST_DRIVE_TOKEN_KEYS = "test1:" + "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdDE="


@dataclass(frozen=True)
class DatabaseUrls:
    admin_url: str
    gateway_url: str

    @property
    def worker_url(self) -> str:
        return self.gateway_url.replace("quarry_gateway@", "quarry_worker@", 1)

    @property
    def tenant_url(self) -> str:
        """How tenant transactions log in (quarry_authenticator: may only become anon/authenticated)."""
        return self.gateway_url.replace("quarry_gateway@", "quarry_authenticator@", 1)


@dataclass(frozen=True)
class Users:
    alice: uuid.UUID
    bob: uuid.UUID


def gateway_env(database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, **overrides: str) -> dict[str, str]:
    """Settings of every gateway and worker a test starts (in-process or as a subprocess)."""
    env = {
        "QUARRY_ENV": "test",
        "DATABASE_URL": database.gateway_url,
        "TENANT_DATABASE_URL": database.tenant_url,
        "WORKER_DATABASE_URL": database.worker_url,
        "SUPABASE_URL": jwks_server.base_url,
        "SUPABASE_JWT_SECRET": HS256_SECRET,
        "JWKS_MIN_REFETCH_SECONDS": "0",
        "QUARRY_DATA_DIR": str(data_dir),
        "UPLOAD_MAX_BYTES": str(4 * 1024 * 1024),
        "WORKER_HEARTBEAT_SECONDS": "1",
        "STALLED_WORKER_SECONDS": "4",
        "WORKER_CONCURRENCY": "4",
        "DRIVE_TOKEN_KEYS": TEST_DRIVE_TOKEN_KEYS,
        # Race tests send many uploads of one tenant at once to reach SQL together; the cap on
        # uploads in flight has tests of its own (which set the shipped value).
        "UPLOADS_IN_FLIGHT_PER_TENANT": "64",
        # Many test runs share this machine: a worker serves metrics only where a test asks for it.
        "WORKER_METRICS_PORT": "0",
    }
    env.update(overrides)
    return env


def exposed_schema(
    database: DatabaseUrls, tenant: uuid.UUID, statement: str, *params: object
) -> list[dict[str, object]]:
    """Run SQL as supabase-js would reach it: role authenticated, the tenant's claims."""
    with psycopg.connect(database.tenant_url, row_factory=dict_row) as conn, conn.transaction():
        claims = json.dumps({"sub": str(tenant), "role": "authenticated"})
        conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)", (claims,)
        )
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def admin_count(database: DatabaseUrls, sql: str, *params: object) -> int:
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])
