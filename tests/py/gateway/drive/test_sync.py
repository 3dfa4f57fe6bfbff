"""A Drive folder synced end to end: the real worker, Postgres, index and model against the local Google.

First sync of a tree with nested subfolders over several pages, Google
Docs/Sheets/Slides, shortcuts, an unsupported file, one over the size cap and
one over Google's export limit; then every kind of change, and the index must
match the folder exactly.  Tenants never reach each other's configs or runs.
"""

from __future__ import annotations

import io
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import psycopg
import pytest
from starlette.testclient import TestClient

from tests.py.gateway.drive.conftest import connect, new_tenant
from tests.py.support.admin import Admin
from tests.py.support.api import FIXTURES, Api, assert_problem, index_count
from tests.py.support.database import DatabaseUrls, exposed_schema
from tests.py.support.google import DOC, FOLDER, SHEET, SHORTCUT, SLIDES, FakeFile, FakeGoogle
from tests.py.support.processes import wait_for
from tests.py.support.tokens import TokenFactory

pytestmark = [pytest.mark.slow]

FILES = int(os.environ.get("DRIVE_E2E_FILES", "1200"))
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def word(n: int) -> str:
    """A word no other file holds (for a sparse query that must find exactly this file)."""
    return "qz" + "".join("bcdfghjklmnpqrstvwxz"[int(d)] for d in f"{n:05d}") + "ix"


def text_of(n: int) -> bytes:
    return f"Drive file {n} is about {word(n)} and nothing else.\n".encode()


def run_sync(api: Api, config_id: str, timeout: float = 600) -> dict[str, Any]:
    response = api.client.post(f"/api/drive/sync/{config_id}/trigger", headers=api.headers)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    seen: dict[str, Any] = {}

    def finished() -> bool:
        seen.update(api.get(f"/api/drive/runs/{run_id}").json())
        return seen["state"] not in ("queued", "running")

    wait_for(finished, timeout=timeout, interval=0.2, message=f"sync run {run_id}")
    return seen


def wait_ready(admin: Admin, tenant: uuid.UUID, timeout: float = 900) -> None:
    """Every document of the tenant processed, and the index caught up with Postgres (no change pending)."""

    def done() -> bool:
        pending = admin.scalar(
            "select (select count(*) from app.documents where tenant_id = %s and status not in ('ready', 'failed'))"
            " + (select count(*) from app.outbox where tenant_id = %s)",
            tenant,
            tenant,
        )
        return pending == 0

    wait_for(done, timeout=timeout, interval=0.2, message="every Drive document to be processed")


def files(api: Api, config_id: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"/api/drive/configs/{config_id}/files")
    assert response.status_code == 200, response.text
    return {row["file_id"]: row for row in response.json()["data"]}


def tree_files(google: FakeGoogle, root: str) -> dict[str, FakeFile]:
    """What the folder holds now, by Drive id (subfolders aside)."""
    folders = {root}
    changed = True
    while changed:
        changed = False
        for file in google.files.values():
            live = file.mime_type == FOLDER and not file.trashed and file.accessible
            if live and set(file.parents) & folders and file.id not in folders:
                folders.add(file.id)
                changed = True
    return {
        file.id: file
        for file in google.files.values()
        if file.mime_type != FOLDER and not file.trashed and file.accessible and set(file.parents) & folders
    }


def index_matches(api: Api, admin: Admin, config_id: str, expected_indexed: set[str]) -> None:
    """Exactly one ready, searchable document per indexed file, and no other Drive document."""
    mapped = files(api, config_id)
    indexed = {file_id: row for file_id, row in mapped.items() if row["state"] == "indexed"}
    assert set(indexed) == expected_indexed
    document_ids = [row["document_id"] for row in indexed.values()]
    assert len(set(document_ids)) == len(document_ids)
    rows = admin.execute(
        "select id, status::text from app.documents where tenant_id = %s and source = 'drive'", api.tenant_id
    )
    assert sorted(str(row[0]) for row in rows) == sorted(document_ids), "a stale or duplicate document"
    assert {row[1] for row in rows} <= {"ready"}


def found(api: Api, text: str) -> list[str]:
    body = api.client.post("/api/query", headers=api.headers, json={"query": text, "mode": "sparse"}).json()
    return [result["document"]["title"] for result in body["results"]]


def assert_found(api: Api, text: str, titles: list[str]) -> None:
    """The search answers these titles for the text, once the outbox relay has caught up (a few seconds)."""
    wait_for(lambda: found(api, text) == titles, timeout=60, interval=0.1, message=f"{text!r} to find {titles}")


@pytest.fixture(scope="module")
def tree(google: FakeGoogle) -> dict[str, Any]:
    """The folder: nested subfolders, FILES text files over several pages, Google's formats, the odd ones."""
    root = google.folder(f"Quarry {uuid.uuid4().hex[:6]}")
    a = google.folder("a", root.id)
    b = google.folder("b", a.id)
    c = google.folder("c", b.id)
    outside = google.folder("Outside")
    movable = google.folder("movable", a.id)  # a small subtree to move out and back in
    for n in range(5):
        google.add(f"movable-{n}.txt", "text/plain", movable.id, f"Movable file {n} about qzmovableix.".encode())
    folders = [root, a, b, c]
    numbered = {}
    for n in range(FILES):
        file = google.add(f"note-{n}.txt", "text/plain", folders[n % 4].id, text_of(n))
        numbered[n] = file.id
    special = {
        "doc": google.add("Design doc", DOC, a.id, exports={"text/plain": b"The Google Doc about qzdocumentix."}),
        "slides": google.add("Deck", SLIDES, b.id, exports={"text/plain": b"Slides about qzslidesix."}),
        "sheet": google.add("Budget", SHEET, c.id, exports={XLSX: (FIXTURES / "sample.xlsx").read_bytes()}),
        "too_large_export": google.add("Huge doc", DOC, root.id, export_too_large=True),
        "form": google.add("Survey", "application/vnd.google-apps.form", root.id),
        "binary": google.add("tool.bin", "application/octet-stream", a.id, b"\x7fELF\x02\x01\x01" + b"\x00" * 200),
        "big": google.add("big.txt", "text/plain", root.id, b"x" * (5 * 1024 * 1024)),
    }
    target = google.add("target.txt", "text/plain", outside.id, b"The shortcut target about qzshortcutix.")
    special["shortcut"] = google.add("Link to target", SHORTCUT, root.id, target=target.id)
    special["folder_shortcut"] = google.add("Link to outside", SHORTCUT, root.id, target=outside.id)
    return {
        "root": root,
        "folders": folders,
        "outside": outside,
        "movable": movable,
        "numbered": numbered,
        "special": special,
    }


@pytest.fixture(scope="module")
def state() -> dict[str, Any]:
    return {}


@pytest.fixture
def owner(state: dict[str, Any], admin: Admin, drive_gateway: TestClient, tokens: TokenFactory) -> Api:
    """The tenant that syncs the folder (the same one across this module's tests)."""
    if "tenant" not in state:
        api = new_tenant(admin, drive_gateway, tokens, plan="enterprise")
        state["tenant"], state["token"] = api.tenant_id, api.token
    return Api(drive_gateway, state["token"], state["tenant"])


def test_first_sync_indexes_every_supported_file_and_lists_each_skip_with_its_reason(
    owner: Api, admin: Admin, google: FakeGoogle, tree: dict[str, Any], state: dict[str, Any], worker_log: Path
) -> None:
    connect(owner, google)
    response = owner.client.post("/api/drive/configs", headers=owner.headers, json={"folder_id": tree["root"].id})
    assert response.status_code == 201, response.text
    config_id = state["config"] = response.json()["id"]
    run = run_sync(owner, config_id)
    assert run["state"] == "succeeded" and run["full_crawl"] is True, run
    wait_ready(admin, owner.tenant_id)
    special = tree["special"]
    expected = {*tree["numbered"].values(), special["doc"].id, special["slides"].id, special["sheet"].id}
    expected |= {file_id for file_id, file in google.files.items() if tree["movable"].id in file.parents}
    expected.add(special["shortcut"].id)
    index_matches(owner, admin, config_id, expected)
    mapped = files(owner, config_id)
    reasons = {
        name: mapped[special[name].id]["reason"]
        for name in ("too_large_export", "form", "binary", "big", "folder_shortcut")
    }
    assert all(mapped[special[name].id]["state"] == "skipped" for name in reasons)
    assert "export limit" in reasons["too_large_export"]
    assert "cannot be indexed" in reasons["form"]
    assert "size cap" in reasons["big"]
    assert "shortcut to a folder" in reasons["folder_shortcut"]
    assert reasons["binary"]
    config = next(c for c in owner.get("/api/drive/configs").json()["data"] if c["id"] == config_id)
    assert config["state"] == "ready" and config["last_synced_at"]
    assert (config["files_indexed"], config["files_skipped"]) == (len(expected), 5)
    for n in (0, 1, 2, 3, FILES // 2, FILES - 1):
        assert_found(owner, word(n), [f"note-{n}.txt"])
    assert_found(owner, "qzdocumentix", ["Design doc"])
    assert_found(owner, "qzslidesix", ["Deck"])
    assert_found(owner, "qzshortcutix", ["Link to target"])
    assert google.count("GET", "/drive/v3/files?") > FILES // google_page_size()
    # Every document is in the index.
    indexed = [row["document_id"] for row in mapped.values() if row["state"] == "indexed"]
    wait_for(
        lambda: all(index_count(owner.client, owner.tenant_id, document) > 0 for document in indexed),
        timeout=120,
        interval=1,
        message="every Drive document in the index",
    )


def google_page_size() -> int:
    return 100


def test_every_kind_of_change_is_followed_and_the_index_matches_the_folder(
    owner: Api, admin: Admin, google: FakeGoogle, tree: dict[str, Any], state: dict[str, Any], worker_log: Path
) -> None:
    config_id = state["config"]
    root, a, outside = tree["root"], tree["folders"][1], tree["outside"]
    numbered = tree["numbered"]
    before = files(owner, config_id)
    added = google.add("new.txt", "text/plain", a.id, b"A new file about qznewfileix.")
    google.modify(numbered[0], text_of(0) + b"Now also about qzmodifiedix.\n")
    google.modify(numbered[1], name="renamed-1.txt")
    google.move(numbered[2], outside.id)  # moved out
    moved_in = google.add("incoming.txt", "text/plain", outside.id, b"Arrives from outside: qzmovedinix.")
    google.move(moved_in.id, root.id)  # moved in
    google.trash(numbered[3])
    google.delete(numbered[4])
    google.lose_access(numbered[5])
    lists_before = google.count("GET", "/drive/v3/files?")
    run = run_sync(owner, config_id)
    assert run["state"] == "succeeded" and run["full_crawl"] is False, run
    assert google.count("GET", "/drive/v3/files?") == lists_before, "an incremental sync must not re-list the folder"
    wait_ready(admin, owner.tenant_id)
    after = files(owner, config_id)
    expected = {file_id for file_id in tree_files(google, root.id)}
    expected -= {tree["special"][name].id for name in ("too_large_export", "form", "binary", "big", "folder_shortcut")}
    index_matches(owner, admin, config_id, expected)
    modified = after[numbered[0]]["document_id"]
    assert modified == before[numbered[0]]["document_id"], "modified: ingested again in place, same document"
    assert admin.scalar("select revision from app.documents where id = %s", modified) == 1
    assert_found(owner, "qzmodifiedix", ["note-0.txt"])
    assert after[numbered[1]]["document_id"] == before[numbered[1]]["document_id"], "renamed: same content"
    assert_found(owner, word(1), ["renamed-1.txt"])
    for n in (2, 3, 4, 5):
        assert_found(owner, word(n), [])
    assert_found(owner, "qznewfileix", ["new.txt"])
    assert_found(owner, "qzmovedinix", ["incoming.txt"])
    assert added.id in after and run["files_removed"] == 4


def test_moving_a_folder_out_and_back_in_follows_its_whole_subtree(
    owner: Api, admin: Admin, google: FakeGoogle, tree: dict[str, Any], state: dict[str, Any], worker_log: Path
) -> None:
    config_id = state["config"]
    root, movable, outside = tree["root"], tree["movable"], tree["outside"]
    inside = {file_id for file_id, file in tree_files(google, root.id).items() if movable.id in file.parents}
    assert inside
    google.move(movable.id, outside.id)
    assert run_sync(owner, config_id)["state"] == "succeeded"
    assert not inside & set(files(owner, config_id)), "a folder moved out takes its files with it"
    assert_found(owner, "qzmovableix", [])
    google.move(movable.id, root.id)
    assert run_sync(owner, config_id)["state"] == "succeeded"
    wait_ready(admin, owner.tenant_id)
    assert inside <= set(files(owner, config_id))
    assert len(found(owner, "qzmovableix")) == len(inside)
    expected = set(tree_files(google, root.id))
    expected -= {tree["special"][name].id for name in ("too_large_export", "form", "binary", "big", "folder_shortcut")}
    index_matches(owner, admin, config_id, expected)


def test_a_folder_in_a_shared_drive_is_listed_and_followed_in_that_drive(
    admin: Admin, drive_gateway: TestClient, tokens: TokenFactory, google: FakeGoogle, worker_log: Path
) -> None:
    tenant = new_tenant(admin, drive_gateway, tokens)
    connect(tenant, google)
    drive = google.shared_drive("Team")
    team = google.folder("Team docs", drive)
    specs = google.folder("Specs", team.id)
    plan = google.add("plan.txt", "text/plain", team.id, b"The team plan about qzteamplanix.")
    spec = google.add("spec.txt", "text/plain", specs.id, b"A nested spec about qzteamspecix.")
    google.add("elsewhere.txt", "text/plain", drive, b"Beside the folder: qzteamelsewhereix.")
    response = tenant.client.post("/api/drive/configs", headers=tenant.headers, json={"folder_id": team.id})
    assert response.status_code == 201, response.text
    config_id = response.json()["id"]
    assert admin.scalar("select drive_id from app.drive_folders where id = %s", config_id) == drive
    run = run_sync(tenant, config_id)
    assert run["state"] == "succeeded" and run["files_indexed"] == 2, run
    wait_ready(admin, tenant.tenant_id)
    assert_found(tenant, "qzteamplanix", ["plan.txt"])
    assert_found(tenant, "qzteamspecix", ["spec.txt"])
    assert_found(tenant, "qzteamelsewhereix", [])

    # Changes in a shared drive are in its own change log: the incremental sync must read that one.
    google.modify(plan.id, b"The team plan, revised, about qzteamrevisedix.")
    google.add("new.txt", "text/plain", specs.id, b"Added in the shared drive: qzteamnewix.")
    google.trash(spec.id)
    lists = google.count("GET", "/drive/v3/files?")
    run = run_sync(tenant, config_id)
    assert run["state"] == "succeeded" and run["full_crawl"] is False, run
    assert google.count("GET", "/drive/v3/files?") == lists, "an incremental sync must not re-list the folder"
    assert any(path.startswith("/drive/v3/changes?") and f"driveId={drive}" in path for _, path in google.requests), (
        "the shared drive's own change log was read"
    )
    wait_ready(admin, tenant.tenant_id)
    assert_found(tenant, "qzteamrevisedix", ["plan.txt"])
    assert_found(tenant, "qzteamnewix", ["new.txt"])
    assert_found(tenant, "qzteamspecix", [])
    assert {row["state"] for row in files(tenant, config_id).values()} == {"indexed"}
    assert len(files(tenant, config_id)) == 2


def test_a_sheet_is_indexed_with_every_tab_on_every_plan(
    admin: Admin, drive_gateway: TestClient, tokens: TokenFactory, google: FakeGoogle, worker_log: Path
) -> None:
    """Google exports every tab only as XLSX, which Free does not take: the tabs become a Markdown document."""
    tenant = new_tenant(admin, drive_gateway, tokens, plan="free")
    connect(tenant, google)
    folder = google.folder("Sheets")
    sheet = google.add("Budget 2027", SHEET, folder.id, exports={XLSX: two_tab_workbook()})
    response = tenant.client.post("/api/drive/configs", headers=tenant.headers, json={"folder_id": folder.id})
    assert response.status_code == 201, response.text
    config_id = response.json()["id"]
    assert run_sync(tenant, config_id)["state"] == "succeeded"
    wait_ready(admin, tenant.tenant_id)
    row = files(tenant, config_id)[sheet.id]
    assert row["state"] == "indexed", row
    document = tenant.get(f"/api/documents/{row['document_id']}").json()
    assert (document["title"], document["mime_type"], document["status"]) == ("Budget 2027", "text/markdown", "ready")
    assert_found(tenant, "qzfirsttabix", ["Budget 2027"])
    assert_found(tenant, "qzsecondtabix", ["Budget 2027"])
    content = tenant.get(f"/api/documents/{row['document_id']}/content").text
    assert "## Income" in content and "## Costs" in content


def two_tab_workbook() -> bytes:
    workbook = openpyxl.Workbook()
    income = workbook.active
    assert income is not None
    income.title = "Income"
    income.append(["Month", "Amount"])
    income.append(["January", "qzfirsttabix"])
    costs = workbook.create_sheet("Costs")
    costs.append(["# Item", "Cost"])  # a row that would read as a Markdown heading
    costs.append(["Rent", "qzsecondtabix"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_an_expired_changes_token_reconciles_in_full(
    owner: Api, admin: Admin, google: FakeGoogle, tree: dict[str, Any], state: dict[str, Any], worker_log: Path
) -> None:
    config_id = state["config"]
    google.delete(tree["numbered"][6])
    google.expire_change_tokens()
    run = run_sync(owner, config_id)
    assert run["state"] == "succeeded" and run["full_crawl"] is True, run
    assert tree["numbered"][6] not in files(owner, config_id)
    wait_ready(admin, owner.tenant_id)
    expected = set(tree_files(google, tree["root"].id))
    expected -= {tree["special"][name].id for name in ("too_large_export", "form", "binary", "big", "folder_shortcut")}
    index_matches(owner, admin, config_id, expected)


def test_other_tenants_reach_no_config_or_run_on_either_path(
    owner: Api,
    admin: Admin,
    database: DatabaseUrls,
    drive_gateway: TestClient,
    tokens: TokenFactory,
    state: dict[str, Any],
) -> None:
    config_id = state["config"]
    other = new_tenant(admin, drive_gateway, tokens)
    assert other.get("/api/drive/configs").json()["data"] == []
    assert_problem(other.get(f"/api/drive/configs/{config_id}/files"), 404)
    assert_problem(other.client.post(f"/api/drive/sync/{config_id}/trigger", headers=other.headers), 404)
    assert_problem(other.delete(f"/api/drive/configs/{config_id}"), 404)
    run_id = admin.scalar("select id from app.drive_sync_runs where folder_id = %s limit 1", config_id)
    assert_problem(other.get(f"/api/drive/runs/{run_id}"), 404)
    for view in ("drive_configs", "drive_sync_runs", "drive_files", "drive_connection"):
        assert exposed_schema(database, other.tenant_id, f"select * from api.{view}") == []
    with pytest.raises(psycopg.Error) as refused:
        exposed_schema(database, other.tenant_id, "select * from api.trigger_drive_sync(%s)", config_id)
    assert refused.value.sqlstate == "PGRST" and '"status": 404' in str(refused.value.diag.message_detail)
    assert exposed_schema(database, owner.tenant_id, "select count(*) as n from api.drive_configs")[0]["n"] == 1


def test_the_refresh_token_appears_nowhere(
    owner: Api,
    database: DatabaseUrls,
    google: FakeGoogle,
    state: dict[str, Any],
    worker_log: Path,
    gateway_log: Path,
) -> None:
    """Every API response of the tenant, every row of its views, the worker's and the gateway's logs (both at
    DEBUG) and the database's dump."""
    secrets = list(google.refresh_tokens)
    assert secrets
    responses = [
        owner.get(path).text
        for path in (
            "/api/drive/connection",
            "/api/drive/configs",
            f"/api/drive/configs/{state['config']}/files",
            "/api/documents?limit=100",
            "/api/me",
            "/api/billing/usage",
            "/openapi.json",
        )
    ]
    responses.append(owner.client.post("/api/drive/authorize", headers=owner.headers).text)
    views = exposed_schema(
        database,
        owner.tenant_id,
        "select string_agg(v::text, ' ') as rows from ("
        " select to_jsonb(c) as v from api.drive_connection as c union all"
        " select to_jsonb(f) from api.drive_configs as f union all"
        " select to_jsonb(r) from api.drive_sync_runs as r union all"
        " select to_jsonb(d) from api.drive_files as d union all"
        " select to_jsonb(d) from api.documents as d) as x",
    )
    dump = subprocess.run(
        ["pg_dump", "--data-only", database.admin_url], capture_output=True, check=True, text=True
    ).stdout
    assert "drive_connections" in dump
    logs = {"worker log": worker_log.read_text(), "gateway log": gateway_log.read_text()}
    assert "/token" in logs["gateway log"] and "googleapiclient" in logs["worker log"], "the logs were read"
    haystacks = {"responses": "\n".join(responses), "views": str(views), **logs, "dump": dump}
    for secret in secrets:
        for where, text in haystacks.items():
            assert secret not in text, f"a refresh token appears in the {where}"
