"""Shared fixtures: a freshly migrated Postgres database, users, a JWKS server, the gateway, the worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import psycopg
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from quarry.dev.database import prepare_database, run_sql_file, with_database
from quarry.dev.users import set_plan
from quarry.paths import REPO_ROOT
from quarry.settings import Settings
from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory
from tests.py.support.database import ADMIN_SERVER_URL, TEST_DATABASE, DatabaseUrls, Users, gateway_env
from tests.py.support.fake_stripe import FakeStripe
from tests.py.support.google import FakeGoogle
from tests.py.support.mail import SmtpSink
from tests.py.support.processes import running_worker
from tests.py.support.s3 import REGION, moto_server, use_fake_aws
from tests.py.support.tokens import JwksServer, KeySet, TokenFactory


@pytest.fixture(scope="session")
def database() -> DatabaseUrls:
    admin_url = prepare_database(ADMIN_SERVER_URL, TEST_DATABASE, fresh=True)
    run_sql_file(admin_url, str(REPO_ROOT / "tests" / "sql" / "helpers" / "setup.sql"))
    gateway_url = with_database(ADMIN_SERVER_URL.replace("postgres@", "quarry_gateway@", 1), TEST_DATABASE)
    return DatabaseUrls(admin_url=admin_url, gateway_url=gateway_url)


@pytest.fixture(scope="session")
def users(database: DatabaseUrls) -> Users:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        ids = {}
        for name in ("alice", "bob"):
            row = conn.execute("select tests.create_user(%s)", (f"{name}@example.com",)).fetchone()
            assert row is not None
            ids[name] = row[0]
            # The whole suite acts as these two: Enterprise keeps Free's limits out of
            # the way of tests about something else (quota tests make their own users).
            set_plan(database.admin_url, ids[name], "enterprise")
    return Users(**ids)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Blobs and the embedded index of every gateway and worker in this test session."""
    return tmp_path_factory.mktemp("quarry-data")


@pytest.fixture(scope="session")
def keys() -> KeySet:
    return KeySet()


@pytest.fixture(scope="session")
def jwks_server(keys: KeySet) -> Iterator[JwksServer]:
    server = JwksServer(keys.jwks()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    """The local Stripe (tests/py/support/fake_stripe.py) that stripe-python and stripe-node talk to."""
    fake = FakeStripe().serve()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    """The local Google (OAuth and Drive, tests/py/support/google.py), one per module."""
    fake = FakeGoogle().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) keeping what it receives, one per module."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """moto's S3 server with a fresh bucket, and fake AWS credentials: (endpoint, bucket)."""
    with pytest.MonkeyPatch.context() as monkeypatch, moto_server() as url:
        use_fake_aws(monkeypatch, tmp_path_factory.mktemp("aws"))
        bucket = f"quarry-test-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=url, region_name=REGION).create_bucket(Bucket=bucket)
        yield url, bucket


@pytest.fixture
def tokens(keys: KeySet, jwks_server: JwksServer) -> TokenFactory:
    return TokenFactory(keys=keys, issuer=f"{jwks_server.base_url}/auth/v1")


@pytest.fixture
def make_gateway(database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path) -> Iterator[GatewayFactory]:
    """Start a gateway (lifespan included) with test settings, optionally overridden."""
    clients: list[TestClient] = []

    def make(base_url: str = "http://testserver", **overrides: str) -> TestClient:
        """`base_url` https: for a flow with a Secure cookie (Drive's consent, bound to the browser)."""
        settings = Settings.from_env(gateway_env(database, jwks_server, data_dir, **overrides))
        client = TestClient(create_app(settings), base_url=base_url, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> TestClient:
    return make_gateway()


@pytest.fixture(scope="module")
def worker(
    database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The real worker (`python -m worker`) for the module's end-to-end tests."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(gateway_env(database, jwks_server, data_dir), log) as process:
        yield
        assert process.poll() is None, log.read_text()[-5000:]


@pytest.fixture
def alice(gateway: TestClient, tokens: TokenFactory, users: Users) -> Api:
    return Api(gateway, tokens.es256(users.alice, email="alice@example.com"), users.alice)


@pytest.fixture
def bob(gateway: TestClient, tokens: TokenFactory, users: Users) -> Api:
    return Api(gateway, tokens.es256(users.bob, email="bob@example.com"), users.bob)


@pytest.fixture
def admin(database: DatabaseUrls) -> Admin:
    return Admin(database.admin_url)


@pytest.fixture
def clock(admin: Admin) -> Iterator[Callable[[datetime | None], None]]:
    """Move the quota clock (internal.billing_settings.clock_override); back to real time afterwards."""

    def set_clock(at: datetime | None) -> None:
        admin.execute("update internal.billing_settings set clock_override = %s", at)

    yield set_clock
    set_clock(None)
