"""Exports through the gateway, built by the export job's code in this process (no worker: the job
itself runs end to end in tests/py/gateway/account/test_deletion.py).

The archive round trip (local store, served by the gateway to its owner),
S3 (moto's server: multipart upload, presigned links with the configured
expiry, expiry), the plan's frequency, one export at a time, a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3  # type: ignore[import-untyped]
import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from quarry.db import TenantDatabase, TenantSession
from quarry.exports.build import ExportBuilder, expire_exports
from quarry.exports.service import ExportService
from quarry.exports.storage import MIN_PART_BYTES, ArchiveStore, LocalArchiveStore, S3ArchiveStore, export_key
from quarry.mail import mailer_for
from quarry.settings import Settings
from quarry.storage.blobs import LocalBlobStore
from tests.py.gateway.drive.conftest import GATEWAY_URL, connect, drive_env
from tests.py.support.admin import Admin
from tests.py.support.api import FIXTURES, Api, GatewayFactory, assert_problem, new_key
from tests.py.support.archives import everything, open_archive, rows, verified_manifest
from tests.py.support.database import DatabaseUrls, exposed_schema, gateway_env
from tests.py.support.google import FakeGoogle
from tests.py.support.mail import SmtpSink
from tests.py.support.s3 import REGION
from tests.py.support.seed import SeedDocument, seed_documents
from tests.py.support.tokens import JwksServer, TokenFactory

WEBHOOK_SECRET = "whsec_quarry_fake"  # the local Stripe's signing secret: never in an archive


@pytest.fixture(scope="module", autouse=True)
def no_jobs_left(database: DatabaseUrls) -> Iterator[None]:
    """Nothing runs the build jobs the requests here defer (they run in-process): drop them after."""
    yield
    Admin(database.admin_url).execute(
        "delete from procrastinate.procrastinate_jobs where task_name = 'exports:build' and status = 'todo'"
    )


@pytest.fixture
def env(
    database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, smtp: SmtpSink, google: FakeGoogle
) -> dict[str, str]:
    return gateway_env(database, jwks_server, data_dir, **drive_env(google), SMTP_URL=smtp.url)


def tenant(admin: Admin, client: TestClient, tokens: TokenFactory, plan: str = "pro") -> Api:
    user = admin.new_user()
    if plan != "free":
        admin.subscribe(user, plan, "active")
    email = admin.scalar("select email from auth.users where id = %s", user)
    return Api(client, tokens.es256(user, email=email), user)


def build(env: dict[str, str], api: Api, export_id: str, store: ArchiveStore | None = None, **overrides: str) -> str:
    """What the worker's `exports:build` job does, here."""
    settings = Settings.from_env({**env, **overrides})

    async def run() -> str:
        database = TenantDatabase.connect(settings.tenant_database_url, str(settings.worker_database_url))
        await database.open(wait=True)
        try:
            builder = builder_for(settings, store)
            session = TenantSession.for_job(database, api.tenant_id, task="exports:build", job_id=None)
            return await builder.build(session, uuid.UUID(export_id))
        finally:
            await database.close()

    return asyncio.run(run())


def builder_for(settings: Settings, store: ArchiveStore | None) -> ExportBuilder:
    archives = store or LocalArchiveStore(settings.blob_dir)
    return ExportBuilder(
        ExportService(settings.exports, archives), LocalBlobStore(settings.blob_dir), mailer_for(settings.mail)
    )


def request(api: Api) -> dict[str, Any]:
    response = api.client.post("/api/export", headers=api.headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "queued" and response.headers["location"] == f"/api/export/{body['id']}"
    return body


def export_of(api: Api, export_id: str) -> dict[str, Any]:
    response = api.get(f"/api/export/{export_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the round trip ------------------------------------------------------------------------------------------


def test_the_archive_holds_everything_of_the_tenant_and_nothing_else(
    make_gateway: GatewayFactory,
    env: dict[str, str],
    admin: Admin,
    tokens: TokenFactory,
    database: DatabaseUrls,
    data_dir: Path,
    google: FakeGoogle,
    smtp: SmtpSink,
) -> None:
    gateway = make_gateway(base_url=GATEWAY_URL, **env)  # Drive's consent cookie is Secure
    owner, other = tenant(admin, gateway, tokens), tenant(admin, gateway, tokens)
    blobs = LocalBlobStore(data_dir / "blobs")
    pdf = (FIXTURES / "sample.pdf").read_bytes()
    long_text = "".join(
        f'Paragraph {n}: the quarry\'s long ledger « ünïcode » "quoted" \\ back.\n' for n in range(40_000)
    )
    documents = [
        SeedDocument("notes.txt", b"Granite notes\n", "Granite notes", ["Granite notes"]),
        SeedDocument("report.pdf", pdf, "The report's text.", ["The report's", "text."], mime_type="application/pdf"),
        SeedDocument("Design doc", b"Drive doc bytes", "The Drive doc.", ["The Drive doc."], source="drive"),
        SeedDocument("ledger.txt", long_text.encode(), long_text, [long_text[:500], long_text[500:1000]]),
    ]
    lost = SeedDocument("lost.txt", b"gone", "The stored file went missing.", ["The stored file went missing."])
    seeded = seed_documents(database.admin_url, blobs, owner.tenant_id, [*documents, lost])
    blobs.delete(f"documents/{owner.tenant_id}/{lost.id}")  # the archive says so instead of failing
    canary = f"zebra-canary-{uuid.uuid4().hex}"
    seed_documents(
        database.admin_url, blobs, other.tenant_id, [SeedDocument("c.txt", canary.encode(), canary, [canary])]
    )
    connect(owner, google)
    refresh_token = next(iter(google.refresh_tokens))  # the token Google issued to this connection
    folder = google.folder("Exported")
    assert (
        owner.client.post("/api/drive/configs", headers=owner.headers, json={"folder_id": folder.id}).status_code == 201
    )
    key_id, key = new_key(owner, "exported key")
    assert (
        owner.client.post("/api/query", headers=owner.headers, json={"query": "granite", "mode": "sparse"}).status_code
        == 200
    )
    admin.execute(
        "insert into app.billing_customers (tenant_id, stripe_customer_id) values (%s, 'cus_exported1')",
        owner.tenant_id,
    )

    export = request(owner)
    assert build(env, owner, export["id"]) == "ready"

    ready = export_of(owner, export["id"])
    assert ready["status"] == "ready" and ready["size_bytes"] > len(pdf)
    assert ready["counts"]["documents.json"] == 5 and ready["counts"]["chunks.json"] == 7
    assert ready["counts"]["originals"] == 4 and ready["progress"] == {}
    expires_at = datetime.fromisoformat(ready["expires_at"])
    assert timedelta(days=6, hours=23) < expires_at - datetime.now(UTC) <= timedelta(days=7)
    link = ready["download_url"]
    assert link == f"http://127.0.0.1:8000/api/export/{export['id']}/download"
    mail = smtp.wait_for(str(admin.scalar("select email from auth.users where id = %s", owner.tenant_id)), "is ready")
    assert link in mail.text and "5 documents" in mail.text

    # Served by the gateway to its owner only (JWT or the owner's key), as an attachment.
    path = urlsplit(link).path
    downloaded = owner.get(path)
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.headers["content-type"] == "application/zip"
    assert downloaded.headers["content-disposition"].startswith('attachment; filename="quarry-export-')
    assert owner.client.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert_problem(other.get(path), 404)
    assert_problem(owner.client.get(path), 401)

    archive = open_archive(downloaded.content)
    manifest = verified_manifest(archive)
    assert manifest["export_id"] == export["id"] and manifest["originals"]["missing"] == [str(lost.id)]
    by_id = {row["id"]: row for row in rows(archive, "documents.json")}
    assert sorted(by_id) == sorted(str(d) for d in seeded)
    assert by_id[str(lost.id)]["content"] == lost.text and by_id[str(lost.id)]["original"] not in archive.namelist()
    for document in documents:
        row = by_id[str(document.id)]
        assert row["content"] == document.text and row["title"] == document.title and row["source"] == document.source
        original = archive.read(row["original"])
        assert original == document.original and hashlib.sha256(original).hexdigest() == row["sha256"]
    chunks = rows(archive, "chunks.json")
    assert sorted((c["document_id"], c["ordinal"], c["text"]) for c in chunks) == sorted(
        (str(d.id), n, text) for d in [*documents, lost] for n, text in enumerate(d.chunks)
    )
    assert {"text", "position", "document_id"} <= set(chunks[0]) and "dense" not in chunks[0]
    assert [c["google_folder_id"] for c in rows(archive, "drive_configs.json")] == [folder.id]
    assert rows(archive, "drive_connection.json")[0]["status"] == "active"
    assert [k["id"] for k in rows(archive, "api_keys.json")] == [str(key_id)]
    assert [q["query"] for q in rows(archive, "query_log.json")] == ["granite"]
    subscription = rows(archive, "subscription.json")[0]
    assert subscription["plan"] == "pro" and subscription["stripe_customer_id"] == "cus_exported1"
    assert {u["limit_name"] for u in rows(archive, "usage.json")} >= {"documents_per_month", "exports"}
    assert "export.requested" in {a["action"] for a in rows(archive, "audit_log.json")}
    assert [e["id"] for e in rows(archive, "exports.json")] == [export["id"]]

    contents = everything(archive)
    secret_hash = str(admin.scalar("select secret_hash from app.api_keys where id = %s", key_id))
    stored = admin.scalar("select token_ciphertext from app.drive_connections where tenant_id = %s", owner.tenant_id)
    assert isinstance(stored, bytes)
    ciphertext = stored
    for secret in (
        refresh_token,
        key,
        key.rsplit("_", 1)[1],
        secret_hash,
        WEBHOOK_SECRET,
        canary,
        str(other.tenant_id),
    ):
        assert secret.encode() not in contents, "a secret or another tenant's data is in the archive"
    assert ciphertext not in contents and ciphertext.hex().encode() not in contents


# --- S3: multipart, presigned links, expiry ---------------------------------------------------------------------


def test_s3_archive_is_a_multipart_upload_with_a_presigned_attachment_link_that_expires(
    make_gateway: GatewayFactory,
    env: dict[str, str],
    admin: Admin,
    tokens: TokenFactory,
    database: DatabaseUrls,
    data_dir: Path,
    s3: tuple[str, str],
    smtp: SmtpSink,
    clock: Any,
) -> None:
    endpoint, bucket = s3
    s3_env = {**env, "EXPORT_S3_BUCKET": bucket, "S3_ENDPOINT_URL": endpoint, "EXPORT_LINK_EXPIRY_DAYS": "3"}
    gateway = make_gateway(**s3_env)
    owner = tenant(admin, gateway, tokens)
    noise = os.urandom(7 * 1024 * 1024)  # stored as it is (a PDF): an archive of two 5 MiB parts
    seed_documents(
        database.admin_url,
        LocalBlobStore(data_dir / "blobs"),
        owner.tenant_id,
        [SeedDocument("noise.pdf", noise, "noise", ["noise"], mime_type="application/pdf")],
    )
    store = S3ArchiveStore(bucket, endpoint_url=endpoint, region=REGION, part_bytes=MIN_PART_BYTES)
    export = request(owner)
    assert build(s3_env, owner, export["id"], store=store) == "ready"

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    key = export_key(owner.tenant_id, export["id"])
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-2"), "a multipart upload of two parts"

    email = str(admin.scalar("select email from auth.users where id = %s", owner.tenant_id))
    emailed = next(line for line in smtp.wait_for(email, "is ready").text.splitlines() if line.startswith("http"))
    query = parse_qs(urlsplit(emailed).query)
    assert query["X-Amz-Expires"] == [str(3 * 86_400)], "the emailed link lasts EXPORT_LINK_EXPIRY_DAYS"
    assert query["response-content-disposition"][0].startswith("attachment;")
    fetched = httpx.get(emailed)
    assert fetched.status_code == 200 and fetched.headers["content-disposition"].startswith("attachment;")
    archive = open_archive(fetched.content)
    assert archive.read(rows(archive, "documents.json")[0]["original"]) == noise

    current = export_of(owner, export["id"])
    link_expiry = int(parse_qs(urlsplit(current["download_url"]).query)["X-Amz-Expires"][0])
    assert 3 * 86_400 - 120 < link_expiry <= 3 * 86_400, "a link handed out later never outlives the export"
    redirect = owner.client.get(f"/api/export/{export['id']}/download", headers=owner.headers, follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"].startswith(endpoint)

    # Past its expiry (the test clock): it reads as expired at once, and the periodic job deletes the object.
    clock(datetime.now(UTC) + timedelta(days=3, minutes=1))
    expired = export_of(owner, export["id"])
    assert (expired["status"], expired["download_url"]) == ("expired", None)
    assert_problem(owner.get(f"/api/export/{export['id']}/download"), 409, "export-not-ready")

    async def expire() -> int:
        worker_db = TenantDatabase.connect(database.tenant_url, database.worker_url)
        await worker_db.open(wait=True)
        try:
            return await expire_exports(worker_db, store)
        finally:
            await worker_db.close()

    assert asyncio.run(expire()) >= 1
    assert admin.scalar("select status::text from app.export_requests where id = %s", export["id"]) == "expired"
    with pytest.raises(client.exceptions.ClientError):
        client.head_object(Bucket=bucket, Key=key)


# --- frequency, one at a time, failures ------------------------------------------------------------------------


def test_free_gets_one_export_a_month_and_one_at_a_time(
    make_gateway: GatewayFactory, env: dict[str, str], admin: Admin, tokens: TokenFactory, smtp: SmtpSink
) -> None:
    free = tenant(admin, make_gateway(**env), tokens, plan="free")
    first = request(free)
    busy = assert_problem(free.client.post("/api/export", headers=free.headers), 409, "export-in-progress")
    assert (busy["export_id"], busy["export_status"]) == (first["id"], "queued")
    assert build(env, free, first["id"]) == "ready"

    refused = assert_problem(free.client.post("/api/export", headers=free.headers), 402, "quota-exceeded")
    assert refused["limit"] == "exports" and refused["plan"] == "free"
    next_allowed = datetime.fromisoformat(refused["resets_at"].replace("Z", "+00:00"))
    assert timedelta(days=27) < next_allowed - datetime.now(UTC) < timedelta(days=32)
    listed = free.get("/api/export").json()["data"]
    assert [e["id"] for e in listed] == [first["id"]]


def test_a_failed_export_says_why_is_mailed_and_costs_nothing(
    make_gateway: GatewayFactory, env: dict[str, str], admin: Admin, tokens: TokenFactory, smtp: SmtpSink
) -> None:
    free = tenant(admin, make_gateway(**env), tokens, plan="free")
    export = request(free)
    settings = Settings.from_env(env)

    async def fail() -> None:
        database = TenantDatabase.connect(settings.tenant_database_url, str(settings.worker_database_url))
        await database.open(wait=True)
        try:
            session = TenantSession.for_job(database, free.tenant_id, task="exports:build", job_id=None)
            await builder_for(settings, None).fail(session, uuid.UUID(export["id"]), "Storage was unavailable.")
        finally:
            await database.close()

    asyncio.run(fail())
    failed = export_of(free, export["id"])
    assert (failed["status"], failed["error"], failed["download_url"]) == ("failed", "Storage was unavailable.", None)
    email = str(admin.scalar("select email from auth.users where id = %s", free.tenant_id))
    assert "Storage was unavailable." in smtp.wait_for(email, "failed").text
    request(free)  # the failed one gave its place in the month back


def test_enterprise_is_not_limited_and_concurrent_requests_make_one_export(
    make_gateway: GatewayFactory, env: dict[str, str], admin: Admin, tokens: TokenFactory, database: DatabaseUrls
) -> None:
    enterprise = tenant(admin, make_gateway(**env), tokens, plan="enterprise")

    def through_supabase_js(_: int) -> str:
        try:
            exposed_schema(database, enterprise.tenant_id, "select id from api.request_export()")
        except psycopg.Error as error:
            try:
                return str(json.loads(error.diag.message_primary or "").get("code"))
            except ValueError:
                return f"{error.sqlstate}: {error}"  # unexpected: the failure shows it
        return "created"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(through_supabase_js, range(8)))
    assert outcomes == ["created"] + ["export-in-progress"] * 7
    (running,) = enterprise.get("/api/export").json()["data"]
    assert build(env, enterprise, running["id"]) == "ready"
    second = request(enterprise)
    assert build(env, enterprise, second["id"]) == "ready"
    assert len(enterprise.get("/api/export").json()["data"]) == 2
