"""Nothing is lost when the index is down, and re-running a job is harmless."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from quarry.index.edge import EdgeIndex
from tests.py.support.api import Api, GatewayFactory, blob_exists, index_count
from tests.py.support.database import DatabaseUrls, Users, admin_count
from tests.py.support.processes import wait_for
from tests.py.support.tokens import TokenFactory

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]


def statuses(database: DatabaseUrls, ids: list[str]) -> list[str]:
    with psycopg.connect(database.admin_url) as conn:
        return [
            row[0] for row in conn.execute("select status::text from app.documents where id = any(%s::uuid[])", (ids,))
        ]


def chunk_ids(database: DatabaseUrls, document_id: str) -> list[str]:
    with psycopg.connect(database.admin_url) as conn:
        rows = conn.execute("select id::text from app.chunks where document_id = %s order by ordinal", (document_id,))
        return [row[0] for row in rows]


def test_index_outage_loses_nothing(
    make_gateway: GatewayFactory, tokens: TokenFactory, users: Users, database: DatabaseUrls, data_dir: Path
) -> None:
    holder = EdgeIndex(data_dir / "index")  # another owner: the gateway cannot open the index
    try:
        client = make_gateway(OUTBOX_MAX_BACKOFF_SECONDS="1")
        api = Api(client, tokens.es256(users.alice), users.alice)
        ids = [
            api.upload(f"outage-{i}.txt", f"Document {i} waits for the index to come back.".encode()).json()["id"]
            for i in range(3)
        ]
        wait_for(
            lambda: statuses(database, ids) == ["indexing"] * 3, timeout=60, message="documents to wait in indexing"
        )
        wait_for(
            lambda: admin_count(database, "select failing from ops.outbox_status") >= 1,
            timeout=30,
            message="the outage to show in ops.outbox_status",
        )
        assert statuses(database, ids) == ["indexing"] * 3
    finally:
        holder.close()
    wait_for(lambda: statuses(database, ids) == ["ready"] * 3, timeout=60, message="the relay to drain")
    for document_id in ids:
        chunks = admin_count(database, "select chunk_count from app.documents where id = %s", document_id)
        assert index_count(client, users.alice, document_id) == chunks >= 1
    assert admin_count(database, "select count(*) from app.outbox where document_id = any(%s::uuid[])", ids) == 0


def test_a_job_run_twice_leaves_one_set_of_chunks_and_points(alice: Api, database: DatabaseUrls) -> None:
    text = " ".join(f"Sentence {i} about the granite quarry and its long history of stone." for i in range(120))
    document = alice.wait_until_done(alice.upload("twice.txt", text.encode()).json()["id"])
    assert document["status"] == "ready" and document["chunk_count"] > 1
    first_ids = chunk_ids(database, document["id"])

    # 1. A duplicate of the finished job (as after a crash between commit and ack) is a no-op.
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        args = json.dumps({"document_id": document["id"]})
        job_id = conn.execute(
            "select internal.defer_job('documents:ingest', %s, %s::jsonb)", (alice.tenant_id, args)
        ).fetchone()[0]  # type: ignore[index]
    wait_for(
        lambda: (
            admin_count(
                database,
                "select count(*) from procrastinate.procrastinate_jobs where id = %s and status = 'succeeded'",
                job_id,
            )
            == 1
        ),
        timeout=30,
        message="the duplicate job to run",
    )
    assert chunk_ids(database, document["id"]) == first_ids

    # 2. Processing the document again replaces its chunks with the same ids and points.
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("update app.documents set status = 'queued', ready_at = null where id = %s", (document["id"],))
        conn.execute(  # as the creating transaction does (internal.queue_document_ingest, for its caller)
            "select internal.defer_job('documents:ingest', %s, jsonb_build_object('document_id', %s::uuid),"
            " internal.document_job_lock(%s, %s))",
            (alice.tenant_id, document["id"], alice.tenant_id, document["id"]),
        )
    again = alice.wait_until_done(document["id"])
    wait_for(lambda: alice.get(f"/api/documents/{document['id']}").json()["status"] == "ready", timeout=30)
    assert again["chunk_count"] == document["chunk_count"]
    assert chunk_ids(database, document["id"]) == first_ids
    assert index_count(alice.client, alice.tenant_id, document["id"]) == document["chunk_count"]


def test_deleting_a_document_while_it_is_processed_leaves_nothing(alice: Api, database: DatabaseUrls) -> None:
    text = "\n\n".join(
        f"Paragraph {i}. " + " ".join(f"Ledger line {i}-{j} of the quarry records stone." for j in range(20))
        for i in range(150)
    )
    document_id = alice.upload("racing.txt", text.encode()).json()["id"]
    wait_for(lambda: statuses(database, [document_id]) == ["processing"], timeout=60, message="processing to start")
    assert alice.delete(f"/api/documents/{document_id}").status_code == 204

    def nothing_left() -> bool:
        return (
            admin_count(database, "select count(*) from app.outbox where document_id = %s", document_id) == 0
            and index_count(alice.client, alice.tenant_id, document_id) == 0
            and not blob_exists(alice.client, alice.tenant_id, document_id)
        )

    wait_for(nothing_left, timeout=60, message="the delete to be applied")
    # Give the worker time to finish its run; it must not resurrect anything.
    wait_for(
        lambda: (
            admin_count(
                database,
                "select count(*) from procrastinate.procrastinate_jobs"
                " where args ->> 'document_id' = %s and status in ('todo', 'doing')",
                document_id,
            )
            == 0
        ),
        timeout=60,
        message="the job to end",
    )
    assert admin_count(database, "select count(*) from app.chunks where document_id = %s", document_id) == 0
    assert admin_count(database, "select count(*) from app.document_texts where document_id = %s", document_id) == 0
    assert nothing_left()
