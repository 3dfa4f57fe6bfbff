"""POST /api/query end to end: real documents, real model, real index."""

from __future__ import annotations

import uuid
from typing import Any

import httpx2
import psycopg
import pytest

from tests.py.support.api import Api, assert_problem
from tests.py.support.database import DatabaseUrls, exposed_schema

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]

ALICE_DOCS = {
    "granite.txt": "Granite is quarried on the northern ridge and polished for kitchen counters.",
    "marble.md": "# Marble\n\nWhite marble from the southern face was shipped by rail to the capital.",
    "zygomorph.txt": "The xylophagous zygomorph beetle bores through old oak beams in the storehouse.",
}


def query(api: Api, **body: Any) -> httpx2.Response:
    response: httpx2.Response = api.client.post("/api/query", headers=api.headers, json=body)
    return response


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    return {}


@pytest.fixture
def alice_docs(alice: Api, corpus: dict[str, str]) -> dict[str, str]:
    if not corpus:
        for name, text in ALICE_DOCS.items():
            document = alice.wait_until_done(alice.upload(name, text.encode()).json()["id"])
            assert document["status"] == "ready"
            corpus[name] = document["id"]
    return corpus


def test_hybrid_finds_by_meaning_and_by_rare_word(alice: Api, alice_docs: dict[str, str]) -> None:
    semantic = query(alice, query="stone used for kitchen worktops")
    assert semantic.status_code == 200, semantic.text
    body = semantic.json()
    assert body["results"][0]["document"]["id"] == alice_docs["granite.txt"]
    assert body["latency_ms"] > 0 and set(body["timings_ms"]) == {"embed", "index", "hydrate"}
    lexical = query(alice, query="xylophagous", mode="sparse").json()
    assert [r["document"]["id"] for r in lexical["results"]] == [alice_docs["zygomorph.txt"]]
    first = body["results"][0]
    assert first["text"].startswith("Granite") and first["document"]["title"] == "granite.txt"
    assert first["document"]["mime_type"] == "text/plain" and first["document"]["source"] == "upload"


def test_explain_is_consistent_with_rrf(alice: Api, alice_docs: dict[str, str]) -> None:
    results = query(alice, query="marble shipped by rail", explain=True, top_k=10).json()["results"]
    assert results
    recomputed = []
    for result in results:
        explain = result["explain"]
        fused = sum(
            1 / (explain["rrf_k"] + rank)
            for rank in (explain["dense_rank"], explain["sparse_rank"])
            if rank is not None
        )
        assert fused == pytest.approx(explain["fused_score"], rel=1e-4)
        recomputed.append(fused)
    assert recomputed == sorted(recomputed, reverse=True)


def test_filters_are_applied_inside_the_engine(alice: Api, alice_docs: dict[str, str]) -> None:
    only_marble = query(alice, query="granite counters", filters={"document_ids": [alice_docs["marble.md"]]}).json()
    assert {r["document"]["id"] for r in only_marble["results"]} == {alice_docs["marble.md"]}
    markdown = query(alice, query="granite counters", filters={"mime_types": ["text/markdown"]}).json()
    assert {r["document"]["mime_type"] for r in markdown["results"]} == {"text/markdown"}
    future = query(alice, query="granite", filters={"created_from": "2999-01-01T00:00:00+00:00"}).json()
    assert future["results"] == []
    drive = query(alice, query="granite", filters={"source": "drive"}).json()
    assert drive["results"] == []


def test_another_tenant_never_sees_alices_chunks(bob: Api, alice_docs: dict[str, str]) -> None:
    for body in (
        {"query": "granite quarried on the northern ridge"},
        {"query": "granite", "mode": "sparse"},
        {"query": "granite", "filters": {"document_ids": list(alice_docs.values())}},
    ):
        response = query(bob, **body)
        assert response.status_code == 200, response.text
        assert not {r["document"]["id"] for r in response.json()["results"]} & set(alice_docs.values())


def test_api_keys_search_for_their_owner_only(alice: Api, bob: Api, alice_docs: dict[str, str]) -> None:
    def key_of(api: Api) -> str:
        response = api.client.post("/api/keys", headers=api.headers, json={"name": "search bot"})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    body = {"query": "granite quarried on the northern ridge"}
    alice_key, bob_key = key_of(alice), key_of(bob)
    mine = alice.client.post("/api/query", headers={"Authorization": alice_key}, json=body)
    assert mine.status_code == 200, mine.text
    assert mine.json()["results"][0]["document"]["id"] == alice_docs["granite.txt"]
    for request in (body, {**body, "filters": {"document_ids": list(alice_docs.values())}}):
        theirs = bob.client.post("/api/query", headers={"Authorization": f"Bearer {bob_key}"}, json=request)
        assert theirs.status_code == 200, theirs.text
        assert not {r["document"]["id"] for r in theirs.json()["results"]} & set(alice_docs.values())


def test_a_tenant_with_no_documents_gets_an_empty_list(make_gateway: Any, tokens: Any, database: DatabaseUrls) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        row = conn.execute("select tests.create_user(%s)", (f"carol-{uuid.uuid4()}@example.com",)).fetchone()
    assert row is not None
    carol = Api(make_gateway(), tokens.es256(row[0]), row[0])
    for mode in ("hybrid", "dense", "sparse"):
        response = query(carol, query="granite quarried on the northern ridge", mode=mode)
        assert response.status_code == 200, response.text
        assert response.json()["results"] == []


def test_queries_are_logged_for_their_owner(alice: Api, bob: Api, database: DatabaseUrls) -> None:
    marker = f"log-check {uuid.uuid4()}"
    assert query(alice, query=marker, mode="dense", top_k=3).status_code == 200
    own = exposed_schema(
        database, alice.tenant_id, "select query, mode, result_count from api.query_log where query = %s", marker
    )
    assert len(own) == 1 and own[0]["mode"] == "dense" and own[0]["result_count"] is not None
    assert exposed_schema(database, bob.tenant_id, "select * from api.query_log where query = %s", marker) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": ""},
        {"query": "   \n\t "},
        {"query": "x" * 1001},
        {"query": 42},
        {"query": "q", "top_k": 0},
        {"query": "q", "top_k": 51},
        {"query": "q", "top_k": "10"},
        {"query": "q", "top_k": True},
        {"query": "q", "mode": "fuzzy"},
        {"query": "q", "explain": "yes"},
        {"query": "q", "filters": []},
        {"query": "q", "filters": {"colour": "red"}},
        {"query": "q", "filters": {"document_ids": ["not-a-uuid"]}},
        {"query": "q", "filters": {"document_ids": []}},
        {"query": "q", "filters": {"document_ids": "abc"}},
        {"query": "q", "filters": {"source": "email"}},
        {"query": "q", "filters": {"mime_types": [1, 2]}},
        {"query": "q", "filters": {"created_from": "yesterday"}},
        {"query": "q", "filters": {"created_from": "2024-01-01T00:00:00"}},
        {"query": "q", "filters": {"mime_types": ["text/plain\u0000"]}},
        {"query": "\u3000\ufeff"},
        {"query": "q", "extra": 1},
    ],
)
def test_bad_queries_are_422(alice: Api, body: dict[str, Any]) -> None:
    problem = assert_problem(query(alice, **body), 422, "invalid-parameter")
    assert problem["errors"] or problem["field"]


def test_an_inverted_time_range_is_valid_and_matches_nothing(alice: Api) -> None:
    # The schema cannot say "from before to", so the API does not refuse it: the range is empty.
    inverted = {"created_from": "2025-01-01T00:00:00Z", "created_to": "2024-01-01T00:00:00Z"}
    response = query(alice, query="granite", filters=inverted)
    assert response.status_code == 200, response.text
    assert response.json()["results"] == []


def test_time_bounds_at_the_edge_of_the_calendar_are_accepted(alice: Api) -> None:
    edges = {"created_from": "0001-01-01T00:00:00+14:00", "created_to": "9999-12-31T23:59:59-14:00"}
    assert query(alice, query="granite", filters=edges).status_code == 200


def test_malformed_json_is_400(alice: Api) -> None:
    headers = {**alice.headers, "Content-Type": "application/json"}
    assert_problem(alice.client.post("/api/query", headers=headers, content=b"{not json"), 400)
    assert_problem(alice.client.post("/api/query", headers=headers, content=b"[" * 100_000), 413)
    assert_problem(alice.client.post("/api/query", headers=headers, content=b'"just a string"'), 422)
