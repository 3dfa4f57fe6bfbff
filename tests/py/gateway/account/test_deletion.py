"""Export, then account deletion, end to end with the real worker (`python -m worker`).

A tenant with uploads, Drive documents (synced from the local Google), an
API key, a query, a subscription and a Stripe customer exports its data
through the worker to S3 (moto's server) and checks the archive (the build
job shows in the worker's /metrics and in ops.job_durations); then it
deletes its account, the worker is SIGKILLed in the middle of a step, a new
worker finishes the job, and a catalog-driven sweep finds nothing of the
tenant anywhere: no row in any table of any schema (the queue and the
outbox included), no point in the index, no stored file, no Stripe
customer, no Google token; the deletion job shows in the second worker's
/metrics.  Another tenant is untouched throughout.
"""

from __future__ import annotations

import hashlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from tests.py.gateway.drive.conftest import GATEWAY_URL, connect, drive_env
from tests.py.gateway.drive.test_sync import run_sync, wait_ready
from tests.py.support.admin import Admin
from tests.py.support.api import FIXTURES, Api, GatewayFactory, assert_problem, index_count, new_key
from tests.py.support.archives import everything, open_archive, rows, verified_manifest
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.fake_stripe import FakeStripe
from tests.py.support.google import FakeGoogle
from tests.py.support.mail import SmtpSink
from tests.py.support.net import free_port
from tests.py.support.processes import running_worker, wait_for
from tests.py.support.prometheus import samples, value
from tests.py.support.s3 import REGION
from tests.py.support.sweep import tables_holding
from tests.py.support.tokens import JwksServer, KeySet, TokenFactory

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def env(
    database: DatabaseUrls,
    jwks_server: JwksServer,
    keys: KeySet,
    data_dir: Path,
    smtp: SmtpSink,
    google: FakeGoogle,
    fake_stripe: FakeStripe,
    s3: tuple[str, str],
) -> Iterator[dict[str, str]]:
    """Every process's settings: the local Google, Stripe, SMTP, S3 (moto) and Supabase Auth's Admin API."""
    jwks_server.admin_database_url = database.admin_url
    service_key = TokenFactory(keys=keys, issuer=f"{jwks_server.base_url}/auth/v1").service_role()
    yield gateway_env(
        database,
        jwks_server,
        data_dir,
        **drive_env(google),
        **fake_stripe.gateway_env(),
        SMTP_URL=smtp.url,
        EXPORT_S3_BUCKET=s3[1],
        S3_ENDPOINT_URL=s3[0],
        SUPABASE_SERVICE_ROLE_KEY=service_key,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    jwks_server.admin_database_url = None


def user(admin: Admin, gateway: object, tokens: TokenFactory, plan: str = "pro") -> tuple[Api, str]:
    tenant = admin.new_user()
    admin.subscribe(tenant, plan, "active")
    email = str(admin.scalar("select email from auth.users where id = %s", tenant))
    return Api(gateway, tokens.es256(tenant, email=email), tenant), email  # type: ignore[arg-type]


def test_export_then_delete_the_account_with_a_worker_killed_mid_step(
    make_gateway: GatewayFactory,
    env: dict[str, str],
    admin: Admin,
    tokens: TokenFactory,
    database: DatabaseUrls,
    data_dir: Path,
    google: FakeGoogle,
    fake_stripe: FakeStripe,
    smtp: SmtpSink,
    s3: tuple[str, str],
    tmp_path: Path,
) -> None:
    gateway = make_gateway(base_url=GATEWAY_URL, **env)  # Drive's consent cookie is Secure
    owner, email = user(admin, gateway, tokens)
    other, _ = user(admin, gateway, tokens)
    canary = f"zebra canary {uuid.uuid4().hex}"
    uploads = {
        "notes.txt": b"Granite and basalt: the quarry's notes.\n",
        "sample.pdf": (FIXTURES / "sample.pdf").read_bytes(),
    }
    first_metrics, second_metrics = free_port(), free_port()
    with running_worker({**env, "WORKER_METRICS_PORT": str(first_metrics)}, tmp_path / "worker-1.log") as first:
        ids = [owner.upload(name, data).json()["id"] for name, data in uploads.items()]
        other.upload("canary.txt", canary.encode())
        connect(owner, google)
        refresh_token = next(token for token in google.refresh_tokens if token not in google.revoked)
        folder = google.folder("Exported folder")
        google.add("drive-one.txt", "text/plain", folder.id, b"The first Drive file, about marble.")
        google.add("drive-two.txt", "text/plain", folder.id, b"The second Drive file, about slate.")
        config = owner.client.post("/api/drive/configs", headers=owner.headers, json={"folder_id": folder.id}).json()
        assert run_sync(owner, config["id"])["state"] == "succeeded"
        wait_ready(admin, owner.tenant_id, timeout=300)
        wait_ready(admin, other.tenant_id, timeout=300)
        assert {owner.get(f"/api/documents/{i}").json()["status"] for i in ids} == {"ready"}
        key_id, key = new_key(owner, "to be erased")
        assert (
            owner.client.post(
                "/api/query", headers=owner.headers, json={"query": "marble", "mode": "sparse"}
            ).status_code
            == 200
        )
        checkout = owner.client.post("/api/billing/checkout", headers=owner.headers, json={"plan": "pro"}).json()
        session_id = checkout["url"].rsplit("/", 1)[1]
        fake_stripe.complete_checkout(session_id, deliver=False)
        customer = fake_stripe.sessions[session_id]["customer"]
        wait_for(lambda: index_count(gateway, owner.tenant_id) > 0, timeout=60, message="the owner's points")
        other_points = index_count(gateway, other.tenant_id)
        assert other_points > 0

        # The export: the worker builds it into S3 and mails the link.
        export = owner.client.post("/api/export", headers=owner.headers).json()
        wait_for(
            lambda: owner.get(f"/api/export/{export['id']}").json()["status"] == "ready",
            timeout=300,
            message="the export",
        )
        link = next(line for line in smtp.wait_for(email, "is ready").text.splitlines() if line.startswith("http"))
        archive = open_archive(httpx.get(link).content)
        verified_manifest(archive)
        documents = rows(archive, "documents.json")
        assert len(documents) == 4 == admin.documents(owner.tenant_id)
        chunks = admin.scalar("select count(*) from app.chunks where tenant_id = %s", owner.tenant_id)
        assert len(rows(archive, "chunks.json")) == chunks
        originals = {row["title"]: archive.read(row["original"]) for row in documents}
        assert {name: originals[name] for name in uploads} == uploads
        assert hashlib.sha256(originals["drive-one.txt"]).hexdigest() == next(
            row["sha256"] for row in documents if row["title"] == "drive-one.txt"
        )
        assert "marble" in next(row["content"] for row in documents if row["title"] == "drive-one.txt")
        contents = everything(archive)
        for secret in (refresh_token, key, fake_stripe.webhook_secret, canary):
            assert secret.encode() not in contents
        # The build job, as operators see it: the worker's job metrics (the ops middleware) and ops.job_durations.
        wait_for(
            lambda: bool(admin.scalar("select runs from ops.job_durations where task_name = 'exports:build'")),
            timeout=60,
            message="the export job's run in ops.job_durations",
        )
        scrape = samples(httpx.get(f"http://127.0.0.1:{first_metrics}/metrics", timeout=10).text)
        build = {"task": "exports:build", "queue": "exports", "outcome": "succeeded"}
        assert value(scrape, "quarry_jobs_total", **build) == 1
        assert value(scrape, "quarry_job_duration_seconds_count", **build) == 1

        # The deletion: blocked at once, then the worker is killed while Google is revoking the token.
        google.revoke_delay = 30
        accepted = owner.client.request("DELETE", "/api/account", headers=owner.headers, json={"confirm": email})
        assert accepted.status_code == 202, accepted.text
        assert_problem(owner.get("/api/documents"), 403, "account-deleting")

        def revoking() -> bool:
            done = owner.get("/api/account/deletion").json()["steps"]
            return done[0]["done_at"] is not None and google.count("POST", "/revoke") > 0

        wait_for(revoking, timeout=120, message="the deletion to reach Google")
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert [s["name"] for s in owner.get("/api/account/deletion").json()["steps"] if s["done_at"]] == ["inventory"]
    google.revoke_delay = 0
    with running_worker({**env, "WORKER_METRICS_PORT": str(second_metrics)}, tmp_path / "worker-2.log"):
        wait_for(lambda: owner.get("/api/account/deletion").status_code == 401, timeout=300, message="the erasure")
        deletion = {"task": "account:delete", "queue": "account"}

        def deletion_counted() -> float:
            scrape = samples(httpx.get(f"http://127.0.0.1:{second_metrics}/metrics", timeout=10).text)
            return value(scrape, "quarry_jobs_total", **deletion, outcome="succeeded")

        wait_for(lambda: deletion_counted() == 1, timeout=30, message="the deletion job in the worker's metrics")
    assert int(str(admin.scalar("select runs from ops.job_durations where task_name = 'account:delete'"))) >= 1

    assert tables_holding(database.admin_url, owner.tenant_id) == {}, "rows with the tenant's id are left"
    assert index_count(gateway, owner.tenant_id) == 0
    assert not (data_dir / "blobs" / "documents" / str(owner.tenant_id)).exists()
    listed = boto3.client("s3", endpoint_url=s3[0], region_name=REGION).list_objects_v2(Bucket=s3[1])
    assert [item["Key"] for item in listed.get("Contents", [])] == [], "the export's archive is left in S3"
    assert customer in fake_stripe.deleted_customers
    assert refresh_token in google.revoked
    assert smtp.wait_for(email, "has been deleted").text.count("- 4 documents") == 1
    assert_problem(owner.client.get("/api/me", headers={"Authorization": key}), 401)
    # The other tenant: untouched.
    assert index_count(gateway, other.tenant_id) == other_points
    assert other.get("/api/documents").json()["data"][0]["title"] == "canary.txt"
    del key_id
