"""A worker SIGKILLed mid-crawl: the next worker resumes from the last committed page, and nothing
is lost or imported twice."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.py.gateway.drive.conftest import DriveWorker, connect, new_tenant
from tests.py.gateway.drive.test_sync import files, text_of, wait_ready
from tests.py.support.admin import Admin
from tests.py.support.google import FakeGoogle
from tests.py.support.processes import wait_for
from tests.py.support.tokens import TokenFactory

pytestmark = [pytest.mark.slow]

COUNT = 40
PAGE = 10  # Google's pages may be shorter than asked: several pages to kill the worker between


def test_a_worker_killed_mid_crawl_loses_nothing_and_duplicates_nothing(
    admin: Admin, drive_gateway: TestClient, tokens: TokenFactory, google: FakeGoogle, drive_worker: DriveWorker
) -> None:
    tenant = new_tenant(admin, drive_gateway, tokens)
    root = google.folder("Crash")
    sub = google.folder("sub", root.id)
    for n in range(COUNT):
        google.add(f"crash-{n}.txt", "text/plain", (root if n % 2 else sub).id, text_of(20_000 + n))
    connect(tenant, google)
    config_id = tenant.client.post("/api/drive/configs", headers=tenant.headers, json={"folder_id": root.id}).json()[
        "id"
    ]
    google.max_page_size, google.list_delay = PAGE, 0.5
    try:
        run = tenant.client.post(f"/api/drive/sync/{config_id}/trigger", headers=tenant.headers).json()

        def some_files() -> bool:
            return PAGE <= len(files(tenant, config_id)) < COUNT

        wait_for(some_files, timeout=120, interval=0.1, message="the crawl to be under way")
        drive_worker.kill()
        partial = files(tenant, config_id)
        assert tenant.get(f"/api/drive/runs/{run['id']}").json()["state"] == "running"
    finally:
        google.list_delay = 0.0
        drive_worker.start()  # the package's next worker: it finds the killed one's job stalled
    try:

        def finished() -> bool:
            return tenant.get(f"/api/drive/runs/{run['id']}").json()["state"] not in ("queued", "running")

        wait_for(finished, timeout=180, interval=0.2, message="the resumed run")
        assert tenant.get(f"/api/drive/runs/{run['id']}").json()["state"] == "succeeded"
        wait_ready(admin, tenant.tenant_id)
    finally:
        google.max_page_size = 1000
    after = files(tenant, config_id)
    assert len([row for row in after.values() if row["state"] == "indexed"]) == COUNT
    for file_id, row in partial.items():
        if row["state"] == "indexed":
            assert after[file_id]["document_id"] == row["document_id"], "re-imported after the restart"
    assert admin.documents(tenant.tenant_id) == COUNT, "a duplicate or a lost document"
