"""Hostile files for the parser and upload tests, built on the fly (never committed)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.fixtures.make_documents import DOCUMENTS

MIB = 1024 * 1024


def write_docx_bomb(path: Path, declared_size: int) -> None:
    """A valid DOCX whose word/document.xml inflates to declared_size bytes, mostly spaces.

    Streamed 1 MiB at a time, so building it needs no more memory than reading it should.
    """
    prefix = (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>Boom</w:t></w:r></w:p>"
    )
    suffix = b"</w:body></w:document>"
    with (
        zipfile.ZipFile(DOCUMENTS / "sample.docx") as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        for info in source.infolist():
            if info.filename != "word/document.xml":
                archive.writestr(info, source.read(info))
        with archive.open("word/document.xml", "w", force_zip64=True) as entry:
            entry.write(prefix)
            remaining = declared_size - len(prefix) - len(suffix)
            spaces = b" " * MIB
            while remaining > 0:
                entry.write(spaces[: min(MIB, remaining)])
                remaining -= MIB
            entry.write(suffix)
