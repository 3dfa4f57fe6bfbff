"""Chunking with the real model's tokenizer, and chunking beside embedding in threads."""

# ruff: noqa: S311 (seeded text generation, not cryptography)

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid

import pytest

from quarry.documents.chunking import Chunker, chunk_id
from quarry.embedding import DenseEmbedder

MAX_TOKENS = 254
OVERLAP = 32
WORDS = [
    "the", "cell", "protein", "gene", "expression", "increased", "significantly", "among", "patients", "with",
    "chronic", "kidney", "disease", "whereas", "randomized", "controlled", "trials", "reported", "no",
    "difference", "in", "mortality", "after", "treatment",
]  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> DenseEmbedder:
    return DenseEmbedder()


@pytest.fixture
def chunker(embedder: DenseEmbedder) -> Chunker:
    return Chunker(embedder.independent_tokenizer(), max_tokens=MAX_TOKENS, overlap_tokens=OVERLAP)


def word_pieces(embedder: DenseEmbedder, text: str) -> list[int]:
    return list(embedder.independent_tokenizer()(text, add_special_tokens=False)["input_ids"])


def test_short_text_is_one_chunk_with_its_position(chunker: Chunker) -> None:
    chunks = chunker.chunk([("  A short passage.  ", {"page": 3})])
    assert [(c.ordinal, c.text, c.position) for c in chunks] == [(0, "A short passage.", {"page": 3})]
    assert chunks[0].token_count == 4


def test_blank_segments_give_no_chunks(chunker: Chunker) -> None:
    assert chunker.chunk([("", {}), ("   \n ", {})]) == []


def test_long_text_is_split_into_overlapping_chunks_that_fit_the_model(
    chunker: Chunker, embedder: DenseEmbedder
) -> None:
    text = " ".join(random.Random(1).choices(WORDS, k=1500))
    chunks = chunker.chunk([(text, {"section": "Results"})])
    assert len(chunks) >= 6
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        pieces = word_pieces(embedder, chunk.text)
        assert len(pieces) == chunk.token_count <= MAX_TOKENS
        assert chunk.position == {"section": "Results"}
    for before, after in itertools.pairwise(chunks):
        tail = " ".join(before.text.split()[-10:])
        assert tail in after.text, "consecutive chunks overlap"


def test_window_ends_snap_back_to_a_sentence_boundary(chunker: Chunker) -> None:
    sentences = [f"Sentence {n} says {' '.join(random.Random(n).choices(WORDS, k=20))}." for n in range(40)]
    chunks = chunker.chunk([(" ".join(sentences), {})])
    assert len(chunks) > 1
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_chunks_never_cross_segments(chunker: Chunker) -> None:
    chunks = chunker.chunk([("First page text.", {"page": 1}), ("Second page text.", {"page": 2})])
    assert [(c.text, c.position) for c in chunks] == [
        ("First page text.", {"page": 1}),
        ("Second page text.", {"page": 2}),
    ]


def test_chunk_ids_are_stable_per_tenant_document_and_ordinal() -> None:
    tenant, other_tenant, document = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert chunk_id(tenant, document, 0) == chunk_id(tenant, document, 0)
    ids = {
        chunk_id(tenant, document, 0),
        chunk_id(tenant, document, 1),
        chunk_id(tenant, uuid.uuid4(), 0),
        chunk_id(other_tenant, document, 0),  # the same document id in another tenant
    }
    assert len(ids) == 4


def test_independent_tokenizer_counts_like_the_model_but_shares_no_state(embedder: DenseEmbedder) -> None:
    own = embedder.independent_tokenizer()
    model_tokenizer = embedder._model.tokenizer
    assert own is not model_tokenizer and own.backend_tokenizer is not model_tokenizer.backend_tokenizer
    text = "Serum ferritin rose 3-fold (p<0.01) in CKD."
    assert (
        own(text, add_special_tokens=False)["input_ids"] == model_tokenizer(text, add_special_tokens=False)["input_ids"]
    )


def test_chunking_beside_embedding_never_breaks_a_batch(chunker: Chunker, embedder: DenseEmbedder) -> None:
    """Regression: chunking with the model's own tokenizer left concurrent batches unpadded."""
    deadline = time.monotonic() + 8
    errors: list[BaseException] = []
    batches = 0

    def chunk_repeatedly(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            chunker.chunk([(" ".join(rng.choices(WORDS, k=rng.randint(1, 40))), {})])

    def embed_repeatedly() -> None:
        nonlocal batches
        rng = random.Random(0)
        while time.monotonic() < deadline:
            texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 60))) for _ in range(4)]
            try:
                assert len(embedder.embed(texts)) == 4
            except Exception as error:
                errors.append(error)
            batches += 1

    threads = [threading.Thread(target=chunk_repeatedly, args=(n,)) for n in range(6)]
    threads.append(threading.Thread(target=embed_repeatedly))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batches > 0
    assert errors == []
