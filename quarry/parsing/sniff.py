"""Decide an upload's format from its bytes; the filename's extension only has to agree.

The filename is untrusted: only its extension is looked at, and only to
refuse a file whose name promises a different supported format than its
content (an ELF binary named report.pdf).
"""

from __future__ import annotations

import codecs
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from quarry.parsing.errors import UnsupportedDocument
from quarry.parsing.textfiles import (
    CSV_SAMPLE_CHARS,
    MAX_JSON_DEPTH,
    JsonTooDeep,
    csv_dialect,
    has_utf32_bom,
    load_json,
    text_encoding,
)
from quarry.parsing.zipguard import ZipLimitExceeded, bounded_zip

FORMATS: dict[str, str] = {
    "pdf": "application/pdf",
    "txt": "text/plain",
    "md": "text/markdown",
    "json": "application/json",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "html": "text/html",
    "epub": "application/epub+zip",
}

_LABELS = {
    "pdf": "PDF",
    "txt": "plain text",
    "md": "Markdown",
    "json": "JSON",
    "docx": "DOCX",
    "pptx": "PPTX",
    "xlsx": "XLSX",
    "csv": "CSV",
    "html": "HTML",
    "epub": "EPUB",
}

_FORMAT_BY_EXTENSION = {
    "pdf": "pdf",
    "txt": "txt",
    "md": "md",
    "markdown": "md",
    "json": "json",
    "docx": "docx",
    "pptx": "pptx",
    "xlsx": "xlsx",
    "csv": "csv",
    "html": "html",
    "htm": "html",
    "epub": "epub",
}

_BINARY_FORMATS = frozenset({"pdf", "docx", "pptx", "xlsx", "epub"})
# The gateway reads at most this much of an upload (plus a ZIP's central directory): sniffing
# costs the same for a 60 MiB file as for a small one. The worker reads the rest, in a parse child.
_HEAD_BYTES = 64 * 1024
_TEXT_CHUNK_BYTES = 1024 * 1024
TEXT_CHECKED_BYTES = 4 * _TEXT_CHUNK_BYTES
_JSON_TOKEN = re.compile(
    r'[ \t\n\r]*(?:"(?:[^"\\\x00-\x1f]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[\[\]{}:,])'
)
_JSON_CLOSERS = {"]": "[", "}": "{"}

_HTML_DOCUMENT_START = re.compile(
    r"(?:\s|<!--.*?-->|<\?xml[^>]*\?>)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL
)
_HTML_TAG = re.compile(
    r"<(?:html|head|body|title|meta|div|p|span|a|h[1-6]|table|ul|ol|li|br|section|article|main|script|style)(?=[\s/>])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sniffed:
    format: str
    mime_type: str


@dataclass(frozen=True)
class _Foreign:
    """Content that is not a supported format."""

    detected: str | None
    phrase: str  # the detected thing with its article, for "but contains ..."
    reason: str | None = None  # a more useful sentence than "it looks like <phrase>"


_UNKNOWN_BINARY = _Foreign(None, "unrecognised binary data")

# Signatures at offset 0 that mark a file we do not read, named so the user learns what they sent.
# A signature of printable characters only counts when control bytes follow, so that
# a text file which happens to begin with "GIF89a" or "ID3" is still text.
_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x7fELF", "ELF executable", "an"),
    (b"\x89PNG\r\n\x1a\n", "PNG image", "a"),
    (b"\xff\xd8\xff", "JPEG image", "a"),
    (b"GIF87a", "GIF image", "a"),
    (b"GIF89a", "GIF image", "a"),
    (b"II*\x00", "TIFF image", "a"),
    (b"MM\x00*", "TIFF image", "a"),
    (b"\x1f\x8b", "gzip archive", "a"),
    (b"\xfd7zXZ\x00", "xz archive", "an"),
    (b"\x28\xb5\x2f\xfd", "Zstandard archive", "a"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive", "a"),
    (b"Rar!\x1a\x07", "RAR archive", "a"),
    (b"PK\x05\x06", "empty ZIP archive", "an"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "legacy Office file (.doc/.xls/.ppt) or password-protected Office document",
        "a",
    ),
    (b"SQLite format 3\x00", "SQLite database", "a"),
    (b"\x00asm", "WebAssembly module", "a"),
    (b"\xfe\xed\xfa\xce", "Mach-O executable", "a"),
    (b"\xfe\xed\xfa\xcf", "Mach-O executable", "a"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable", "a"),
    (b"\xcf\xfa\xed\xfe", "Mach-O executable", "a"),
    (b"\xca\xfe\xba\xbe", "Mach-O universal binary or Java class file", "a"),
    (b"OggS\x00", "Ogg media file", "an"),
    (b"fLaC", "FLAC audio file", "a"),
    (b"ID3", "MP3 audio file", "an"),
    (b"MZ", "Windows executable", "a"),
)
_PRINTABLE = frozenset(range(0x20, 0x7F))
_CONTROL_BYTES = frozenset(range(0x09)) | frozenset(range(0x0E, 0x20))


def sniff(path: Path, filename: str | None) -> Sniffed:
    """The format of the file at path, judged from its content; raises UnsupportedDocument.

    filename is only consulted for its extension: when that names a supported
    format, the content must be that format. Among plain text, Markdown and CSV
    the extension decides, since any of them can hold the other's text.
    """
    if path.stat().st_size == 0:
        raise UnsupportedDocument("The file is empty.", detected="empty file")
    extension, claimed = _claimed_format(filename)
    content = _detect(path, claimed)
    if isinstance(content, _Foreign):
        raise _refusal(content, extension, claimed)
    if claimed is not None and content != claimed:
        raise UnsupportedDocument(
            f"The file is named .{extension} but contains {_LABELS[content]}.", detected=_LABELS[content]
        )
    return Sniffed(format=content, mime_type=FORMATS[content])


def _claimed_format(filename: str | None) -> tuple[str | None, str | None]:
    if not filename:
        return None, None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        return None, None
    extension = extension.strip().lower()
    claimed = _FORMAT_BY_EXTENSION.get(extension)
    return (extension, claimed) if claimed else (None, None)


def _refusal(content: _Foreign, extension: str | None, claimed: str | None) -> UnsupportedDocument:
    if content.reason and claimed not in _BINARY_FORMATS:
        return UnsupportedDocument(content.reason, detected=content.detected)
    if claimed is not None:
        return UnsupportedDocument(
            f"The file is named .{extension} but contains {content.phrase}.", detected=content.detected
        )
    return UnsupportedDocument(
        f"This file type is not supported: it looks like {content.phrase}.", detected=content.detected
    )


def _detect(path: Path, claimed: str | None) -> str | _Foreign:
    with path.open("rb") as file:
        head = file.read(_HEAD_BYTES)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return _classify_zip(path)
    foreign = _known_binary(head)
    if foreign is not None:
        return foreign
    return _classify_text(path, head, claimed)


def _known_binary(head: bytes) -> _Foreign | None:
    has_control_bytes = not _CONTROL_BYTES.isdisjoint(head[:64])
    for signature, detected, article in _SIGNATURES:
        if head.startswith(signature) and (has_control_bytes or not _PRINTABLE.issuperset(signature)):
            return _Foreign(detected, f"{article} {detected}")
    if head.startswith(b"{\\rtf"):
        return _Foreign("RTF document", "an RTF document")
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return _Foreign("bzip2 archive", "a bzip2 archive")
    if head[4:8] == b"ftyp":
        return _Foreign("MP4/QuickTime media file", "an MP4/QuickTime media file")
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"WAVE", b"AVI "):
        kind = {b"WEBP": "WebP image", b"WAVE": "WAV audio file", b"AVI ": "AVI video"}[head[8:12]]
        return _Foreign(kind, f"a {kind}")
    if has_utf32_bom(head):
        return _Foreign(
            "UTF-32 text", "UTF-32 text", reason="The file is UTF-32 text, which is not supported; save it as UTF-8."
        )
    return None


def _classify_zip(path: Path) -> str | _Foreign:
    try:
        with bounded_zip(path) as archive:
            names = set(archive.namelist())
            if "mimetype" in names:
                with archive.open("mimetype") as entry:
                    mimetype = entry.read(100).decode("ascii", "replace").strip()
                if mimetype == "application/epub+zip":
                    return "epub"
                if mimetype.startswith("application/vnd.oasis.opendocument."):
                    return _Foreign("OpenDocument file", "an OpenDocument file (ODT/ODS/ODP)")
            if "[Content_Types].xml" in names:
                for part, fmt in (
                    ("word/document.xml", "docx"),
                    ("ppt/presentation.xml", "pptx"),
                    ("xl/workbook.xml", "xlsx"),
                ):
                    if part in names:
                        return fmt
                return _Foreign("Office Open XML package", "an Office Open XML package of an unsupported kind")
            return _Foreign("ZIP archive", "a ZIP archive")
    except ZipLimitExceeded as error:
        raise UnsupportedDocument(error.reason, detected="zip bomb") from error
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error, OSError, ValueError):
        # RuntimeError: an encrypted entry; NotImplementedError: an unknown compression method;
        # zlib.error: a corrupt deflate stream.
        return _Foreign("damaged ZIP archive", "a damaged ZIP archive")


def _classify_text(path: Path, head: bytes, claimed: str | None) -> str | _Foreign:
    encoding = "utf-16" if text_encoding(head) == "utf-16" else "utf-8"
    whole = path.stat().st_size <= len(head)
    problem = _text_problem(path, encoding)
    if problem is not None:
        return problem
    head_text = codecs.getincrementaldecoder(encoding)().decode(head)
    head_text = head_text.lstrip("\ufeff")
    if claimed in ("txt", "md"):
        return claimed
    if claimed == "csv":
        return "csv" if csv_dialect(head_text[:CSV_SAMPLE_CHARS]) is not None else "txt"
    if claimed == "json":
        _require_json(head_text, whole=whole)
        return "json"
    if _HTML_DOCUMENT_START.match(head_text) or (claimed == "html" and _HTML_TAG.search(head_text)):
        return "html"
    looks_like_json = head_text.lstrip().startswith(("{", "["))
    if claimed is not None:
        # Named as a binary format: any text is a mismatch, so name it without parsing all of it.
        return "json" if looks_like_json else "txt"
    if looks_like_json and _is_json(head_text, whole=whole):
        return "json"
    return "txt"


def _text_problem(path: Path, encoding: str) -> _Foreign | None:
    """Why the first TEXT_CHECKED_BYTES of the file are not text in encoding, or None.

    Read in chunks, so memory stays bounded; a bad byte further on fails the
    document in the worker instead (UnreadableDocument).
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as file:
        while offset < TEXT_CHECKED_BYTES:
            chunk = file.read(_TEXT_CHUNK_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                position = offset - pending + error.start
                return _Foreign(
                    None,
                    "unrecognised data",
                    reason=(
                        f"The file is not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text "
                        f"(invalid byte 0x{error.object[error.start]:02X} at offset {position}); save it as UTF-8."
                    ),
                )
            if "\x00" in text:
                return _UNKNOWN_BINARY
            if not chunk:
                return None
            offset += len(chunk)
    return None


def _require_json(head_text: str, *, whole: bool) -> None:
    if whole:
        try:
            value = load_json(head_text)
        except JsonTooDeep as error:
            raise UnsupportedDocument(f"The JSON is {error}.", detected="deeply nested JSON") from error
        except ValueError as error:
            raise UnsupportedDocument(
                f"The file is named .json but is not valid JSON: {error}.", detected="invalid JSON"
            ) from error
        if not isinstance(value, dict | list):
            raise UnsupportedDocument(
                f"The file is named .json but its top level is {_json_kind(value)}, not an object or array.",
                detected="JSON scalar",
            )
    elif not _starts_like_json(head_text):
        raise UnsupportedDocument(
            "The file is named .json but does not begin like a JSON object or array.", detected="invalid JSON"
        )


def _is_json(head_text: str, *, whole: bool) -> bool:
    """Whether the text is a JSON object or array: judged whole when the head holds the file, else by the head."""
    if not whole:
        return _starts_like_json(head_text)
    try:
        value = load_json(head_text)
    except JsonTooDeep as error:
        raise UnsupportedDocument(f"The JSON is {error}.", detected="deeply nested JSON") from error
    except ValueError:
        return False
    return isinstance(value, dict | list)


def _starts_like_json(head_text: str) -> bool:
    """Whether head_text is the beginning of a JSON object or array; raises UnsupportedDocument if nested too deep.

    Only the head of a long file is read, so its last token may be cut short;
    the worker parses the whole file (within its budget) and fails it if it is not JSON.
    """
    open_brackets: list[str] = []
    at = 0
    while at < len(head_text):
        token = _JSON_TOKEN.match(head_text, at)
        if token is None:
            rest = head_text[at:].lstrip(" \t\n\r")
            # A string, number or literal running past the end of the head.
            return bool(open_brackets) and (rest.startswith('"') or len(rest) < 32)
        at = token.end()
        symbol = token.group().lstrip(" \t\n\r")
        if symbol in ("[", "{"):
            open_brackets.append(symbol)
            if len(open_brackets) > MAX_JSON_DEPTH:
                raise UnsupportedDocument(
                    f"The JSON is nested more than {MAX_JSON_DEPTH} levels.", detected="deeply nested JSON"
                )
        elif symbol in _JSON_CLOSERS:
            if not open_brackets or open_brackets.pop() != _JSON_CLOSERS[symbol]:
                return False
        elif not open_brackets:
            return False  # a scalar before the first bracket, or after the last one closed
    return bool(open_brackets)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "null"
