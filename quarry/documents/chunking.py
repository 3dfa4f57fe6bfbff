"""Token-aware chunking: passages that fit the embedding model, with overlap.

Lengths are counted in the model's own word-pieces, so no chunk is silently
truncated by the model.  Chunks never cross a segment (page, slide, sheet,
section), so each keeps the position it came from; a window's end snaps back
to a sentence or line boundary when one is near, so chunks rarely cut a
sentence in half.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A boundary is an end of sentence or a line break: the offset just after it.
_BOUNDARY = re.compile(r"(?<=[.!?;:])\s+|\n+")


class Tokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class ChunkText:
    ordinal: int
    text: str
    token_count: int
    position: dict[str, int | str]


def chunk_id(tenant_id: uuid.UUID, document_id: uuid.UUID, ordinal: int) -> uuid.UUID:
    """Stable per (tenant, document, ordinal): re-running a job overwrites, never duplicates.

    Chunk ids are the index's point ids, a namespace all tenants share, so the
    tenant is part of the name; app.chunks' check constraint chunks_id_derived
    computes the same UUIDv5 and refuses any other id.
    """
    return uuid.uuid5(tenant_id, f"{document_id}:{ordinal}")


class Chunker:
    def __init__(self, tokenizer: Tokenizer, *, max_tokens: int, overlap_tokens: int) -> None:
        if not 0 <= overlap_tokens < max_tokens // 2:
            raise ValueError("overlap must be under half the chunk size")
        self._tokenizer = tokenizer
        # Jobs chunk in worker threads; the tokenizer's settings are shared state.
        self._tokenizer_lock = threading.Lock()
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def chunk(self, segments: Sequence[tuple[str, dict[str, int | str]]]) -> list[ChunkText]:
        chunks: list[ChunkText] = []
        for text, position in segments:
            for piece, tokens in self._split(text):
                chunks.append(ChunkText(len(chunks), piece, tokens, dict(position)))
        return chunks

    def _split(self, text: str) -> list[tuple[str, int]]:
        with self._tokenizer_lock:
            encoding = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets: list[tuple[int, int]] = [tuple(pair) for pair in encoding["offset_mapping"]]
        if not offsets:
            return []
        if len(offsets) <= self.max_tokens:
            return [(text.strip(), len(offsets))]
        boundaries = [match.end() for match in _BOUNDARY.finditer(text)]
        pieces: list[tuple[str, int]] = []
        start = 0
        while start < len(offsets):
            end = min(start + self.max_tokens, len(offsets))
            if end < len(offsets):
                end = self._snap_to_boundary(offsets, boundaries, start, end)
            piece = text[offsets[start][0] : offsets[end - 1][1]].strip()
            if piece:
                pieces.append((piece, end - start))
            if end >= len(offsets):
                break
            start = max(end - self.overlap_tokens, start + 1)
        return pieces

    def _snap_to_boundary(self, offsets: list[tuple[int, int]], boundaries: list[int], start: int, end: int) -> int:
        """Move end back to the last token before a boundary, within the window's last third."""
        earliest = start + (2 * (end - start)) // 3
        window_start_char, window_end_char = offsets[earliest][0], offsets[end - 1][1]
        candidates = [b for b in boundaries if window_start_char < b <= window_end_char]
        if not candidates:
            return end
        boundary = candidates[-1]
        for index in range(end - 1, earliest - 1, -1):
            if offsets[index][1] <= boundary:
                return index + 1
        return end
