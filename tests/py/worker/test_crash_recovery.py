"""A worker killed mid-job (SIGKILL): the job is retried by another worker and
the document still ends ready, with one set of chunks and points."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from tests.py.support.api import Api, GatewayFactory, index_count
from tests.py.support.database import DatabaseUrls, Users, admin_count, gateway_env
from tests.py.support.processes import running_worker, wait_for
from tests.py.support.tokens import JwksServer, TokenFactory

pytestmark = pytest.mark.slow


def status(database: DatabaseUrls, document_id: str) -> str:
    with psycopg.connect(database.admin_url) as conn:
        row = conn.execute("select status::text from app.documents where id = %s", (document_id,)).fetchone()
    return str(row[0]) if row else "gone"


def test_sigkill_mid_job(
    make_gateway: GatewayFactory,
    tokens: TokenFactory,
    users: Users,
    database: DatabaseUrls,
    jwks_server: JwksServer,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    env = gateway_env(database, jwks_server, data_dir)
    api = Api(make_gateway(), tokens.es256(users.alice), users.alice)
    # Long enough (a few hundred chunks) that the worker is still embedding when it is killed.
    text = "\n\n".join(
        f"Paragraph {i}. " + " ".join(f"The quarry ledger entry {i}-{j} records stone and tonnage." for j in range(20))
        for i in range(200)
    )
    with running_worker(env, tmp_path / "victim.log") as victim:
        document_id = api.upload("long.txt", text.encode()).json()["id"]
        wait_for(lambda: status(database, document_id) == "processing", timeout=60, message="the victim to start")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert status(database, document_id) == "processing"
    assert admin_count(database, "select count(*) from app.chunks where document_id = %s", document_id) == 0

    with running_worker(env, tmp_path / "rescuer.log"):
        wait_for(lambda: status(database, document_id) == "ready", timeout=120, message="the rescuer to finish")

    chunks = admin_count(database, "select count(*) from app.chunks where document_id = %s", document_id)
    assert chunks == admin_count(database, "select chunk_count from app.documents where id = %s", document_id) > 10
    assert index_count(api.client, users.alice, document_id) == chunks
    jobs = admin_count(
        database,
        "select count(*) from procrastinate.procrastinate_jobs"
        " where args ->> 'document_id' = %s and status = 'succeeded'",
        document_id,
    )
    assert jobs == 1
