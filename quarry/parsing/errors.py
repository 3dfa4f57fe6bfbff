"""The two ways a document can be refused, and what each means to the caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UnsupportedDocument(Exception):
    """Rejected at upload (HTTP 415): the content is not a format Quarry reads.

    reason is one sentence a user understands; detected names what the file
    looks like instead (for example "ELF executable"), when that is known.
    """

    def __init__(self, reason: str, *, detected: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detected = detected


class UnreadableDocument(Exception):
    """Parsing failed for good: retrying cannot help, the document becomes failed(reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def parser_failures(reason: str) -> Iterator[None]:
    """Turn a third-party parser's crash on hostile input into UnreadableDocument(reason).

    Parsers of untrusted files fail in many ways (KeyError, lxml syntax errors,
    RecursionError...), all permanent. I/O and memory errors are not the
    document's fault, so they propagate and the job can be retried.
    """
    try:
        yield
    except (UnreadableDocument, OSError, MemoryError):
        raise
    except Exception as error:
        raise UnreadableDocument(reason) from error
