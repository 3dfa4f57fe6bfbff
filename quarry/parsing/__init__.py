"""Uploads in, text out: content sniffing (sniff) and text extraction (extract).

sniff runs at upload and raises UnsupportedDocument (HTTP 415); extract runs
in the worker and raises UnreadableDocument (the document fails with reason).
"""

from worker.parsing.errors import UnreadableDocument, UnsupportedDocument
from worker.parsing.extract import Extracted, Segment, extract
from worker.parsing.sniff import FORMATS, Sniffed, sniff

__all__ = [
    "FORMATS",
    "Extracted",
    "Segment",
    "Sniffed",
    "UnreadableDocument",
    "UnsupportedDocument",
    "extract",
    "sniff",
]
