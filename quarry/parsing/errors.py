"""The two ways a document can be refused, and what each means to the caller."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from quarry.errors import Invalid, Unsupported


class UnsupportedDocument(Unsupported):
    """Rejected at upload (HTTP 415): the content is not a format Quarry reads.

    reason is one sentence a user understands; detected names what the file
    looks like instead (for example "ELF executable"), when that is known.
    """

    slug = "unsupported-document"

    def __init__(self, reason: str, *, detected: str | None = None) -> None:
        super().__init__(reason, extensions={"detected": detected} if detected else None)
        self.detected = detected

    @property
    def reason(self) -> str:
        return self.detail


class UnreadableDocument(Invalid):
    """Parsing failed for good: retrying cannot help, the document becomes failed(reason)."""

    slug = "unreadable-document"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)

    @property
    def reason(self) -> str:
        return self.detail


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
