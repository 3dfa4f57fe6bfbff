"""Receive a multipart upload as a stream, straight to a temporary file.

The body is never held in memory: parts are parsed as they arrive and the file
part is written to disk while its size is counted and hashed; past the cap
the upload is refused at once (413), without reading the rest.
`MultipartUpload` is the HTTP request as a `FileSource` of the core's
document flow (quarry.documents.service), which decides everything else.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from python_multipart.multipart import MultipartParser, parse_options_header

from quarry.documents.service import MAX_TITLE_CHARS, IncomingFile
from quarry.errors import Invalid, MalformedRequest, PayloadTooLarge, QuarryError, Unsupported

FILE_FIELD = "file"
TITLE_FIELD = "title"
TEXT_FIELDS = frozenset({TITLE_FIELD})
MAX_TEXT_FIELD_BYTES = 4096
PARSE_BATCH_BYTES = 1024 * 1024
# The multipart framing around a file is small: judging the file by the body's
# length minus this never refuses an upload that would in fact fit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

# The request body of POST /api/documents, as /openapi.json describes it; the sink below enforces it.
# Parts of a multipart body are bytes and text, whatever JSON type a client had in mind, so
# the schema gives them no JSON type: `file` is any bytes, `title` any text of at most 255 characters.
UPLOAD_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [FILE_FIELD],
                "properties": {
                    FILE_FIELD: {
                        "contentMediaType": "application/octet-stream",
                        "description": "the document: PDF, TXT, MD, JSON, DOCX, PPTX, XLSX, CSV, HTML or EPUB,"
                        " within the upload limit",
                    },
                    TITLE_FIELD: {
                        "maxLength": MAX_TITLE_CHARS,
                        "description": "display title (text); the file's name when absent",
                    },
                },
            },
            "encoding": {
                FILE_FIELD: {"contentType": "application/octet-stream"},
                TITLE_FIELD: {"contentType": "text/plain"},
            },
        }
    },
}


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The file is larger than the upload limit of {limit} bytes ({limit / 1024 / 1024:.0f} MiB).",
        extensions={"limit_bytes": limit},
    )


def malformed(detail: str) -> MalformedRequest:
    return MalformedRequest(detail)


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
            raise malformed("Every part needs `Content-Disposition: form-data; name=…`.")
        self._part_name = params[b"name"].decode("utf-8", "replace")
        if self._part_name == FILE_FIELD:
            if self.saw_file:
                raise Invalid("Send exactly one `file` part per request.", extensions={"field": FILE_FIELD})
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
                raise Invalid(
                    f"The `{self._part_name}` field is over {MAX_TEXT_FIELD_BYTES} bytes.",
                    extensions={"field": self._part_name},
                )

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._text is not None and self._part_name is not None:
            try:
                self.fields[self._part_name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise Invalid(
                    f"The `{self._part_name}` field is not UTF-8.", extensions={"field": self._part_name}
                ) from None
            self._text = None


def _finish(parser: MultipartParser, rest: bytes) -> None:
    if rest:
        parser.write(rest)
    parser.finalize()


class MultipartUpload:
    """An HTTP multipart body (part `file`, optional `title`) as the core's FileSource."""

    def __init__(self, content_type: str | None, content_length: str | None, body: AsyncIterator[bytes]) -> None:
        media_type, params = parse_options_header(content_type or "")
        self._boundary = params.get(b"boundary")
        if media_type != b"multipart/form-data" or not self._boundary:
            raise Unsupported("Upload with `Content-Type: multipart/form-data` and the file in a part named `file`.")
        self._declared = int(content_length) if content_length and content_length.isdigit() else None
        self._body = body

    @property
    def expected_bytes(self) -> int | None:
        if self._declared is None:
            return None
        return max(self._declared - MULTIPART_OVERHEAD_BYTES, 0)

    @property
    def in_memory(self) -> bool:
        return False  # streamed: read no further than the plan's storage allows

    async def receive(self, destination: Path, max_bytes: int) -> IncomingFile:
        if self._declared is not None and self._declared > max_bytes + MULTIPART_OVERHEAD_BYTES:
            raise too_large(max_bytes)
        assert self._boundary is not None
        sink = _UploadSink(destination, max_bytes)
        parser = MultipartParser(self._boundary, sink.callbacks())
        try:
            # Parsing, hashing and writing run off the event loop, a batch at a time, so that
            # large uploads do not hold up every other request the gateway is serving.
            batch = bytearray()
            async for chunk in self._body:
                batch += chunk
                if len(batch) >= PARSE_BATCH_BYTES:
                    await asyncio.to_thread(parser.write, bytes(batch))
                    batch.clear()
            await asyncio.to_thread(_finish, parser, bytes(batch))
        except QuarryError:
            raise
        except Exception:
            raise malformed("The multipart body could not be parsed.") from None
        finally:
            sink.close()
        if not sink.saw_file:
            raise Invalid("The upload has no part named `file`.", extensions={"field": FILE_FIELD})
        if sink.size == 0:
            raise Invalid("The file is empty.", extensions={"field": FILE_FIELD})
        title = sink.fields.get(TITLE_FIELD)
        if title is not None and len(title) > MAX_TITLE_CHARS:
            raise Invalid(f"`title` is longer than {MAX_TITLE_CHARS} characters.", extensions={"field": TITLE_FIELD})
        return IncomingFile(destination, sink.filename, sink.size, sink.sha256, title)
