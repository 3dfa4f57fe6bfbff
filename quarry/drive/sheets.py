"""Google Sheets as text, every tab, on every plan.

Google exports a whole spreadsheet only as XLSX (or ODS, PDF): its CSV and
TSV exports hold the first tab alone.  XLSX is not among the Free plan's
formats, and a user who syncs a Drive folder expects their Sheets indexed
whatever the plan, since they never chose a file format.  So the sync
exports XLSX, extracts every tab in a parse child (within the extraction
budget, exactly as an uploaded XLSX is read), and indexes the result as a
Markdown document: the spreadsheet's name as its title, one `## <tab>`
section per tab (each chunk's position names its tab), each row a line of
tab-separated values - the text an XLSX upload gives.  A workbook the
parser refuses (damaged, over the budget, no values) is skipped with the
parser's reason.
"""

from __future__ import annotations

import asyncio

from quarry.parsing.pool import ParsePool
from quarry.storage.scratch import scratch_directory

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MARKDOWN_SUFFIX = ".md"
# Lines that Markdown would read as a heading or a code fence, were they the start of a row.
_MARKUP_STARTS = ("#", "```", "~~~")


def _heading(text: str) -> str:
    return " ".join(text.split()) or "Untitled"


def _row(line: str) -> str:
    return "\\" + line if line.lstrip().startswith(_MARKUP_STARTS) else line


async def sheet_as_markdown(parsers: ParsePool, workbook: bytes, title: str) -> bytes:
    """Every tab of an exported workbook as one Markdown document (UnreadableDocument if it has none)."""
    async with scratch_directory("quarry-sheet-") as workdir:
        path = workdir / "workbook.xlsx"
        await asyncio.to_thread(path.write_bytes, workbook)
        extracted = await parsers.extract(path, "xlsx")
    lines = [f"# {_heading(title)}"]
    current: object = None
    for segment in extracted.segments:
        tab = segment.position.get("sheet", "")
        if tab != current:
            lines += ["", f"## {_heading(str(tab))}", ""]
            current = tab
        lines.extend(_row(line) for line in segment.text.split("\n"))
    return ("\n".join(lines) + "\n").encode()
