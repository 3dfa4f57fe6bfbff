"""What extraction produces: cleaned text segments with their position in the document."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from quarry.parsing.errors import UnreadableDocument

Position = dict[str, int | str]


@dataclass(frozen=True)
class Segment:
    text: str
    position: Position


@dataclass(frozen=True)
class Extracted:
    segments: list[Segment]
    page_count: int | None


_NEWLINES = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
# C0 and C1 controls except \t and \n, DEL, stray byte-order marks, and lone surrogates
# (which JSON escapes can produce and which Postgres cannot store).
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff\ud800-\udfff]")
_SPACE_RUNS = re.compile(r"[^\S\t\n]+")
_TRAILING_SPACES = re.compile(r" +\n")
_BLANK_LINE_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """NFC, \\n newlines, no control characters, single spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text)
    text = _NEWLINES.sub("\n", text)
    text = _CONTROLS.sub("", text)
    text = _SPACE_RUNS.sub(" ", text)
    text = _TRAILING_SPACES.sub("\n", text)
    text = _BLANK_LINE_RUNS.sub("\n\n", text)
    return text.strip(" \n")


def finish(raw_segments: Iterable[tuple[str, Position]], page_count: int | None, empty_reason: str) -> Extracted:
    """Clean every segment, drop the empty ones, and refuse a document with no text at all."""
    segments = []
    for text, position in raw_segments:
        cleaned = clean_text(text)
        if cleaned.strip():
            segments.append(Segment(text=cleaned, position=position))
    if not segments:
        raise UnreadableDocument(empty_reason)
    return Extracted(segments=segments, page_count=page_count)


class SectionWriter:
    """Collects a document's lines, starting a new segment at every heading.

    Text before the first heading forms a segment with an empty position; each
    heading opens a segment positioned {"section": heading} whose text begins
    with the heading line itself, so the heading stays searchable.
    """

    def __init__(self) -> None:
        self._segments: list[tuple[str, Position]] = []
        self._lines: list[str] = []
        self._position: Position = {}

    def add(self, text: str) -> None:
        self._lines.append(text)

    def start_section(self, heading: str, heading_line: str | None = None) -> None:
        title = " ".join(heading.split())
        if not title:
            self.add(heading_line if heading_line is not None else heading)
            return
        self._close()
        self._position = {"section": title}
        self._lines.append(heading_line if heading_line is not None else title)

    def segments(self) -> list[tuple[str, Position]]:
        self._close()
        return self._segments

    def _close(self) -> None:
        if self._lines:
            self._segments.append(("\n".join(self._lines), self._position))
        self._lines = []
