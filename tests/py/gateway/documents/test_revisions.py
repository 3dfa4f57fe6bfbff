"""A new version of an imported document (a Drive file modified in Drive) is ingested again in place.

The document keeps its id; its old chunks answer searches until the new ones
are stored, which replaces them in one transaction (the index follows through
the outbox); the replaced file is deleted by the purge; a new version that
cannot be processed fails the document and takes the old content out of the
index.  The real worker ingests; it is paused (SIGSTOP) to look at the moment
between the new version's arrival and its ingestion.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient

from quarry.db import TenantSession
from quarry.documents.service import Revised
from quarry.drive.sync import DriveDownload
from quarry.errors import NotFound
from tests.py.support.admin import Admin
from tests.py.support.api import FIXTURES, Api, blob_exists, index_count, pro_user
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.processes import running_worker, wait_for
from tests.py.support.tokens import JwksServer, TokenFactory
from worker.app import procrastinate_app
from worker.maintenance import PURGE_BLOBS

pytestmark = [pytest.mark.slow]

T = TypeVar("T")


@pytest.fixture(scope="module")
def worker_process(
    database: DatabaseUrls, jwks_server: JwksServer, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path_factory.mktemp("revisions-worker") / "worker.log"
    with running_worker(gateway_env(database, jwks_server, data_dir), log) as process:
        yield process
        assert process.poll() is None, log.read_text()[-5000:]


@pytest.fixture
def tenant(admin: Admin, gateway: TestClient, tokens: TokenFactory) -> Api:
    return pro_user(admin, gateway, tokens)


def in_gateway(api: Api, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run a core coroutine on the gateway's own event loop (its database pool lives there)."""
    portal = api.client.portal
    assert portal is not None
    return portal.call(functools.partial(call, *args, **kwargs))


def session(api: Api) -> TenantSession:
    core = api.client.app.state.core  # type: ignore[attr-defined]
    return TenantSession.for_job(core.database, api.tenant_id, task="test", job_id=None)


def import_file(api: Api, content: bytes, name: str = "notes.txt") -> dict[str, Any]:
    """A Drive-imported document, through the importer's flow (DocumentService.create, origin drive), ready."""
    documents = api.client.app.state.core.documents  # type: ignore[attr-defined]
    created = in_gateway(api, documents.create, session(api), DriveDownload(content, name, name), origin="drive")
    document = api.wait_until_done(str(created.value.id))
    assert document["status"] == "ready", document
    return document


def revise(api: Api, document_id: str, content: bytes, name: str = "notes.txt") -> Revised:
    documents = api.client.app.state.core.documents  # type: ignore[attr-defined]
    revised: Revised = in_gateway(
        api, documents.revise, session(api), uuid.UUID(document_id), DriveDownload(content, name, name)
    )
    return revised


def found(api: Api, text: str) -> list[str]:
    response = api.client.post("/api/query", headers=api.headers, json={"query": text, "mode": "sparse"})
    assert response.status_code == 200, response.text
    return [result["document"]["id"] for result in response.json()["results"]]


def chunk_ids(admin: Admin, document_id: str) -> list[uuid.UUID]:
    rows = admin.execute("select id from app.chunks where document_id = %s order by ordinal", document_id)
    return [uuid.UUID(str(row[0])) for row in rows]


def revision_of(admin: Admin, document_id: str) -> object:
    return admin.scalar("select revision from app.documents where id = %s", document_id)


def purge(admin: Admin, database: DatabaseUrls) -> None:
    """Run the worker's periodic purge of listed files now, as its clock would."""

    async def defer() -> int:
        app = procrastinate_app(database.worker_url)
        async with app.open_async():
            job_id: int = await app.configure_task(PURGE_BLOBS).defer_async(timestamp=int(time.time()))
        return job_id

    job_id = asyncio.run(defer())
    wait_for(
        lambda: (
            admin.scalar("select status::text from procrastinate.procrastinate_jobs where id = %s", job_id)
            == "succeeded"
        ),
        timeout=60,
        message="the blob purge",
    )


def test_a_new_version_replaces_the_old_chunks_in_place(
    tenant: Api, admin: Admin, database: DatabaseUrls, worker_process: subprocess.Popen[bytes]
) -> None:
    document = import_file(tenant, b"The first version is about qzoldversionix only.")
    doc_id = document["id"]
    wait_for(lambda: found(tenant, "qzoldversionix") == [doc_id], timeout=60, message="the first version indexed")
    before = chunk_ids(admin, doc_id)

    worker_process.send_signal(signal.SIGSTOP)  # the new version waits for its ingestion
    try:
        revised = revise(tenant, doc_id, b"The second version is about qznewversionix instead.", "renamed.txt")
        assert revised.reingested
        assert (str(revised.document.id), revised.revision) == (doc_id, 1)
        assert (revised.document.status, revised.document.title) == ("queued", "renamed.txt")
        # Until the new chunks are stored, the old ones answer (the index has not changed).
        assert found(tenant, "qzoldversionix") == [doc_id]
        assert found(tenant, "qznewversionix") == []
        assert chunk_ids(admin, doc_id) == before
        assert blob_exists(tenant.client, tenant.tenant_id, doc_id) and blob_exists(
            tenant.client, tenant.tenant_id, doc_id, revision=1
        )
    finally:
        worker_process.send_signal(signal.SIGCONT)

    after = tenant.wait_until_done(doc_id)
    assert (after["status"], after["id"], revision_of(admin, doc_id)) == ("ready", doc_id, 1)
    wait_for(lambda: found(tenant, "qznewversionix") == [doc_id], timeout=60, message="the new version indexed")
    assert found(tenant, "qzoldversionix") == []
    assert chunk_ids(admin, doc_id) == before, "chunk ids are stable per (document, ordinal): replaced in place"
    assert index_count(tenant.client, tenant.tenant_id, doc_id) == after["chunk_count"]
    content = tenant.get(f"/api/documents/{doc_id}/content")
    assert "qznewversionix" in content.text and "qzoldversionix" not in content.text
    assert admin.documents(tenant.tenant_id) == 1, "no second document"

    purge(admin, database)
    assert not blob_exists(tenant.client, tenant.tenant_id, doc_id), "the replaced file is deleted"
    assert blob_exists(tenant.client, tenant.tenant_id, doc_id, revision=1)


def test_the_same_content_again_only_renames_the_document(
    tenant: Api, admin: Admin, worker_process: subprocess.Popen[bytes]
) -> None:
    content = b"Unchanged content about qzunchangedix."
    document = import_file(tenant, content)
    revised = revise(tenant, document["id"], content, "new name.txt")
    assert not revised.reingested
    assert (revised.document.status, revised.revision, revised.document.title) == ("ready", 0, "new name.txt")
    assert not blob_exists(tenant.client, tenant.tenant_id, document["id"], revision=1), "nothing stored again"


def test_a_new_version_that_cannot_be_processed_fails_the_document_and_leaves_the_index(
    tenant: Api, admin: Admin, worker_process: subprocess.Popen[bytes]
) -> None:
    document = import_file(tenant, b"Before it broke, this was about qzbeforefailix.")
    doc_id = document["id"]
    wait_for(lambda: found(tenant, "qzbeforefailix") == [doc_id], timeout=60, message="the first version indexed")

    revised = revise(tenant, doc_id, (FIXTURES / "corrupt.pdf").read_bytes(), "notes.pdf")
    assert revised.reingested and revised.document.mime_type == "application/pdf"
    failed = tenant.wait_until_done(doc_id)
    assert failed["status"] == "failed" and "damaged" in failed["error_reason"], failed
    assert (revision_of(admin, doc_id), failed["chunk_count"]) == (1, None)
    # The old version is no longer what the source says: out of Postgres and, through the outbox, the index.
    assert chunk_ids(admin, doc_id) == []
    wait_for(
        lambda: index_count(tenant.client, tenant.tenant_id, doc_id) == 0,
        timeout=60,
        message="the old version's points to leave the index",
    )
    assert found(tenant, "qzbeforefailix") == []
    assert tenant.get(f"/api/documents/{doc_id}/content").status_code == 409


def test_an_upload_is_never_revised(tenant: Api) -> None:
    uploaded = tenant.upload("upload.txt", b"An upload about qzuploadix.").json()
    with pytest.raises(NotFound):
        revise(tenant, uploaded["id"], b"Another text.")
