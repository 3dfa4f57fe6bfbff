"""The ONNX query embedder: equal to PyTorch, cached, refused when unfaithful; and batch sharing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from quarry import query_embedding
from quarry.embedding import DenseEmbedder, packaged_model_dir
from quarry.query_embedding import CoalescingEmbedder, QueryEmbedder

pytestmark = pytest.mark.slow

TEXTS = [
    "does vitamin D reduce fracture risk in older adults?",
    "x",
    "Ünïcödé 東京 — 🚀 émigré café",
    "long " * 500,
]


@pytest.fixture(scope="module")
def torch_embedder() -> DenseEmbedder:
    return DenseEmbedder()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def onnx_embedder(cache_dir: Path) -> QueryEmbedder:
    return QueryEmbedder(None, cache_dir)


def max_difference(left: Sequence[Sequence[float]], right: Sequence[Sequence[float]]) -> float:
    return max(abs(a - b) for x, y in zip(left, right, strict=True) for a, b in zip(x, y, strict=True))


def test_onnx_vectors_equal_the_documents_model(onnx_embedder: QueryEmbedder, torch_embedder: DenseEmbedder) -> None:
    assert onnx_embedder.backend == "onnx"
    assert onnx_embedder.model_name == torch_embedder.model_name
    vectors = [onnx_embedder.embed(text) for text in TEXTS]
    assert max_difference(vectors, torch_embedder.embed(TEXTS)) < 1e-5
    assert all(len(vector) == torch_embedder.dimensions for vector in vectors)


def test_the_export_is_cached_under_a_fingerprint_of_the_model(
    onnx_embedder: QueryEmbedder, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (meta,) = cache_dir.glob("*.json")
    assert meta.with_suffix(".onnx").is_file()
    assert not list(cache_dir.glob("*.partial"))
    assert json.loads(meta.read_text())["max_tokens"] == 256

    def no_export(*_: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(query_embedding, "export", no_export)
    assert QueryEmbedder(None, cache_dir).backend == "onnx"


def test_an_export_made_from_a_checkout_since_deleted_still_serves(
    onnx_embedder: QueryEmbedder, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is shared by every checkout on the machine; the model's files are found where
    they are now, not where the checkout that exported them had them."""
    (meta,) = cache_dir.glob("*.json")
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    old_entry = {**json.loads(meta.read_text()), "tokenizer_path": "/gone/checkout/.venv/model/tokenizer.json"}
    (shared / meta.name).write_text(json.dumps(old_entry))
    (shared / meta.with_suffix(".onnx").name).write_bytes(meta.with_suffix(".onnx").read_bytes())

    def no_export(*_: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(query_embedding, "export", no_export)
    embedder = QueryEmbedder(None, shared)
    assert embedder.backend == "onnx"
    assert embedder.embed("granite") == onnx_embedder.embed("granite")


def test_an_unfaithful_export_is_discarded_for_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query_embedding, "MAX_ABS_DIFFERENCE", -1.0)
    embedder = QueryEmbedder(None, tmp_path)
    assert embedder.backend == "torch"
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob("*.json"))
    assert len(embedder.embed("still answers")) == 384


def test_a_damaged_cached_export_is_exported_again(tmp_path: Path, onnx_embedder: QueryEmbedder) -> None:
    QueryEmbedder(None, tmp_path)
    (cached,) = tmp_path.glob("*.onnx")
    cached.write_bytes(b"not a model")
    embedder = QueryEmbedder(None, tmp_path)
    assert embedder.backend == "onnx"
    assert embedder.embed("granite") == onnx_embedder.embed("granite")


def test_a_model_onnx_runtime_cannot_load_is_served_by_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class RuntimeFailure(Exception):  # what onnxruntime raises derives from Exception only
        pass

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeFailure("[ONNXRuntimeError] : 1 : FAIL")

    monkeypatch.setattr(query_embedding, "OnnxEmbedder", refuse)
    embedder = QueryEmbedder(None, tmp_path)
    assert embedder.backend == "torch"
    assert len(embedder.embed("still answers")) == 384


def test_a_model_with_other_pooling_is_served_by_pytorch(tmp_path: Path) -> None:
    model = tmp_path / "cls-model"
    for source in packaged_model_dir().rglob("*"):
        if source.is_file():
            target = model / source.relative_to(packaged_model_dir())
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.unlink()
    pooling.write_text(json.dumps({**config, "pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    embedder = QueryEmbedder(model, tmp_path / "cache")
    assert embedder.backend == "torch"
    assert len(embedder.embed("cls pooled")) == 384


def test_concurrent_callers_share_batches_and_each_gets_its_own_vector() -> None:
    batches: list[int] = []

    def embed_many(texts: Sequence[str]) -> list[list[float]]:
        batches.append(len(texts))
        time.sleep(0.02)
        return [[float(len(text))] for text in texts]

    coalescer = CoalescingEmbedder(embed_many)
    results: dict[int, list[float]] = {}

    def call(n: int) -> None:
        results[n] = coalescer.embed_one("x" * n)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 33)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [float(n)] for n in range(1, 33)}
    assert sum(batches) == 32 and len(batches) < 32 and max(batches) > 1


def test_a_failed_batch_fails_its_callers_and_the_next_call_works() -> None:
    fail = threading.Event()
    fail.set()

    def embed_many(texts: Sequence[str]) -> list[list[float]]:
        if fail.is_set():
            time.sleep(0.02)
            raise RuntimeError("model crashed")
        return [[1.0] for _ in texts]

    coalescer = CoalescingEmbedder(embed_many)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            coalescer.embed_one("q")
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 8
    fail.clear()
    assert coalescer.embed_one("q") == [1.0]
