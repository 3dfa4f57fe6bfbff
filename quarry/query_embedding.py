"""Query embedding on ONNX Runtime: the documents' model, a third of the latency.

A search embeds one short text, where PyTorch eager spends most of its time in
per-operator overhead (~12 ms for a 30-token query here; ONNX Runtime ~5 ms).
The gateway exports the sentence-transformers model it would otherwise load
(transformer, mean pooling, normalisation) to ONNX once, caches the file under
a fingerprint of the model's files and the exporter, and checks the exported
model against PyTorch on probe texts before trusting it.  Models it cannot
export faithfully (other pooling, no fast tokenizer, a mismatch) fall back to
PyTorch, so results never depend on which path ran.

Concurrent queries share one model call: a thread that arrives while another
is embedding waits and is served by the next batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

from quarry.embedding import DenseEmbedder, SparseEmbedder, packaged_model_dir
from quarry.settings import Settings

logger = logging.getLogger("quarry.embedding")

ONNX_OPSET = 17
EXPORT_FORMAT = 1  # bump when the exported graph changes
MAX_ABS_DIFFERENCE = 1e-4
PROBES = (
    "a",
    "How do I configure the worker?",
    "Serum ferritin rose threefold (p<0.01) in patients with chronic kidney disease; "
    "treatment with erythropoietin did not change mortality over five years of follow-up.",
    "Übersetzung: café naïve 東京 🚀",
    "truncated " * 400,  # longer than the model's window
)
MODEL_FILE_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")


class ExportUnsupported(Exception):
    """The model cannot be served from ONNX exactly as sentence-transformers would."""


@dataclass(frozen=True)
class ExportedModel:
    onnx_path: Path
    tokenizer_path: Path
    inputs: tuple[str, ...]
    max_tokens: int
    pad_id: int
    pad_token: str
    dimensions: int
    model_name: str

    @classmethod
    def read(cls, meta_path: Path, model_dir: Path) -> ExportedModel:
        """An export made earlier of the model now in model_dir (the fingerprint in meta_path's
        name says its files are the same).  The tokenizer is read from model_dir, never from the
        directory the export was made from: that may have been another checkout, long deleted."""
        meta = json.loads(meta_path.read_text())
        return cls(
            onnx_path=meta_path.with_suffix(".onnx"),
            tokenizer_path=model_dir / "tokenizer.json",
            inputs=tuple(meta["inputs"]),
            max_tokens=int(meta["max_tokens"]),
            pad_id=int(meta["pad_id"]),
            pad_token=str(meta["pad_token"]),
            dimensions=int(meta["dimensions"]),
            model_name=str(meta["model_name"]),
        )


def model_fingerprint(model_dir: Path) -> str:
    """Changes whenever a file that shapes the vectors, or the exporter, changes.

    Versions come from package metadata: importing torch would cost the gateway
    seconds and hundreds of MB at every start, even with the export cached.
    """
    exporter = f"{EXPORT_FORMAT}:{ONNX_OPSET}:{package_version('torch')}:{package_version('onnxruntime')}"
    digest = hashlib.sha256(exporter.encode())
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in MODEL_FILE_SUFFIXES:
            digest.update(str(path.relative_to(model_dir)).encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def _check_structure(model_dir: Path) -> None:
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
    if kinds != ["Transformer", "Pooling", "Normalize"]:
        raise ExportUnsupported(f"modules {kinds}, not Transformer, Pooling, Normalize")
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
    enabled = [key for key, value in pooling.items() if key.startswith("pooling_mode_") and value is True]
    if enabled != ["pooling_mode_mean_tokens"]:
        raise ExportUnsupported(f"pooling {enabled}")
    if not (model_dir / "tokenizer.json").is_file():
        raise ExportUnsupported("no tokenizer.json (fast tokenizer)")


def export(model_dir: Path, meta_path: Path) -> ExportedModel:
    """Export the model to meta_path's .onnx sibling and verify it against PyTorch."""
    import torch

    _check_structure(model_dir)
    reference = DenseEmbedder(model_dir if model_dir != packaged_model_dir() else None)
    transformer = reference.sentence_transformer[0].auto_model.eval()
    tokenizer = reference.independent_tokenizer()
    sample = tokenizer(["an example query"], return_tensors="pt")
    inputs = tuple(name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            named = dict(zip(inputs, tensors, strict=True))
            tokens = self.transformer(**named).last_hidden_state
            mask = named["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    meta_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = meta_path.with_suffix(".onnx")
    partial = onnx_path.with_name(f"{onnx_path.name}.{os.getpid()}.partial")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in inputs}
    # The tracer warns about shape branches that are constant for this graph; the probes below check it.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled().eval(),
            tuple(sample[name] for name in inputs),
            str(partial),
            input_names=list(inputs),
            output_names=["embedding"],
            dynamic_axes={**dynamic, "embedding": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    exported = ExportedModel(
        onnx_path=onnx_path,
        tokenizer_path=model_dir / "tokenizer.json",
        inputs=inputs,
        max_tokens=reference.max_tokens,
        pad_id=int(tokenizer.pad_token_id or 0),
        pad_token=str(tokenizer.pad_token or "[PAD]"),
        dimensions=reference.dimensions,
        model_name=reference.model_name,
    )
    try:
        candidate = OnnxEmbedder(exported, onnx_path=partial)
        expected = reference.embed(PROBES)
        actual = candidate.embed(PROBES)
        pairs = zip(expected, actual, strict=True)
        worst = max(abs(a - b) for want, got in pairs for a, b in zip(want, got, strict=True))
        if worst > MAX_ABS_DIFFERENCE:
            raise ExportUnsupported(f"ONNX differs from PyTorch by {worst:.2e}")
        os.replace(partial, onnx_path)
    finally:
        partial.unlink(missing_ok=True)
    meta = {
        "inputs": list(inputs),
        "max_tokens": exported.max_tokens,
        "pad_id": exported.pad_id,
        "pad_token": exported.pad_token,
        "dimensions": exported.dimensions,
        "model_name": exported.model_name,
    }
    partial_meta = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.partial")
    partial_meta.write_text(json.dumps(meta, indent=2))
    os.replace(partial_meta, meta_path)
    return exported


class OnnxEmbedder:
    """The exported model on ONNX Runtime's CPU provider; unit vectors, like DenseEmbedder."""

    def __init__(self, exported: ExportedModel, *, onnx_path: Path | None = None, threads: int | None = None) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning threads wait for work by burning a core.  Beside other busy processes (a worker
        # parsing, Postgres) that doubled a query's embedding time: idle, it saves about 1 ms.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(onnx_path or exported.onnx_path), options, providers=["CPUExecutionProvider"]
        )
        # Configured once here and never changed: encode_batch is then free of shared-state writes.
        self._tokenizer = Tokenizer.from_file(str(exported.tokenizer_path))
        self._tokenizer.enable_truncation(exported.max_tokens)
        self._tokenizer.enable_padding(pad_id=exported.pad_id, pad_token=exported.pad_token)
        self._inputs = exported.inputs
        self.model_name = exported.model_name
        self.dimensions = exported.dimensions

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(list(texts))
        arrays = {
            "input_ids": np.array([encoding.ids for encoding in encodings], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids for encoding in encodings], dtype=np.int64),
        }
        (vectors,) = self._session.run(["embedding"], {name: arrays[name] for name in self._inputs})
        return [vector.tolist() for vector in vectors]


class _Waiting:
    __slots__ = ("error", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: list[float] | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.vector is not None or self.error is not None


class CoalescingEmbedder:
    """Serves concurrent single-text calls from shared model batches (blocking; call from threads).

    The first caller to find the model idle runs it for everything waiting;
    the others sleep until their text's vector is ready.  A lone caller pays
    no waiting at all.
    """

    def __init__(self, embed_many: Callable[[Sequence[str]], list[list[float]]], *, max_batch: int = 32) -> None:
        self._embed_many = embed_many
        self._max_batch = max_batch
        self._condition = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._running = False

    def embed_one(self, text: str) -> list[float]:
        mine = _Waiting(text)
        with self._condition:
            self._waiting.append(mine)
            while self._running and not mine.done:
                self._condition.wait()
            if not mine.done:
                self._running = True
        while not mine.done:
            with self._condition:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            try:
                vectors = self._embed_many([waiting.text for waiting in batch])
                for waiting, vector in zip(batch, vectors, strict=True):
                    waiting.vector = vector
            except BaseException as error:  # every caller in the batch sees the failure
                for waiting in batch:
                    waiting.error = error
            with self._condition:
                if mine.done:
                    self._running = False
                self._condition.notify_all()
        if mine.error is not None:
            raise mine.error
        assert mine.vector is not None
        return mine.vector


class QueryEmbedder:
    """What the gateway embeds queries with: ONNX when the model exports faithfully, else PyTorch."""

    def __init__(self, model_dir: Path | None, cache_dir: Path) -> None:
        self.backend, embed_many, self.model_name = _load(model_dir, cache_dir)
        self._coalescer = CoalescingEmbedder(embed_many)

    def embed(self, text: str) -> list[float]:
        return self._coalescer.embed_one(text)


def _load(model_dir: Path | None, cache_dir: Path) -> tuple[str, Callable[[Sequence[str]], list[list[float]]], str]:
    directory = model_dir or packaged_model_dir()
    try:
        meta_path = cache_dir / f"{directory.name}-{model_fingerprint(directory)}.json"
        onnx_embedder = _cached_onnx(directory, meta_path)
        if onnx_embedder is None:
            logger.info("exporting %s to ONNX for query embedding (once per model)", directory.name)
            onnx_embedder = OnnxEmbedder(export(directory, meta_path))
        return "onnx", onnx_embedder.embed, onnx_embedder.model_name
    # ONNX Runtime's own errors (a model it cannot load) derive from Exception alone.
    except Exception as error:  # whatever stops ONNX, PyTorch still serves the model
        logger.warning("query embedding falls back to PyTorch for %s: %s", directory.name, error)
    torch_embedder = DenseEmbedder(model_dir)
    return "torch", torch_embedder.embed, torch_embedder.model_name


def _cached_onnx(directory: Path, meta_path: Path) -> OnnxEmbedder | None:
    """The export cached by an earlier start, or None (none, or one that no longer loads: removed)."""
    onnx_path = meta_path.with_suffix(".onnx")
    if not (meta_path.is_file() and onnx_path.is_file()):
        return None
    try:
        return OnnxEmbedder(ExportedModel.read(meta_path, directory))
    except Exception as error:  # a damaged cache is exported again, whatever broke it
        logger.warning("the cached ONNX export %s does not load (%s); exporting it again", onnx_path, error)
        meta_path.unlink(missing_ok=True)
        onnx_path.unlink(missing_ok=True)
        return None


_loading = threading.Lock()
_loaded: dict[tuple[Path | None, Path], tuple[QueryEmbedder, SparseEmbedder]] = {}


def query_embedders(model_dir: Path | None, cache_dir: Path) -> tuple[QueryEmbedder, SparseEmbedder]:
    """The gateway's embedders, loaded (and exported, the first time) once per process."""
    with _loading:
        key = (model_dir, cache_dir)
        if key not in _loaded:
            _loaded[key] = (QueryEmbedder(model_dir, cache_dir), SparseEmbedder())
        return _loaded[key]


def warm_up_query_embedders(settings: Settings) -> None:
    try:
        query_embedders(settings.embedding_model_dir, settings.model_cache_dir)
    except Exception:  # the first search retries and reports it
        logger.exception("could not load the query embedding model")
