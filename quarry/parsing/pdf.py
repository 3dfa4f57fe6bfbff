"""PDF text, one segment per page, through pypdf."""

from __future__ import annotations

import logging
from pathlib import Path

from pypdf import PasswordType, PdfReader

from quarry.parsing.errors import UnreadableDocument, parser_failures
from quarry.parsing.segments import Extracted, Position, finish

# pypdf logs a warning for every malformed object it works around; a damaged
# upload would otherwise write hundreds of lines to the worker's log.
logging.getLogger("pypdf").setLevel(logging.ERROR)
logger = logging.getLogger("quarry.quarry.parsing")

DAMAGED = "The PDF is damaged or not a PDF, and could not be read."
ENCRYPTED = "The PDF is password-protected."
NO_TEXT_LAYER = "The PDF has no text layer (scanned images?); OCR is not supported."


def extract_pdf(path: Path) -> Extracted:
    with parser_failures(DAMAGED):
        reader = PdfReader(path)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnreadableDocument(ENCRYPTED)
        pages = list(reader.pages)
    if not pages:
        raise UnreadableDocument(DAMAGED)
    raw_segments: list[tuple[str, Position]] = []
    unreadable_pages = 0
    for number, page in enumerate(pages, start=1):
        try:
            with parser_failures(DAMAGED):
                raw_segments.append((page.extract_text(), {"page": number}))
        except UnreadableDocument:
            # One broken page should not cost the reader the others.
            unreadable_pages += 1
    if unreadable_pages:
        logger.info("skipped %d of %d unreadable PDF pages", unreadable_pages, len(pages))
    return finish(raw_segments, len(pages), DAMAGED if unreadable_pages else NO_TEXT_LAYER)
