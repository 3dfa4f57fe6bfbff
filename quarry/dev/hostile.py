"""Hostile files for the parser tests, the acceptance suite and bench/abuse.py, built on the fly, never committed.

Every writer streams to disk in pieces of at most a MiB or so, so building a
60 MiB file needs about as little memory as Quarry should need to refuse it.
The ZIP formats carry XML right at the cap (zipguard.MAX_MARKUP_UNCOMPRESSED)
and just inside the compression-ratio limit, so they pass the gateway's sniff
and reach the worker's parse children; none of them holds any text worth
indexing, so each ends as a refusal or a failed document.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from quarry.parsing.zipguard import MARKUP_SUFFIXES, MAX_MARKUP_UNCOMPRESSED

MIB = 1024 * 1024
BIG_FILE_BYTES = 60 * MIB
NESTED_HTML_TAGS = 2_000_000
NESTED_PDF_LEVELS = 1_000_000
HUGE_PAGE_TEXT_RUNS = 1_000_000
_XML_MARGIN = 4096  # room for the closing tags, so the markup stays at or under the cap

_DOCX_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def write_hostile_files(directory: Path) -> dict[str, Path]:
    """Every hostile file, by name (the name's extension is its format), written into directory."""
    writers: dict[str, Callable[[Path], None]] = {
        "empty-objects.json": write_json_of_empty_objects,
        "xml-at-cap.docx": write_docx_at_cap,
        "xml-at-cap.pptx": write_pptx_at_cap,
        "xml-at-cap.xlsx": write_xlsx_at_cap,
        "xml-at-cap.epub": write_epub_at_cap,
        "deeply-nested.pdf": write_deeply_nested_pdf,
        "huge-page.pdf": write_huge_page_pdf,
        "one-line.csv": write_csv_of_one_line,
        "nested-tags.html": write_html_of_nested_tags,
    }
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, write in writers.items():
        path = directory / name
        write(path)
        files[name] = path
    return files


def write_json_of_empty_objects(path: Path, size: int = BIG_FILE_BYTES) -> None:
    """`[{},{},...]`: twenty million objects in 60 MiB, which json.loads turns into 5 GB."""
    with path.open("wb") as file:
        file.write(b"[")
        _repeat(file, b"{},", (size - 4) // 3)
        file.write(b"{}]")


def write_csv_of_one_line(path: Path, size: int = BIG_FILE_BYTES) -> None:
    """A header and one record of size bytes: millions of distinct fields and no line end to stop at."""
    with path.open("wb") as file:
        file.write(b"id,value\n")
        written = 0
        field = 0
        while written < size:
            piece = b"".join(b"%08x," % number for number in range(field, field + 10_000))
            file.write(piece)
            written += len(piece)
            field += 10_000
        file.write(b"end")


def write_html_of_nested_tags(path: Path, depth: int = NESTED_HTML_TAGS) -> None:
    """A page of depth nested <div>s (and no text), closed again."""
    with path.open("wb") as file:
        file.write(b"<!DOCTYPE html><html><head><title></title></head><body>")
        _repeat(file, b"<div>", depth)
        _repeat(file, b"</div>", depth)
        file.write(b"</body></html>")


def write_deeply_nested_pdf(path: Path, depth: int = NESTED_PDF_LEVELS) -> None:
    """A one-page PDF whose page dictionary holds an array nested depth levels deep."""

    def page(file: BinaryIO) -> None:
        file.write(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Annots ")
        _repeat(file, b"[", depth)
        _repeat(file, b"]", depth)
        file.write(b" >>")

    content = b"BT /F1 12 Tf 72 712 Td (Nested) Tj ET"
    _write_pdf(path, page, zlib.compress(content))


def write_huge_page_pdf(path: Path, runs: int = HUGE_PAGE_TEXT_RUNS) -> None:
    """A 200 x 200 inch page whose content stream inflates to 68 MB of text operators (pypdf stops at 75 MB)."""

    def page(file: BinaryIO) -> None:
        file.write(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 14400 14400] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>"
        )

    compressor = zlib.compressobj(9)
    parts = []
    run = b"BT /F1 9 Tf 36 14000 Td (granite quarry northern ridge survey) Tj ET\n"
    batch = run * 10_000
    for _ in range(runs // 10_000):
        parts.append(compressor.compress(batch))
    parts.append(compressor.flush())
    _write_pdf(path, page, b"".join(parts))


def write_docx_at_cap(path: Path) -> None:
    """A DOCX whose document.xml is empty paragraphs up to the XML cap (python-docx walks every one)."""
    import docx

    base = io.BytesIO()
    docx.Document().save(base)
    prefix = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{_DOCX_NS}"><w:body>'
    ).encode()
    _rewrite_zip_part(base, path, "word/document.xml", prefix, b'<w:p w:rsidR="%s"/>', b"</w:body></w:document>")


def write_docx_bomb(path: Path, declared_size: int) -> None:
    """A valid DOCX whose word/document.xml inflates to declared_size bytes, mostly spaces: "Boom", then nothing."""
    import docx

    base = io.BytesIO()
    docx.Document().save(base)
    prefix = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{_DOCX_NS}">'
        "<w:body><w:p><w:r><w:t>Boom</w:t></w:r></w:p>"
    ).encode()
    suffix = b"</w:body></w:document>"
    base.seek(0)
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in source.infolist():
            if info.filename != "word/document.xml":
                out.writestr(info, source.read(info))
        with out.open("word/document.xml", "w", force_zip64=True) as entry:
            entry.write(prefix)
            remaining = declared_size - len(prefix) - len(suffix)
            spaces = b" " * MIB
            while remaining > 0:
                entry.write(spaces[: min(MIB, remaining)])
                remaining -= MIB
            entry.write(suffix)


def write_pptx_at_cap(path: Path) -> None:
    """A PPTX whose one slide holds text-less shapes up to the XML cap."""
    import pptx

    presentation = pptx.Presentation()
    presentation.slides.add_slide(presentation.slide_layouts[6])
    base = io.BytesIO()
    presentation.save(base)
    base.seek(0)
    with zipfile.ZipFile(base) as source:
        slide = source.read("ppt/slides/slide1.xml")
    cut = slide.index(b"</p:spTree>")
    _rewrite_zip_part(
        base,
        path,
        "ppt/slides/slide1.xml",
        slide[:cut],
        b'<p:sp><p:nvSpPr><p:cNvPr id="2" name="%s"/><p:cNvSpPr/><p:nvPr/></p:nvSpPr><p:spPr/></p:sp>',
        slide[cut:],
    )


def write_xlsx_at_cap(path: Path) -> None:
    """An XLSX whose sheet is empty rows up to the XML cap."""
    import openpyxl  # type: ignore[import-untyped]

    base = io.BytesIO()
    openpyxl.Workbook().save(base)
    base.seek(0)
    with zipfile.ZipFile(base) as source:
        sheet = source.read("xl/worksheets/sheet1.xml")
    empty = b"<sheetData/>" if b"<sheetData/>" in sheet else b"<sheetData></sheetData>"
    before, after = sheet.split(empty, 1)
    _rewrite_zip_part(
        base,
        path,
        "xl/worksheets/sheet1.xml",
        before + b"<sheetData>",
        b'<row r="1" customFormat="1" ht="%s"/>',
        b"</sheetData>" + after,
    )


def write_epub_at_cap(path: Path) -> None:
    """An EPUB of one chapter: text-less <div>s up to the XML cap."""
    base = io.BytesIO()
    with zipfile.ZipFile(base, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        archive.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        archive.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            "<metadata/><manifest>"
            '<item id="c1" href="chapter.xhtml" media-type="application/xhtml+xml"/>'
            '</manifest><spine><itemref idref="c1"/></spine></package>',
        )
        archive.writestr("OEBPS/chapter.xhtml", "")
    _rewrite_zip_part(
        base,
        path,
        "OEBPS/chapter.xhtml",
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title></title></head><body>',
        b'<div class="%s"></div>',
        b"</body></html>",
    )


def _rewrite_zip_part(base: io.BytesIO, path: Path, part: str, prefix: bytes, element: bytes, suffix: bytes) -> None:
    """base with part replaced by prefix, copies of element (each with a random %s) and suffix.

    The part grows until the archive's markup reaches MAX_MARKUP_UNCOMPRESSED; the random hex
    keeps it compressible only about three times, far inside the compression-ratio limit.
    """
    base.seek(0)
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        other_markup = 0
        for info in source.infolist():
            if info.filename == part:
                continue
            if info.filename.lower().endswith(MARKUP_SUFFIXES):
                other_markup += info.file_size
            out.writestr(info, source.read(info), compress_type=info.compress_type)
        budget = MAX_MARKUP_UNCOMPRESSED - other_markup - len(prefix) - len(suffix) - _XML_MARGIN
        with out.open(part, "w", force_zip64=True) as entry:
            entry.write(prefix)
            for piece in _random_elements(element, budget):
                entry.write(piece)
            entry.write(suffix)


def _random_elements(element: bytes, size: int) -> Iterator[bytes]:
    """About size bytes of element, each copy's %s filled with 8 random hex digits, in pieces of about a MiB."""
    one = len(element % b"00000000")
    count = size // one
    per_piece = max(1, MIB // one)
    while count > 0:
        batch = min(per_piece, count)
        noise = os.urandom(4 * batch).hex().encode()
        yield b"".join(element % noise[8 * index : 8 * index + 8] for index in range(batch))
        count -= batch


def _repeat(file: BinaryIO, unit: bytes, times: int) -> None:
    per_write = max(1, MIB // len(unit))
    while times > 0:
        batch = min(per_write, times)
        file.write(unit * batch)
        times -= batch


def _write_pdf(path: Path, write_page: Callable[[BinaryIO], None], content: bytes) -> None:
    """A one-page PDF: catalog, pages, the page (written by write_page), its Flate content, a font; with an xref."""
    with path.open("wb") as file:
        offsets: list[int] = []

        def begin(number: int) -> None:
            offsets.append(file.tell())
            file.write(b"%d 0 obj\n" % number)

        file.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        begin(1)
        file.write(b"<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
        begin(2)
        file.write(b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n")
        begin(3)
        write_page(file)
        file.write(b"\nendobj\n")
        begin(4)
        file.write(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content))
        file.write(content)
        file.write(b"\nendstream\nendobj\n")
        begin(5)
        file.write(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n")
        xref = file.tell()
        file.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1))
        for offset in offsets:
            file.write(b"%010d 00000 n \n" % offset)
        file.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(offsets) + 1, xref))
