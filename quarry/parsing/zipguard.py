"""Bounds on ZIP containers (DOCX, PPTX, XLSX, EPUB), checked before anything is inflated.

zipfile never reads past the uncompressed size an entry declares in the
central directory, so the declared sizes are trustworthy bounds: checking
them up front keeps memory bounded whatever the parsers later read.
zipfile also loads the whole central directory into ZipInfo objects, so the
entry count and directory size are read from the end records first.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

MAX_ENTRIES = 10_000
MAX_TOTAL_UNCOMPRESSED = 256 * 1024 * 1024
# The parsers hold a part's XML as a tree, about 21 times its size (python-docx measured: 5.5 MiB of
# document.xml, 115 MB). 12 MiB of markup then fits the default 512 MiB a parse child may use
# (quarry.parsing.budget), about 200 MiB of which the imported parsers take.
MAX_MARKUP_UNCOMPRESSED = 12 * 1024 * 1024
MARKUP_SUFFIXES = (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx", ".vml")
MAX_COMPRESSION_RATIO = 200
RATIO_CHECKED_ABOVE = 1024 * 1024
# 10,000 entries with 1,000-character names still fit in 16 MiB.
MAX_CENTRAL_DIRECTORY = 16 * 1024 * 1024

_END_RECORD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF


class ZipLimitExceeded(Exception):
    """The archive declares more than Quarry will inflate; reason says what, for a user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def bounded_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """Open path as a ZIP after checking its declared sizes.

    Raises ZipLimitExceeded for a likely zip bomb and zipfile.BadZipFile for a
    damaged archive; OSError only for a failure to read the file itself.
    """
    with path.open("rb") as file:
        try:
            entries, directory_size = _declared_directory(file)
        except (ValueError, EOFError, struct.error) as error:
            raise zipfile.BadZipFile(str(error)) from error
    _check_directory(entries, directory_size)
    try:
        archive = zipfile.ZipFile(path)
    except (ValueError, EOFError, struct.error) as error:
        raise zipfile.BadZipFile(str(error)) from error
    with archive:
        _check_entries(archive.infolist())
        yield archive


def check_zip_bounds(path: Path) -> None:
    """Raise ZipLimitExceeded or zipfile.BadZipFile unless path is a ZIP safe to inflate."""
    with bounded_zip(path):
        pass


def _declared_directory(file: BinaryIO) -> tuple[int, int]:
    """(entry count, central directory size) as the end records declare them."""
    file_size = file.seek(0, os.SEEK_END)
    tail_size = min(file_size, _END_RECORD.size + _MAX_COMMENT)
    tail_start = file_size - tail_size
    file.seek(tail_start)
    tail = file.read(tail_size)
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or at + _END_RECORD.size > len(tail):
        raise zipfile.BadZipFile("no end-of-central-directory record")
    _, _, _, _, entries, directory_size, _, _ = _END_RECORD.unpack_from(tail, at)
    # Like zipfile, believe a zip64 end record whenever its locator precedes the end record.
    locator_at = tail_start + at - _ZIP64_LOCATOR.size
    if locator_at < _ZIP64_END_RECORD.size:
        return entries, directory_size
    file.seek(locator_at - _ZIP64_END_RECORD.size)
    block = file.read(_ZIP64_END_RECORD.size + _ZIP64_LOCATOR.size)
    if block[_ZIP64_END_RECORD.size : _ZIP64_END_RECORD.size + 4] != _ZIP64_LOCATOR_SIGNATURE:
        return entries, directory_size
    record = _ZIP64_END_RECORD.unpack_from(block)
    if record[0] != _ZIP64_END_SIGNATURE:
        raise zipfile.BadZipFile("damaged zip64 end record")
    return max(entries, record[7]), max(directory_size, record[8])


def _check_directory(entries: int, directory_size: int) -> None:
    if entries > MAX_ENTRIES:
        raise ZipLimitExceeded(
            f"The archive looks like a zip bomb: it declares {entries:,} entries (the limit is {MAX_ENTRIES:,})."
        )
    if directory_size > MAX_CENTRAL_DIRECTORY:
        raise ZipLimitExceeded(
            f"The archive looks like a zip bomb: its directory is {_mib(directory_size)} "
            f"(the limit is {_mib(MAX_CENTRAL_DIRECTORY)})."
        )


def _check_entries(infos: list[zipfile.ZipInfo]) -> None:
    _check_directory(len(infos), 0)
    total = 0
    markup = 0
    for info in infos:
        total += info.file_size
        if info.filename.lower().endswith(MARKUP_SUFFIXES):
            markup += info.file_size
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise ZipLimitExceeded(
                "The archive looks like a zip bomb: it declares more than "
                f"{_mib(MAX_TOTAL_UNCOMPRESSED)} of uncompressed content."
            )
        if markup > MAX_MARKUP_UNCOMPRESSED:
            raise ZipLimitExceeded(
                f"The document holds more than {_mib(MAX_MARKUP_UNCOMPRESSED)} of XML, "
                "more than Quarry extracts from one file; split it into smaller files."
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_CHECKED_ABOVE and ratio > MAX_COMPRESSION_RATIO:
            raise ZipLimitExceeded(
                f"The archive looks like a zip bomb: one entry expands {ratio:,.0f} times "
                f"(the limit is {MAX_COMPRESSION_RATIO})."
            )


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MiB"
