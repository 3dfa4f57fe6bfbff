"""Receive a multipart upload as a stream, straight to a temporary file.

The body is never held in memory: parts are parsed as they arrive and the file
part is written to disk while its size is counted and hashed; past the cap
the upload is refused at once (413), without reading the rest.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import Problem

FILE_FIELD = "file"
TEXT_FIELDS = frozenset({"title"})
MAX_TEXT_FIELD_BYTES = 4096
MAX_TITLE_CHARS = 255
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass
class ReceivedUpload:
    path: Path
    filename: str | None
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)

    def title(self) -> str:
        """A display title: the `title` field, else the file's base name, cleaned."""
        for candidate in (self.fields.get("title"), self.filename):
            cleaned = clean_title(candidate or "")
            if cleaned:
                return cleaned
        return "Untitled document"


def clean_title(raw: str) -> str:
    name = re.split(r"[/\\]", raw)[-1]
    name = unicodedata.normalize("NFC", _CONTROL_CHARACTERS.sub("", name))
    name = " ".join(name.split())
    return name[:MAX_TITLE_CHARS].strip()


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        "file-too-large",
        f"The file is larger than the upload limit of {limit} bytes ({limit / 1024 / 1024:.0f} MiB).",
        extensions={"limit_bytes": limit},
    )


class _UploadSink:
    """The parser's callbacks: route part bytes to the file or to small text fields."""

    def __init__(self, destination: Path, max_bytes: int) -> None:
        self._destination = destination
        self._max_bytes = max_bytes
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part_name: str | None = None
        self._text: bytearray | None = None
        self._file: IO[bytes] | None = None
        self._digest = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self.saw_file = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _part_begin(self) -> None:
        self._headers = {}
        self._part_name = None
        self._text = None

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise Problem(422, "malformed-upload", "Every part needs `Content-Disposition: form-data; name=…`.")
        self._part_name = params[b"name"].decode("utf-8", "replace")
        if self._part_name == FILE_FIELD:
            if self.saw_file:
                raise Problem(422, "malformed-upload", "Send exactly one `file` part per request.")
            self.saw_file = True
            raw_name = params.get(b"filename")
            self.filename = raw_name.decode("utf-8", "replace") if raw_name is not None else None
            self._file = self._destination.open("wb")
        elif self._part_name in TEXT_FIELDS:
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self.size += len(chunk)
            if self.size > self._max_bytes:
                raise too_large(self._max_bytes)
            self._digest.update(chunk)
            self._file.write(chunk)
        elif self._text is not None:
            self._text += chunk
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise Problem(
                    422, "field-too-long", f"The `{self._part_name}` field is over {MAX_TEXT_FIELD_BYTES} bytes."
                )

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._text is not None and self._part_name is not None:
            try:
                self.fields[self._part_name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise Problem(422, "malformed-upload", f"The `{self._part_name}` field is not UTF-8.") from None
            self._text = None


async def receive_upload(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    *,
    destination: Path,
    max_bytes: int,
) -> ReceivedUpload:
    media_type, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise Problem(
            415,
            "unsupported-media-type",
            "Upload with `Content-Type: multipart/form-data` and the file in a part named `file`.",
        )
    declared = int(content_length) if content_length and content_length.isdigit() else None
    if declared is not None and declared > max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise too_large(max_bytes)
    sink = _UploadSink(destination, max_bytes)
    parser = MultipartParser(boundary, sink.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except Problem:
        raise
    except Exception:
        raise Problem(422, "malformed-upload", "The multipart body could not be parsed.") from None
    finally:
        sink.close()
    if not sink.saw_file:
        raise Problem(422, "missing-file", "The upload has no part named `file`.")
    if sink.size == 0:
        raise Problem(422, "empty-file", "The file is empty.")
    return ReceivedUpload(destination, sink.filename, sink.size, sink.sha256, sink.fields)
