"""Text extraction: a document of a sniffed format in, cleaned text segments with positions out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quarry.parsing.epub import extract_epub
from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.htmltext import extract_html
from quarry.parsing.office import extract_docx, extract_pptx, extract_xlsx
from quarry.parsing.pdf import extract_pdf
from quarry.parsing.segments import Extracted, Segment
from quarry.parsing.textfiles import extract_csv, extract_json, extract_md, extract_txt

__all__ = ["Extracted", "Segment", "extract"]

_EXTRACTORS: dict[str, Callable[[Path], Extracted]] = {
    "pdf": extract_pdf,
    "txt": extract_txt,
    "md": extract_md,
    "json": extract_json,
    "docx": extract_docx,
    "pptx": extract_pptx,
    "xlsx": extract_xlsx,
    "csv": extract_csv,
    "html": extract_html,
    "epub": extract_epub,
}


def extract(path: Path, fmt: str) -> Extracted:
    """The text of the document at path, read as fmt (a key of sniff.FORMATS).

    Raises UnreadableDocument when the document cannot yield text, for good;
    OSError and MemoryError propagate, since a retry may succeed.
    """
    extractor = _EXTRACTORS.get(fmt)
    if extractor is None:
        raise ValueError(f"unknown document format {fmt!r}")
    if path.stat().st_size == 0:
        raise UnreadableDocument("The file is empty.")
    return extractor(path)
