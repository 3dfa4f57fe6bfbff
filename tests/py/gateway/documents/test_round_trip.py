"""Every supported format: upload → ready → indexed under its tenant → content →
delete (gateway or exposed schema) removes rows, vectors and the stored file."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

from tests.py.support.api import FIXTURES, Api, blob_exists, index_count
from tests.py.support.database import DatabaseUrls, admin_count, exposed_schema
from tests.py.support.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]


def _sentences() -> dict[str, list[str]]:
    spec = importlib.util.spec_from_file_location("make_documents", Path(FIXTURES).parent / "make_documents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.SENTENCES)


SENTENCES = _sentences()
FORMATS = {
    "pdf": ("sample.pdf", "application/pdf", 3),
    "txt": ("sample.txt", "text/plain", None),
    "md": ("sample.md", "text/markdown", None),
    "json": ("sample.json", "application/json", None),
    "docx": ("sample.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", None),
    "pptx": ("sample.pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation", 2),
    "xlsx": ("sample.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", 2),
    "csv": ("sample.csv", "text/csv", None),
    "html": ("sample.html", "text/html", None),
    "epub": ("sample.epub", "application/epub+zip", 2),
}


def wait_until_cleaned(alice: Api, database: DatabaseUrls, document_id: str) -> None:
    def cleaned() -> bool:
        return (
            index_count(alice.client, alice.tenant_id, document_id) == 0
            and not blob_exists(alice.client, alice.tenant_id, document_id)
            and admin_count(database, "select count(*) from app.outbox where document_id = %s", document_id) == 0
        )

    wait_for(cleaned, timeout=30, message="vectors, blob and outbox entry to be removed")
    for table, column in (
        ("app.documents", "id"),
        ("app.chunks", "document_id"),
        ("app.document_texts", "document_id"),
    ):
        assert admin_count(database, f"select count(*) from {table} where {column} = %s", document_id) == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(alice: Api, bob: Api, database: DatabaseUrls, fmt: str) -> None:
    filename, mime_type, page_count = FORMATS[fmt]
    accepted = alice.upload_fixture(filename)
    assert accepted["status"] == "queued" and accepted["mime_type"] == mime_type
    document = alice.wait_until_done(accepted["id"])
    assert document["status"] == "ready", document
    assert document["page_count"] == page_count
    assert document["chunk_count"] >= 1 and document["ready_at"]

    assert index_count(alice.client, alice.tenant_id, document["id"]) == document["chunk_count"]
    assert index_count(alice.client, bob.tenant_id, document["id"]) == 0
    content = alice.get(f"/api/documents/{document['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"].startswith("text/plain")
    for sentence in SENTENCES[fmt]:
        assert sentence in content.text
    assert blob_exists(alice.client, alice.tenant_id, document["id"])

    assert alice.delete(f"/api/documents/{document['id']}").status_code == 204
    assert alice.get(f"/api/documents/{document['id']}").status_code == 404
    wait_until_cleaned(alice, database, document["id"])


def test_delete_through_the_exposed_schema_cleans_up_the_same(alice: Api, database: DatabaseUrls) -> None:
    document = alice.wait_until_done(alice.upload_fixture("sample.md")["id"])
    assert document["status"] == "ready"
    assert index_count(alice.client, alice.tenant_id, document["id"]) > 0
    deleted = exposed_schema(
        database, alice.tenant_id, "delete from api.documents where id = %s returning id", document["id"]
    )
    assert [row["id"] for row in deleted] == [uuid.UUID(document["id"])]
    wait_until_cleaned(alice, database, document["id"])


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("corrupt.pdf", "damaged"),
        ("encrypted.pdf", "password"),
        ("scanned.pdf", "no text layer"),
    ],
)
def test_unreadable_documents_fail_with_a_reason(
    alice: Api, database: DatabaseUrls, filename: str, reason: str
) -> None:
    document = alice.wait_until_done(alice.upload_fixture(filename)["id"])
    assert document["status"] == "failed"
    assert reason in document["error_reason"]
    assert document["chunk_count"] is None
    assert admin_count(database, "select count(*) from app.chunks where document_id = %s", document["id"]) == 0
    assert alice.get(f"/api/documents/{document['id']}/content").status_code == 409


def test_docx_zip_bomb_is_refused_at_upload(alice: Api, tmp_path: Path) -> None:
    from tests.py.support.hostile import MIB, write_docx_bomb

    bomb = tmp_path / "bomb.docx"
    write_docx_bomb(bomb, 300 * MIB)
    response = alice.upload("bomb.docx", bomb.read_bytes())
    assert response.status_code == 415, response.text
    assert "zip bomb" in response.json()["detail"]
