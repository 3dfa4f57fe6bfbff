"""Faults during a sync: a rate-limit storm is ridden out, invalid_grant pauses without a retry loop,
the plan's quota running out stops the run and the next one resumes where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.py.gateway.drive.conftest import connect, new_tenant
from tests.py.gateway.drive.test_sync import files, run_sync, text_of, wait_ready
from tests.py.support.admin import Admin
from tests.py.support.api import Api, assert_problem
from tests.py.support.google import FakeGoogle
from tests.py.support.tokens import TokenFactory

pytestmark = [pytest.mark.slow]


def folder_with(google: FakeGoogle, count: int) -> str:
    root = google.folder("Faults")
    for n in range(count):
        google.add(f"fault-{n}.txt", "text/plain", root.id, text_of(10_000 + n))
    return root.id


def configured(api: Api, google: FakeGoogle, root: str) -> str:
    connect(api, google)
    response = api.client.post("/api/drive/configs", headers=api.headers, json={"folder_id": root})
    assert response.status_code == 201, response.text
    config_id: str = response.json()["id"]
    return config_id


@pytest.fixture
def tenant(admin: Admin, drive_gateway: TestClient, tokens: TokenFactory) -> Api:
    return new_tenant(admin, drive_gateway, tokens)


def test_a_rate_limit_storm_is_retried_until_it_passes(tenant: Api, google: FakeGoogle, worker_log: Path) -> None:
    config_id = configured(tenant, google, folder_with(google, 5))
    google.fail("/drive/v3/files", 429, times=3, retry_after="0")
    google.fail("/drive/v3/files", 403, times=2, reason="userRateLimitExceeded")
    google.fail("/drive/v3/changes", 503, times=2)
    run = run_sync(tenant, config_id)
    assert run["state"] == "succeeded", run
    assert all(fault.times == 0 for fault in google.faults), "every injected fault was met and retried"
    assert {row["state"] for row in files(tenant, config_id).values()} == {"indexed"}
    assert len(files(tenant, config_id)) == 5


def test_invalid_grant_pauses_the_folders_and_asks_for_consent_without_a_retry_loop(
    tenant: Api, admin: Admin, google: FakeGoogle, worker_log: Path
) -> None:
    config_id = configured(tenant, google, folder_with(google, 2))
    google.invalid_grant = True
    google.expire_access_tokens()
    try:
        refreshes = google.count("POST", "/token")
        run = run_sync(tenant, config_id)
        assert run["state"] == "paused" and "connect Google Drive again" in run["error"], run
        assert google.count("POST", "/token") - refreshes <= 2, "invalid_grant must not be retried"
        assert tenant.get("/api/drive/connection").json()["status"] == "needs_reauth"
        config = tenant.get("/api/drive/configs").json()["data"][0]
        assert config["state"] == "paused"
        assert_problem(tenant.client.post(f"/api/drive/sync/{config_id}/trigger", headers=tenant.headers), 409)
    finally:
        google.invalid_grant = False
    connect(tenant, google)  # a new consent resumes the folders
    assert tenant.get("/api/drive/configs").json()["data"][0]["state"] == "idle"
    assert run_sync(tenant, config_id)["state"] == "succeeded"


def test_a_quota_reached_mid_run_stops_and_the_next_run_resumes(
    admin: Admin, drive_gateway: TestClient, tokens: TokenFactory, google: FakeGoogle, worker_log: Path
) -> None:
    tenant = new_tenant(admin, drive_gateway, tokens, plan="free")
    admin.prefill(tenant.tenant_id, "documents_per_month", 45)  # 5 left of Free's 50
    config_id = configured(tenant, google, folder_with(google, 12))
    run = run_sync(tenant, config_id)
    assert run["state"] == "quota_reached" and run["files_indexed"] == 5, run
    first: dict[str, Any] = files(tenant, config_id)
    assert len([row for row in first.values() if row["state"] == "indexed"]) == 5
    config = tenant.get("/api/drive/configs").json()["data"][0]
    assert config["state"] == "quota_reached" and config["last_error"]
    admin.subscribe(tenant.tenant_id, "pro", "active")
    lists = google.count("GET", "/drive/v3/files?")
    resumed = run_sync(tenant, config_id)
    assert resumed["state"] == "succeeded", resumed
    assert google.count("GET", "/drive/v3/files?") - lists == 1, "it resumes at the page it stopped on"
    after = files(tenant, config_id)
    assert {row["state"] for row in after.values()} == {"indexed"} and len(after) == 12
    for file_id, row in first.items():
        if row["state"] == "indexed":
            assert after[file_id]["document_id"] == row["document_id"], "nothing imported twice"
    wait_ready(admin, tenant.tenant_id)
    assert admin.documents(tenant.tenant_id) == 12
