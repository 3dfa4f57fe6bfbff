"""Office Open XML: DOCX (python-docx), PPTX (python-pptx) and XLSX (openpyxl).

Each checks the ZIP's declared sizes before the library opens it: the
libraries read whole parts into memory.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import docx
import openpyxl  # type: ignore[import-untyped]
import pptx
from docx.table import Table
from docx.text.paragraph import Paragraph
from pptx.shapes.autoshape import Shape
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape

from quarry.parsing.errors import UnreadableDocument, parser_failures
from quarry.parsing.segments import Extracted, Position, SectionWriter, finish
from quarry.parsing.zipguard import ZipLimitExceeded, check_zip_bounds

MAX_ROWS_PER_SHEET = 100_000

# openpyxl warns about harmless oddities of real workbooks (no default style, unsupported
# extensions). Set once here rather than with catch_warnings, which is not thread-safe.
warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")


def require_safe_zip(path: Path, damaged_reason: str) -> None:
    try:
        check_zip_bounds(path)
    except ZipLimitExceeded as error:
        raise UnreadableDocument(error.reason) from error
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as error:
        raise UnreadableDocument(damaged_reason) from error


def extract_docx(path: Path) -> Extracted:
    """Paragraphs and table rows (cells tab-separated) in document order; headings start new segments."""
    damaged = "The DOCX file is damaged or is not a Word document."
    require_safe_zip(path, damaged)
    with parser_failures(damaged):
        document = docx.Document(str(path))
        writer = SectionWriter()
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                if _is_heading(block):
                    writer.start_section(block.text)
                else:
                    writer.add(block.text)
            else:
                for line in _table_lines(block):
                    writer.add(line)
        raw_segments = writer.segments()
    return finish(raw_segments, None, "The Word document contains no text.")


def _is_heading(paragraph: Paragraph) -> bool:
    style = paragraph.style
    name = (style.name if style is not None else None) or ""
    return name == "Title" or name.startswith("Heading")


def _table_lines(table: Table) -> Iterator[str]:
    for row in table.rows:
        cells = []
        previous = None
        for cell in row.cells:
            # A merged cell is repeated once per grid column it spans.
            if previous is not None and cell._tc is previous._tc:
                continue
            cells.append(" ".join(cell.text.split()))
            previous = cell
        yield "\t".join(cells)


def extract_pptx(path: Path) -> Extracted:
    """One segment per slide ({"slide": n}): its shapes' text in order, then the speaker notes."""
    damaged = "The PPTX file is damaged or is not a PowerPoint presentation."
    require_safe_zip(path, damaged)
    with parser_failures(damaged):
        presentation = pptx.Presentation(str(path))
        slides = list(presentation.slides)
        raw_segments: list[tuple[str, Position]] = []
        for number, slide in enumerate(slides, start=1):
            lines = list(_shape_texts(slide.shapes))
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame
                if notes is not None:
                    lines.extend(["", notes.text])
            raw_segments.append(("\n".join(lines), {"slide": number}))
    return finish(raw_segments, len(slides), "The presentation contains no text.")


def _shape_texts(shapes: Iterable[BaseShape]) -> Iterator[str]:
    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shape_texts(shape.shapes)
        elif isinstance(shape, Shape) and shape.has_text_frame:
            yield shape.text_frame.text
        elif isinstance(shape, GraphicFrame) and shape.has_table:
            for row in shape.table.rows:
                yield "\t".join(" ".join(cell.text.split()) for cell in row.cells)


def extract_xlsx(path: Path) -> Extracted:
    """One segment per worksheet ({"sheet": name}), rows as tab-separated values, cached formula results."""
    damaged = "The XLSX file is damaged or is not an Excel workbook."
    require_safe_zip(path, damaged)
    # A file object, not the path: openpyxl refuses paths without an .xlsx extension,
    # and stored blobs have none.
    with parser_failures(damaged), path.open("rb") as handle:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
        try:
            sheets = list(workbook.worksheets)
            raw_segments: list[tuple[str, Position]] = [
                ("\n".join(_sheet_lines(sheet)), {"sheet": str(sheet.title)}) for sheet in sheets
            ]
        finally:
            workbook.close()
    return finish(raw_segments, len(sheets), "The workbook contains no values.")


def _sheet_lines(sheet: Any) -> Iterator[str]:
    # A declared dimension may be a lie that pads every row to 16,384 columns; use the cells present.
    sheet.reset_dimensions()
    rows: Iterable[tuple[object, ...]] = sheet.iter_rows(values_only=True)
    for index, row in enumerate(rows):
        if index == MAX_ROWS_PER_SHEET:
            yield f"[truncated after {MAX_ROWS_PER_SHEET} rows]"
            return
        cells = [cell_text(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            yield "\t".join(cells)


def cell_text(value: object) -> str:
    """A spreadsheet value as one line of text."""
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.15g}"
    elif isinstance(value, datetime):
        text = value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    elif isinstance(value, date | time):
        text = value.isoformat()
    else:
        text = str(value)
    return " ".join(text.split())
