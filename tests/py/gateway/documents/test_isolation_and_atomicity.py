"""Tenants never reach each other's documents; an upload is all or nothing."""

from __future__ import annotations

import pytest

from quarry.documents import service
from tests.py.support.api import Api
from tests.py.support.database import DatabaseUrls, admin_count, exposed_schema


def test_other_tenants_get_404_on_every_route(alice: Api, bob: Api, database: DatabaseUrls) -> None:
    document = alice.upload("secret.txt", b"Alice's secret plan for the quarry.").json()
    path = f"/api/documents/{document['id']}"
    assert bob.get(path).status_code == 404
    assert bob.get(f"{path}/content").status_code == 404
    assert bob.delete(path).status_code == 404
    assert document["id"] not in [d["id"] for d in bob.get("/api/documents?limit=100").json()["data"]]
    # ... and through the exposed schema
    assert exposed_schema(database, bob.tenant_id, "select * from api.documents where id = %s", document["id"]) == []
    assert (
        exposed_schema(database, bob.tenant_id, "delete from api.documents where id = %s returning id", document["id"])
        == []
    )
    # still there for Alice
    assert alice.get(path).status_code == 200


def test_listing_pages_and_filters(alice: Api) -> None:
    created = [alice.upload(f"page-{i}.txt", f"Page test {i}.".encode()).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = alice.get(f"/api/documents?limit=2&source=upload{'&cursor=' + cursor if cursor else ''}").json()
        seen.extend(d["id"] for d in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(created) <= set(seen)
    positions = [seen.index(i) for i in created]
    assert positions == sorted(positions, reverse=True)  # newest first
    assert alice.get("/api/documents?status=failed&limit=100").status_code == 200


def test_failure_before_commit_leaves_no_row_job_or_blob(
    alice: Api, database: DatabaseUrls, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Exploding:
        @staticmethod
        def model_validate(row: object) -> object:
            raise RuntimeError("crash between the insert and the commit")

    blob_root = alice.client.app.state.settings.blob_dir  # type: ignore[attr-defined]

    def blob_files() -> set[str]:
        return {str(p) for p in blob_root.rglob("*") if p.is_file()} if blob_root.exists() else set()

    before = (
        admin_count(database, "select count(*) from app.documents"),
        admin_count(database, "select count(*) from procrastinate.procrastinate_jobs"),
        blob_files(),
    )
    monkeypatch.setattr(service, "Document", Exploding)
    response = alice.upload("doomed.txt", b"This upload must leave no trace.")
    assert response.status_code == 500
    after = (
        admin_count(database, "select count(*) from app.documents"),
        admin_count(database, "select count(*) from procrastinate.procrastinate_jobs"),
        blob_files(),
    )
    assert after == before
