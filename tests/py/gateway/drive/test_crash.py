"""A worker SIGKILLed mid-crawl: the next worker resumes from the last committed page, and nothing
is lost or imported twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.py.gateway.drive.conftest import connect, drive_env, new_tenant
from tests.py.gateway.drive.test_sync import files, text_of, wait_ready
from tests.py.support.admin import Admin
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.google import FakeGoogle
from tests.py.support.processes import running_worker, wait_for
from tests.py.support.tokens import JwksServer, TokenFactory

pytestmark = [pytest.mark.slow]

COUNT = 60


def test_a_worker_killed_mid_crawl_loses_nothing_and_duplicates_nothing(
    admin: Admin,
    drive_gateway: TestClient,
    tokens: TokenFactory,
    google: FakeGoogle,
    database: DatabaseUrls,
    jwks_server: JwksServer,
    data_dir: Path,
    tmp_path: Path,
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
    env = gateway_env(database, jwks_server, data_dir, **drive_env(google, DRIVE_PAGE_SIZE="10"))
    google.list_delay = 0.5
    run = tenant.client.post(f"/api/drive/sync/{config_id}/trigger", headers=tenant.headers).json()
    with running_worker(env, tmp_path / "first.log") as first:

        def some_files() -> bool:
            return 10 <= len(files(tenant, config_id)) < COUNT

        wait_for(some_files, timeout=120, interval=0.2, message="the crawl to be under way")
        first.send_signal(signal.SIGKILL)
        first.wait()
    partial = files(tenant, config_id)
    assert tenant.get(f"/api/drive/runs/{run['id']}").json()["state"] == "running"
    google.list_delay = 0.0
    with running_worker(env, tmp_path / "second.log"):

        def finished() -> bool:
            return tenant.get(f"/api/drive/runs/{run['id']}").json()["state"] not in ("queued", "running")

        wait_for(finished, timeout=180, interval=1, message="the resumed run")
        assert tenant.get(f"/api/drive/runs/{run['id']}").json()["state"] == "succeeded"
        wait_ready(admin, tenant.tenant_id)
    after = files(tenant, config_id)
    assert len([row for row in after.values() if row["state"] == "indexed"]) == COUNT
    for file_id, row in partial.items():
        if row["state"] == "indexed":
            assert after[file_id]["document_id"] == row["document_id"], "re-imported after the restart"
    assert admin.documents(tenant.tenant_id) == COUNT, "a duplicate or a lost document"
