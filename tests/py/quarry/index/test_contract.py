"""One contract for both vector index backends: Qdrant Edge (in a tmp dir) and qdrant-client (`:memory:`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest
from qdrant_edge import Bm25

from quarry.index import IndexHit, IndexPoint, IndexUnavailable, SearchFilters, VectorIndex
from quarry.index.base import DENSE_SIZE
from quarry.index.edge import EdgeIndex
from quarry.index.edge_process import EdgeProcessIndex
from quarry.index.server import ServerIndex
from tests.py.support.net import free_port

BM25 = Bm25()
CREATED = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
FLOAT_TOLERANCE = 1e-6


# --- Synthetic data -------------------------------------------------------------------------


def unit_vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DENSE_SIZE)
    return vector / np.linalg.norm(vector)


def blend(towards: np.ndarray, noise_seed: int, noise: float) -> list[float]:
    """A unit vector whose cosine to `towards` falls as `noise` grows."""
    vector = towards + noise * unit_vector(noise_seed)
    return [float(x) for x in vector / np.linalg.norm(vector)]


def words(seed: int, count: int) -> str:
    """Filler text of made-up words that never collide with the query terms used below."""
    rng = np.random.default_rng(seed)
    letters = list("bcdfghjklmnpqrstvwxz")
    return " ".join("".join(rng.choice(letters, size=int(rng.integers(5, 9)))) for _ in range(count))


def point(
    text: str,
    dense: Sequence[float],
    *,
    document_id: UUID,
    ordinal: int = 0,
    source: str = "upload",
    mime_type: str = "text/plain",
    created_at: datetime = CREATED,
) -> IndexPoint:
    sparse = BM25.embed_document(text)
    return IndexPoint(
        id=uuid.uuid4(),
        document_id=document_id,
        dense=dense,
        sparse_indices=sparse.indices,
        sparse_values=sparse.values,
        source=source,
        mime_type=mime_type,
        created_at=created_at,
        ordinal=ordinal,
    )


def document(document_id: UUID, count: int, seed: int) -> list[IndexPoint]:
    return [
        point(words(seed + i, 12), blend(unit_vector(seed), seed + 1000 + i, 1.0), document_id=document_id, ordinal=i)
        for i in range(count)
    ]


def sparse_query(text: str) -> tuple[list[int], list[float]]:
    vector = BM25.embed_query(text)
    return vector.indices, vector.values


# --- Fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["edge", "edge-process", "server"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    backend: VectorIndex
    if request.param == "edge":
        backend = EdgeIndex(tmp_path / "shard")
    elif request.param == "edge-process":
        backend = EdgeProcessIndex(tmp_path / "shard")
    else:
        backend = ServerIndex(location=":memory:", collection="chunks_test")
    yield backend
    backend.close()


@pytest.fixture
def alice() -> UUID:
    return uuid.uuid4()


@pytest.fixture
def bob() -> UUID:
    return uuid.uuid4()


# --- Writes and counts ----------------------------------------------------------------------


def test_upsert_then_count(index: VectorIndex, alice: UUID) -> None:
    doc_a, doc_b = uuid.uuid4(), uuid.uuid4()
    first = document(doc_a, 5, seed=1)
    index.upsert(alice, first)
    index.upsert(alice, document(doc_b, 3, seed=2))

    assert index.count(alice) == 8
    assert index.count(alice, doc_a) == 5
    assert index.count(alice, uuid.uuid4()) == 0
    assert index.document_point_ids(alice, doc_a) == {p.id for p in first}


def test_reupserting_the_same_ids_overwrites(index: VectorIndex, alice: UUID) -> None:
    doc = uuid.uuid4()
    points = document(doc, 6, seed=3)
    index.upsert(alice, points)
    moved = [replace(p, source="drive") for p in points]
    index.upsert(alice, moved)
    index.upsert(alice, moved)

    assert index.count(alice) == 6
    assert index.document_point_ids(alice, doc) == {p.id for p in points}
    hits = index.search(
        alice,
        dense=points[0].dense,
        sparse=None,
        mode="dense",
        limit=10,
        filters=SearchFilters(sources=["drive"]),
    )
    assert {hit.id for hit in hits} == {p.id for p in points}


def test_delete_document_removes_only_that_document(index: VectorIndex, alice: UUID) -> None:
    doc_a, doc_b = uuid.uuid4(), uuid.uuid4()
    index.upsert(alice, document(doc_a, 4, seed=4) + document(doc_b, 2, seed=5))

    index.delete_document(alice, doc_a)
    index.delete_document(alice, doc_a)  # idempotent

    assert index.count(alice, doc_a) == 0
    assert index.document_point_ids(alice, doc_a) == set()
    assert index.count(alice) == 2


def test_delete_points(index: VectorIndex, alice: UUID) -> None:
    doc = uuid.uuid4()
    points = document(doc, 5, seed=6)
    index.upsert(alice, points)

    index.delete_points(alice, [points[0].id, points[1].id, uuid.uuid4()])
    index.delete_points(alice, [])

    assert index.document_point_ids(alice, doc) == {p.id for p in points[2:]}


def test_delete_tenant_removes_every_point_of_that_tenant_only(index: VectorIndex, alice: UUID, bob: UUID) -> None:
    index.upsert(alice, document(uuid.uuid4(), 3, seed=8) + document(uuid.uuid4(), 2, seed=9))
    index.upsert(bob, document(uuid.uuid4(), 2, seed=10))

    index.delete_tenant(alice)
    index.delete_tenant(alice)  # idempotent

    assert index.count(alice) == 0
    assert index.count(bob) == 2


# --- Tenant isolation -----------------------------------------------------------------------


def test_another_tenant_never_sees_or_touches_a_tenants_points(index: VectorIndex, alice: UUID, bob: UUID) -> None:
    alice_doc, bob_doc = uuid.uuid4(), uuid.uuid4()
    alice_points = [
        point(f"quarry granite {words(70 + i, 5)}", blend(unit_vector(7), 700 + i, 0.2), document_id=alice_doc)
        for i in range(6)
    ]
    bob_points = [
        point(f"quarry marble {words(80 + i, 5)}", blend(unit_vector(8), 800 + i, 0.2), document_id=bob_doc)
        for i in range(3)
    ]
    index.upsert(alice, alice_points)
    index.upsert(bob, bob_points)
    alice_ids = {p.id for p in alice_points}

    # Bob searches with Alice's vector, terms and document ids.
    for mode in ("hybrid", "dense", "sparse"):
        hits = index.search(
            bob, dense=alice_points[0].dense, sparse=sparse_query("quarry granite"), mode=mode, limit=50
        )
        assert {hit.id for hit in hits} <= {p.id for p in bob_points}
        assert (
            index.search(
                bob,
                dense=alice_points[0].dense,
                sparse=sparse_query("quarry granite"),
                mode=mode,
                limit=50,
                filters=SearchFilters(document_ids=[alice_doc]),
            )
            == []
        )
    assert index.count(bob, alice_doc) == 0
    assert index.document_point_ids(bob, alice_doc) == set()

    # Bob deletes by Alice's document id and point ids, and upserts over one of her point ids.
    index.delete_document(bob, alice_doc)
    index.delete_points(bob, list(alice_ids))
    hijack = replace(bob_points[0], id=alice_points[0].id, document_id=bob_doc)
    index.upsert(bob, [hijack])

    assert index.count(alice) == 6
    assert index.document_point_ids(alice, alice_doc) == alice_ids
    assert index.count(bob) == 3
    own = index.search(alice, dense=alice_points[0].dense, sparse=None, mode="dense", limit=1)
    assert own[0].id == alice_points[0].id
    assert own[0].document_id == alice_doc
    assert own[0].score == pytest.approx(1.0, abs=FLOAT_TOLERANCE)


def test_a_tenant_without_points_gets_empty_results(index: VectorIndex, alice: UUID, bob: UUID) -> None:
    index.upsert(bob, document(uuid.uuid4(), 3, seed=9))
    for mode in ("hybrid", "dense", "sparse"):
        hits = index.search(alice, dense=unit_vector(9).tolist(), sparse=sparse_query("anything"), mode=mode, limit=10)
        assert hits == []
    assert index.count(alice) == 0
    assert index.document_point_ids(alice, uuid.uuid4()) == set()
    index.delete_document(alice, uuid.uuid4())


def test_bm25_idf_is_computed_over_the_tenant_only(index: VectorIndex, alice: UUID, bob: UUID) -> None:
    doc = uuid.uuid4()
    index.upsert(
        alice, [point(f"granite {words(100 + i, 6 + i)}", unit_vector(i).tolist(), document_id=doc) for i in range(3)]
    )
    index.upsert(alice, [point(words(200 + i, 8), unit_vector(20 + i).tolist(), document_id=doc) for i in range(3)])
    query = sparse_query("granite")

    def alice_scores() -> dict[UUID, float]:
        hits = index.search(alice, dense=None, sparse=query, mode="sparse", limit=10)
        return {hit.id: hit.score for hit in hits}

    before = alice_scores()
    index.upsert(
        bob, [point("granite granite", unit_vector(300 + i).tolist(), document_id=uuid.uuid4()) for i in range(40)]
    )
    assert alice_scores() == pytest.approx(before, abs=FLOAT_TOLERANCE)

    # The IDF modifier is live: more of Alice's own documents without the term make it rarer.
    index.upsert(alice, [point(words(400 + i, 8), unit_vector(40 + i).tolist(), document_id=doc) for i in range(6)])
    after = alice_scores()
    assert after.keys() == before.keys()
    assert all(after[key] > before[key] + FLOAT_TOLERANCE for key in before)


# --- Filters inside the engine --------------------------------------------------------------

TARGET_CREATED = datetime(2024, 3, 1, tzinfo=UTC)
FILTER_CASES: dict[str, Callable[[UUID], SearchFilters]] = {
    "document_ids": lambda target_doc: SearchFilters(document_ids=[target_doc, uuid.uuid4()]),
    "sources": lambda _: SearchFilters(sources=["upload", "email"]),
    "mime_types": lambda _: SearchFilters(mime_types=["application/pdf"]),
    "created_range": lambda _: SearchFilters(
        created_from=datetime(2024, 1, 1, tzinfo=UTC), created_to=datetime(2024, 12, 31, tzinfo=UTC)
    ),
    "created_bounds_inclusive": lambda _: SearchFilters(created_from=TARGET_CREATED, created_to=TARGET_CREATED),
    "created_from_other_zone": lambda _: SearchFilters(
        created_from=datetime(2024, 2, 29, 15, tzinfo=timezone(timedelta(hours=-5)))
    ),
    "all_at_once": lambda target_doc: SearchFilters(
        document_ids=[target_doc], sources=["upload"], mime_types=["application/pdf"], created_to=datetime.now(UTC)
    ),
}


@pytest.mark.parametrize("case", FILTER_CASES)
def test_filters_are_applied_inside_the_engine(index: VectorIndex, alice: UUID, case: str) -> None:
    query_vector = unit_vector(11)
    decoy_doc, target_doc = uuid.uuid4(), uuid.uuid4()
    # Decoys outscore the targets on both vectors, so filtering a short unfiltered list would find nothing.
    decoys = [
        point(
            "granite quarry granite quarry",
            blend(query_vector, 1100 + i, 0.1),
            document_id=decoy_doc,
            source="drive",
            mime_type="text/html",
            created_at=datetime(2023, 6, 1, tzinfo=UTC),
        )
        for i in range(120)
    ]
    targets = [
        point(
            f"granite {words(1200 + i, 40)}",
            blend(query_vector, 1300 + i, 2.0),
            document_id=target_doc,
            ordinal=i,
            source="upload",
            mime_type="application/pdf",
            created_at=TARGET_CREATED,
        )
        for i in range(3)
    ]
    index.upsert(alice, decoys + targets)
    target_ids = {p.id for p in targets}
    sparse = sparse_query("granite quarry")

    for mode in ("hybrid", "dense", "sparse"):
        unfiltered = index.search(
            alice, dense=query_vector.tolist(), sparse=sparse, mode=mode, limit=10, prefetch_limit=10
        )
        assert not target_ids & {hit.id for hit in unfiltered}, "the decoys must outrank the targets"
        filtered = index.search(
            alice,
            dense=query_vector.tolist(),
            sparse=sparse,
            mode=mode,
            limit=3,
            prefetch_limit=3,
            filters=FILTER_CASES[case](target_doc),
        )
        assert {hit.id for hit in filtered} == target_ids, mode
        assert {hit.document_id for hit in filtered} == {target_doc}


def test_an_empty_filter_list_matches_nothing(index: VectorIndex, alice: UUID) -> None:
    points = document(uuid.uuid4(), 3, seed=12)
    index.upsert(alice, points)
    hits = index.search(
        alice, dense=points[0].dense, sparse=None, mode="dense", limit=5, filters=SearchFilters(document_ids=[])
    )
    assert hits == []


# --- Hybrid and explain ---------------------------------------------------------------------


def test_hybrid_finds_lexical_only_and_semantic_only_matches(index: VectorIndex, alice: UUID) -> None:
    doc = uuid.uuid4()
    query_vector = unit_vector(13)
    lexical = point(f"zeolite catalysis {words(1300, 10)}", blend(-query_vector, 1301, 0.05), document_id=doc)
    semantic = point(words(1302, 12), blend(query_vector, 1303, 0.05), document_id=doc)
    fillers = [point(words(1400 + i, 12), unit_vector(1500 + i).tolist(), document_id=doc) for i in range(40)]
    index.upsert(alice, [lexical, semantic, *fillers])

    hits = index.search(
        alice,
        dense=query_vector.tolist(),
        sparse=sparse_query("zeolite catalysis"),
        mode="hybrid",
        limit=5,
        prefetch_limit=10,
    )
    by_id = {hit.id: hit for hit in hits}
    assert {lexical.id, semantic.id} <= by_id.keys()
    assert (by_id[lexical.id].sparse_rank, by_id[lexical.id].dense_rank) == (1, None)
    assert (by_id[semantic.id].dense_rank, by_id[semantic.id].sparse_rank) == (1, None)


def rrf(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 / (k + rank) for rank in ranks if rank is not None)


@pytest.mark.parametrize("rrf_k", [1, 60])
def test_explain_ranks_reproduce_the_fused_order(index: VectorIndex, alice: UUID, rrf_k: int) -> None:
    doc = uuid.uuid4()
    rng = np.random.default_rng(14)
    vocabulary = ["granite", "quarry", "basalt"]
    points = []
    for i in range(60):
        # Distinct lengths and term mixes keep BM25 scores free of ties.
        terms = [str(term) for term in rng.choice(vocabulary, size=int(rng.integers(0, 4)))]
        points.append(
            point(" ".join([*terms, words(1600 + i, 5 + i)]), unit_vector(1700 + i).tolist(), document_id=doc)
        )
    index.upsert(alice, points)
    dense, sparse, prefetch = unit_vector(15).tolist(), sparse_query("granite quarry basalt"), 20

    hits = index.search(
        alice, dense=dense, sparse=sparse, mode="hybrid", limit=15, prefetch_limit=prefetch, rrf_k=rrf_k
    )
    dense_list = index.search(alice, dense=dense, sparse=None, mode="dense", limit=prefetch)
    sparse_list = index.search(alice, dense=None, sparse=sparse, mode="sparse", limit=prefetch)
    assert len({hit.score for hit in sparse_list}) == len(sparse_list), "test data must not tie"

    assert len(hits) == 15
    for hit in hits:
        assert hit.dense_rank is not None or hit.sparse_rank is not None
        assert hit.score == pytest.approx(rrf([hit.dense_rank, hit.sparse_rank], rrf_k), abs=FLOAT_TOLERANCE)
        assert_matches_single_list(hit.id, hit.dense_rank, hit.dense_score, dense_list)
        assert_matches_single_list(hit.id, hit.sparse_rank, hit.sparse_score, sparse_list)
    recomputed = [rrf([hit.dense_rank, hit.sparse_rank], rrf_k) for hit in hits]
    # Qdrant returns tied fused scores in no fixed order: only a strict inversion is an error.
    assert all(later <= earlier + 1e-9 for earlier, later in pairwise(recomputed))

    # The fused list is the top of RRF over both single-vector lists, not just internally ordered.
    dense_ranks = {hit.id: rank for rank, hit in enumerate(dense_list, start=1)}
    sparse_ranks = {hit.id: rank for rank, hit in enumerate(sparse_list, start=1)}
    left_out = (dense_ranks.keys() | sparse_ranks.keys()) - {hit.id for hit in hits}
    best_left_out = max(rrf([dense_ranks.get(i), sparse_ranks.get(i)], rrf_k) for i in left_out)
    assert min(recomputed) >= best_left_out - 1e-9


def test_hybrid_without_explain_fuses_the_same_but_reports_no_ranks(index: VectorIndex, alice: UUID) -> None:
    doc = uuid.uuid4()
    points = [
        point(f"basalt {words(1800 + i, 6 + i)}", unit_vector(1900 + i).tolist(), document_id=doc) for i in range(30)
    ]
    index.upsert(alice, points)
    query = {"dense": unit_vector(16).tolist(), "sparse": sparse_query("basalt"), "mode": "hybrid", "limit": 10}

    explained = index.search(alice, **query, prefetch_limit=20)
    plain = index.search(alice, **query, prefetch_limit=20, explain=False)

    # Tied fused scores come back in no fixed order, so ties at the cut-off may swap places.
    assert [hit.score for hit in plain] == [hit.score for hit in explained]
    cutoff = explained[-1].score
    assert {(hit.id, hit.score) for hit in plain if hit.score > cutoff} == {
        (hit.id, hit.score) for hit in explained if hit.score > cutoff
    }
    assert all(
        (hit.dense_rank, hit.dense_score, hit.sparse_rank, hit.sparse_score) == (None, None, None, None)
        for hit in plain
    )
    assert any(hit.dense_rank is not None for hit in explained)


def assert_matches_single_list(
    point_id: UUID, rank: int | None, score: float | None, single: Sequence[IndexHit]
) -> None:
    positions = {hit.id: (position, hit.score) for position, hit in enumerate(single, start=1)}
    if rank is None:
        assert score is None
        assert point_id not in positions
    else:
        assert positions[point_id][0] == rank
        assert score == pytest.approx(positions[point_id][1], abs=FLOAT_TOLERANCE)


def test_single_vector_modes_explain_themselves(index: VectorIndex, alice: UUID) -> None:
    points = document(uuid.uuid4(), 8, seed=16)
    index.upsert(alice, points)
    dense_hits = index.search(alice, dense=points[3].dense, sparse=None, mode="dense", limit=4)
    assert dense_hits[0].id == points[3].id
    assert [(h.dense_rank, h.dense_score, h.sparse_rank) for h in dense_hits] == [
        (rank, h.score, None) for rank, h in enumerate(dense_hits, start=1)
    ]
    assert [h.score for h in dense_hits] == sorted((h.score for h in dense_hits), reverse=True)

    query = sparse_query(" ".join(words(16 + 2, 12).split()[:3]))
    sparse_hits = index.search(alice, dense=None, sparse=query, mode="sparse", limit=4)
    assert sparse_hits[0].id == points[2].id
    assert [(h.sparse_rank, h.sparse_score, h.dense_rank) for h in sparse_hits] == [
        (rank, h.score, None) for rank, h in enumerate(sparse_hits, start=1)
    ]


def test_chunks_and_queries_without_terms(index: VectorIndex, alice: UUID) -> None:
    doc = uuid.uuid4()
    others = document(doc, 3, seed=21)
    termless = replace(others[0], id=uuid.uuid4(), dense=unit_vector(22).tolist(), sparse_indices=[], sparse_values=[])
    index.upsert(alice, [termless, *others])
    assert index.count(alice) == 4

    hits = index.search(alice, dense=termless.dense, sparse=([], []), mode="hybrid", limit=2)
    assert (hits[0].id, hits[0].dense_rank, hits[0].sparse_rank) == (termless.id, 1, None)
    assert index.search(alice, dense=None, sparse=([], []), mode="sparse", limit=5) == []


# --- Input checks and concurrency -----------------------------------------------------------


def test_bad_input_is_refused_before_the_engine(index: VectorIndex, alice: UUID) -> None:
    good = document(uuid.uuid4(), 1, seed=17)[0]
    with pytest.raises(TypeError, match="UUID"):
        index.upsert(str(alice), [good])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dimensions"):
        index.upsert(alice, [replace(good, dense=good.dense[:10])])
    with pytest.raises(ValueError, match="timezone-aware"):
        index.upsert(alice, [replace(good, created_at=datetime(2024, 1, 1))])
    with pytest.raises(ValueError, match="twice"):
        index.upsert(alice, [good, good])
    with pytest.raises(ValueError, match="sparse"):
        index.upsert(alice, [replace(good, sparse_values=[])])
    dense, sparse = good.dense, sparse_query("granite")
    with pytest.raises(ValueError, match="mode"):
        index.search(alice, dense=dense, sparse=sparse, mode="fuzzy", limit=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rrf_k"):
        index.search(alice, dense=dense, sparse=sparse, mode="hybrid", limit=5, rrf_k=0)
    with pytest.raises(TypeError, match="UUIDs"):
        index.upsert(alice, [replace(good, document_id=str(good.document_id))])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a string"):
        index.search(alice, dense=dense, sparse=sparse, mode="dense", limit=5, filters=SearchFilters(sources="upload"))
    filters = SearchFilters(document_ids=[str(good.document_id)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="UUIDs"):
        index.search(alice, dense=dense, sparse=sparse, mode="dense", limit=5, filters=filters)
    with pytest.raises(ValueError, match="sparse query"):
        index.search(alice, dense=good.dense, sparse=None, mode="hybrid", limit=5)
    assert index.count(alice) == 0


def test_concurrent_writers_and_readers(index: VectorIndex) -> None:
    tenants = [uuid.uuid4() for _ in range(4)]

    def work(tenant: UUID) -> int:
        doc = uuid.uuid4()
        for batch in range(5):
            index.upsert(tenant, document(doc, 5, seed=2000 + batch * 10))
            hits = index.search(
                tenant, dense=unit_vector(1).tolist(), sparse=sparse_query("granite"), mode="hybrid", limit=3
            )
            assert {hit.document_id for hit in hits} == {doc}
        return index.count(tenant)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(work, tenants)) == [25] * 4


# --- Backend specifics ----------------------------------------------------------------------


def test_edge_keeps_data_across_close_and_reopen(tmp_path: Path, alice: UUID) -> None:
    doc = uuid.uuid4()
    points = document(doc, 5, seed=18)
    first = EdgeIndex(tmp_path / "shard")
    first.upsert(alice, points)
    first.close()
    first.close()

    second = EdgeIndex(tmp_path / "shard")
    try:
        assert second.document_point_ids(alice, doc) == {p.id for p in points}
        hits = second.search(alice, dense=points[0].dense, sparse=None, mode="dense", limit=1)
        assert hits[0].id == points[0].id
    finally:
        second.close()
    with pytest.raises(IndexUnavailable, match="closed"):
        first.count(alice)


def test_edge_shard_has_a_single_owner(tmp_path: Path) -> None:
    owner = EdgeIndex(tmp_path / "shard")
    try:
        with pytest.raises(IndexUnavailable, match="another process"):
            EdgeIndex(tmp_path / "shard")
    finally:
        owner.close()
    EdgeIndex(tmp_path / "shard").close()


def test_edge_optimize_keeps_results(tmp_path: Path, alice: UUID) -> None:
    index = EdgeIndex(tmp_path / "shard")
    try:
        points = [p for d in range(10) for p in document(uuid.uuid4(), 30, seed=3000 + d * 50)]
        index.upsert(alice, points)
        dense, sparse = points[7].dense, sparse_query(words(3007, 12))
        before = index.search(alice, dense=dense, sparse=sparse, mode="hybrid", limit=10)
        index.optimize()
        index.optimize()
        assert index.count(alice) == 300
        after = index.search(alice, dense=dense, sparse=sparse, mode="hybrid", limit=10)
        assert after[0].id == before[0].id == points[7].id
    finally:
        index.close()


def test_server_unreachable_is_index_unavailable(alice: UUID) -> None:
    index = ServerIndex(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(IndexUnavailable, match="unreachable"):
            index.count(alice)
        with pytest.raises(IndexUnavailable):
            index.upsert(alice, document(uuid.uuid4(), 1, seed=19))
        with pytest.raises(IndexUnavailable):
            index.search(alice, dense=unit_vector(1).tolist(), sparse=None, mode="dense", limit=1)
    finally:
        index.close()


def test_a_closed_index_is_unavailable(index: VectorIndex, alice: UUID) -> None:
    index.close()
    with pytest.raises(IndexUnavailable, match="closed"):
        index.count(alice)
    with pytest.raises(IndexUnavailable, match="closed"):
        index.upsert(alice, document(uuid.uuid4(), 1, seed=20))
    index.close()


def test_server_needs_exactly_one_location() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ServerIndex()
    with pytest.raises(ValueError, match="exactly one"):
        ServerIndex("http://127.0.0.1:6333", location=":memory:")
