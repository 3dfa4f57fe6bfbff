"""Account deletion stopped after every step (as a killed worker would stop it) and run again: each
step is done twice, and the erasure still completes, leaving nothing with the tenant's id anywhere.

The deletion job's code runs here, in-process, so that it can be stopped at
exactly each step; tests/py/gateway/account/test_deletion.py runs it in the
real worker (and SIGKILLs that).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from quarry.account.deletion import STEPS
from quarry.db import TenantDatabase
from quarry.services import Core
from quarry.settings import Settings
from quarry.storage.blobs import LocalBlobStore
from tests.py.gateway.drive.conftest import GATEWAY_URL, connect, drive_env
from tests.py.support.admin import Admin
from tests.py.support.api import Api, GatewayFactory, assert_problem, index_count, new_key
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.fake_stripe import FakeStripe
from tests.py.support.google import FakeGoogle
from tests.py.support.mail import SmtpSink
from tests.py.support.seed import SeedDocument, seed_documents
from tests.py.support.sweep import tables_holding
from tests.py.support.tokens import JwksServer, TokenFactory


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even the failure's record)."""


@pytest.fixture
def service_key(jwks_server: JwksServer, database: DatabaseUrls, tokens: TokenFactory) -> Iterator[str]:
    """The local Supabase Auth's Admin API on, in the test database; the service-role key for it."""
    jwks_server.admin_database_url = database.admin_url
    yield tokens.service_role()
    jwks_server.admin_database_url = None


@pytest.fixture
def env(
    database: DatabaseUrls,
    jwks_server: JwksServer,
    data_dir: Path,
    smtp: SmtpSink,
    google: FakeGoogle,
    fake_stripe: FakeStripe,
    service_key: str,
) -> dict[str, str]:
    return gateway_env(
        database,
        jwks_server,
        data_dir,
        **drive_env(google),
        **fake_stripe.gateway_env(),
        SMTP_URL=smtp.url,
        SUPABASE_SERVICE_ROLE_KEY=service_key,
    )


def erase(env: dict[str, str], tenant: uuid.UUID, stop_after: str | None) -> str:
    """Run the deletion job's code once; `stop_after` a step, it stops there as a killed worker would."""

    def stop(step: str) -> None:
        if step == stop_after:
            raise WorkerKilled(step)

    async def run() -> str:
        settings = Settings.from_env(env)
        database = TenantDatabase.connect(settings.tenant_database_url, str(settings.worker_database_url))
        await database.open(wait=True)
        core = Core.build(settings, database)
        try:
            eraser = core.account_eraser()
            eraser.after_step = stop
            return await eraser.run(tenant, None)
        finally:
            await core.billing.aclose()
            await database.close()

    return asyncio.run(run())


def test_a_deletion_stopped_after_each_step_completes_when_run_again(
    make_gateway: GatewayFactory,
    env: dict[str, str],
    admin: Admin,
    tokens: TokenFactory,
    database: DatabaseUrls,
    data_dir: Path,
    google: FakeGoogle,
    fake_stripe: FakeStripe,
    smtp: SmtpSink,
    jwks_server: JwksServer,
) -> None:
    gateway = make_gateway(base_url=GATEWAY_URL, **env)  # Drive's consent cookie is Secure
    blobs = LocalBlobStore(data_dir / "blobs")
    apis = []
    for _ in range(2):
        user = admin.new_user()
        email = str(admin.scalar("select email from auth.users where id = %s", user))
        apis.append(Api(gateway, tokens.es256(user, email=email), user))
        seed_documents(database.admin_url, blobs, user, [SeedDocument("a.txt", b"alpha", "alpha", ["alpha"])])
    owner, other = apis
    email = str(admin.scalar("select email from auth.users where id = %s", owner.tenant_id))
    # What the account accumulates: an upload (its ingest job waits), Drive, Stripe, keys, an export, a query.
    assert owner.upload("queued.txt", b"never processed").status_code == 202
    connect(owner, google)
    refresh_token = next(token for token in google.refresh_tokens if token not in google.revoked)
    checkout = owner.client.post("/api/billing/checkout", headers=owner.headers, json={"plan": "pro"})
    assert checkout.status_code == 200, checkout.text
    session_id = checkout.json()["url"].rsplit("/", 1)[1]
    fake_stripe.complete_checkout(session_id, deliver=False)
    customer = fake_stripe.sessions[session_id]["customer"]
    admin.subscribe(owner.tenant_id, "pro", "active")
    key_id, key = new_key(owner)
    assert (
        owner.get("/api/me").status_code == 200
        and owner.client.get("/api/me", headers={"Authorization": key}).status_code == 200
    )
    export = owner.client.post("/api/export", headers=owner.headers).json()
    archive = data_dir / "blobs" / "exports" / str(owner.tenant_id) / export["id"]
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"PK an archive")
    other_before = admin.documents(other.tenant_id)

    assert_problem(
        owner.client.request("DELETE", "/api/account", headers=owner.headers, json={"confirm": "x@y.z"}), 422
    )
    keyed = owner.client.request("DELETE", "/api/account", headers={"Authorization": key}, json={"confirm": email})
    assert_problem(keyed, 403)
    accepted = owner.client.request("DELETE", "/api/account", headers=owner.headers, json={"confirm": email.upper()})
    assert accepted.status_code == 202, accepted.text
    again = owner.client.request("DELETE", "/api/account", headers=owner.headers, json={"confirm": email})
    assert again.status_code == 202 and again.json()["requested_at"] == accepted.json()["requested_at"]

    # At once: the account is refused everywhere but its deletion's progress; its key is revoked.
    assert_problem(owner.get("/api/me"), 403, "account-deleting")
    assert_problem(owner.client.get("/api/me", headers={"Authorization": key}), 401)
    assert_problem(owner.client.post("/api/export", headers=owner.headers), 403, "account-deleting")
    progress = owner.get("/api/account/deletion").json()
    assert progress["state"] == "queued" and [s["done_at"] for s in progress["steps"]] == [None] * len(STEPS)
    assert other.get("/api/me").status_code == 200

    for step in STEPS:
        with pytest.raises(WorkerKilled):
            erase(env, owner.tenant_id, stop_after=step)
        done = {s["name"]: s["done_at"] for s in owner_progress(owner, admin)}
        assert done.get(step) is None, f"{step} was recorded although the worker died before recording it"
    assert erase(env, owner.tenant_id, stop_after=None) == "erased"
    assert erase(env, owner.tenant_id, stop_after=None) == "nothing"

    assert tables_holding(database.admin_url, owner.tenant_id) == {}, "rows with the tenant's id are left"
    assert {"app.documents", "auth.users"} <= set(tables_holding(database.admin_url, other.tenant_id)), "a blind sweep"
    assert index_count(gateway, owner.tenant_id) == 0
    assert not (data_dir / "blobs" / "documents" / str(owner.tenant_id)).exists()
    assert not (data_dir / "blobs" / "exports" / str(owner.tenant_id)).exists()
    assert customer in fake_stripe.deleted_customers
    assert fake_stripe.subscription_of(customer)["status"] == "canceled"
    assert refresh_token in google.revoked
    assert str(owner.tenant_id) in jwks_server.deleted_users
    receipts = [m for m in smtp.to(email) if "has been deleted" in m.subject]
    assert receipts, "no receipt"
    assert "- 2 documents" in receipts[-1].text and "- 1 API keys" in receipts[-1].text
    assert "Stripe customer record, its subscription cancelled" in receipts[-1].text

    assert_problem(owner.get("/api/me"), 401)
    assert_problem(owner.get("/api/account/deletion"), 401)
    assert_problem(owner.client.get("/api/me", headers={"Authorization": key}), 401)
    assert admin.documents(other.tenant_id) == other_before and other.get("/api/me").status_code == 200
    assert blobs.exists(
        f"documents/{other.tenant_id}/"
        + str(admin.scalar("select id from app.documents where tenant_id = %s", other.tenant_id))
    )
    del key_id


def owner_progress(owner: Api, admin: Admin) -> list[dict[str, Any]]:
    """The steps recorded so far (read as the service: the owner's JWT may already be refused)."""
    row = admin.scalar("select steps from app.account_deletions where tenant_id = %s", owner.tenant_id)
    steps: dict[str, Any] = row if isinstance(row, dict) else {}
    return [{"name": name, "done_at": steps.get(name)} for name in STEPS]


def test_the_deletion_request_announces_every_key_it_revokes_to_every_gateway(
    database: DatabaseUrls, admin: Admin
) -> None:
    """No trigger announces revocations (under Citus none would reach a listener): the request itself
    NOTIFYs quarry_api_keys once per key it revokes, as internal.revoke_api_key does, at its commit."""
    tenant = admin.new_user()
    email = str(admin.scalar("select email from auth.users where id = %s", tenant))
    keys = {
        str(
            admin.scalar(
                "insert into app.api_keys (tenant_id, lookup_id, secret_hash, name, last4)"
                " values (%s, %s, '$2b$10$x', %s, 'abcd') returning id",
                tenant,
                uuid.uuid4().hex[:12],
                f"key {n}",
            )
        )
        for n in range(2)
    }
    with psycopg.connect(database.admin_url, autocommit=True) as listener:
        listener.execute("listen quarry_api_keys")
        with psycopg.connect(database.gateway_url) as gateway:
            gateway.execute("select from internal.request_account_deletion(%s, %s)", (tenant, email))
        heard = {notice.payload for notice in listener.notifies(timeout=10, stop_after=len(keys))}
    assert heard == keys
    admin.execute("delete from procrastinate.procrastinate_jobs where args ->> 'tenant_id' = %s", str(tenant))
    admin.execute("delete from app.account_deletions where tenant_id = %s", tenant)
