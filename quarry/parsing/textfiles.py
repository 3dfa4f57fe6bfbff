"""The text family: plain text, Markdown, JSON and CSV (HTML has its own module)."""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.segments import Extracted, Position, SectionWriter, finish

MAX_JSON_DEPTH = 64
# Twenty million empty objects took 5 GB; a million costs about 100 MB in the parse child.
MAX_JSON_OBJECTS = 1_000_000
CSV_ROWS_PER_SEGMENT = 1_000
# csv.Sniffer is quadratic on some inputs (about 1 s for 16 KiB of `,"`); 8 KiB bounds that.
CSV_SAMPLE_CHARS = 8 * 1024
CSV_DELIMITERS = ",;\t|"

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
NOT_UTF8 = "The file is not UTF-8 text; save it as UTF-8."


def has_utf32_bom(head: bytes) -> bool:
    return head.startswith(_UTF32_BOMS)


def text_encoding(head: bytes) -> str:
    """The codec for a text file starting with head: UTF-16 when it has that BOM, else UTF-8 (BOM optional)."""
    # The UTF-32-LE BOM starts with the UTF-16-LE one; callers refuse UTF-32 before asking.
    if head.startswith(_UTF16_BOMS) and not has_utf32_bom(head):
        return "utf-16"
    return "utf-8-sig"


def read_text(path: Path) -> str:
    with path.open("rb") as file:
        encoding = text_encoding(file.read(4))
    try:
        return path.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        raise UnreadableDocument(NOT_UTF8) from error


class JsonTooDeep(ValueError):
    pass


class JsonTooLarge(ValueError):
    pass


def load_json(text: str) -> Any:
    """json.loads, refusing documents nested deeper than MAX_JSON_DEPTH or holding more than MAX_JSON_OBJECTS objects.

    Raises JsonTooDeep, JsonTooLarge or ValueError.
    """
    objects = 0

    def counted_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal objects
        objects += 1
        if objects > MAX_JSON_OBJECTS:
            raise JsonTooLarge(f"holds more than {MAX_JSON_OBJECTS:,} objects")
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=counted_object)
    except RecursionError as error:
        raise JsonTooDeep(f"nested more than {MAX_JSON_DEPTH} levels") from error
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_JSON_DEPTH:
                    raise JsonTooDeep(f"nested more than {MAX_JSON_DEPTH} levels")
                pending.append((child, depth + 1))
    return value


def csv_dialect(sample: str) -> type[csv.Dialect] | None:
    """The CSV dialect of sample, or None when it is not CSV.

    csv.Sniffer cannot name the delimiter of single-column data, so lines
    without any candidate delimiter count as single-column CSV.
    """
    sample = _sniffable(sample)
    try:
        return csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS)
    except csv.Error:
        if sample.strip() and not any(delimiter in sample for delimiter in CSV_DELIMITERS):
            return csv.excel
        return None


def extract_txt(path: Path) -> Extracted:
    return finish([(read_text(path), {})], None, "The text file contains no text.")


_ATX_HEADING_OPENER = re.compile(r" {0,3}#{1,3}(?=[ \t]|$)")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def extract_md(path: Path) -> Extracted:
    """Markdown kept as written; #, ## and ### headings outside code fences start new segments."""
    writer = SectionWriter()
    open_fence: str | None = None
    for line in read_text(path).splitlines():
        fence = _FENCE.match(line)
        if fence:
            marker = fence.group(1)
            if open_fence is None:
                open_fence = marker
            elif marker[0] == open_fence[0] and len(marker) >= len(open_fence):
                open_fence = None
        heading = None if open_fence is not None or fence else _atx_heading(line)
        if heading is not None:
            writer.start_section(heading, heading_line=line)
        else:
            writer.add(line)
    return finish(writer.segments(), None, "The Markdown file contains no text.")


def _atx_heading(line: str) -> str | None:
    """The text of a #, ## or ### heading line, without its optional closing #s; None for other lines."""
    opener = _ATX_HEADING_OPENER.match(line)
    if opener is None:
        return None
    text = line[opener.end() :].strip()
    unclosed = text.rstrip("#")
    if unclosed != text and (not unclosed or unclosed[-1] in " \t"):
        text = unclosed.rstrip()
    return text


def extract_json(path: Path) -> Extracted:
    """One line per scalar, "path.to.key: value" (array items as path[0]), so keys are searchable too."""
    try:
        value = load_json(read_text(path))
    except JsonTooDeep as error:
        raise UnreadableDocument(f"The JSON is {error}.") from error
    except JsonTooLarge as error:
        raise UnreadableDocument(f"The JSON {error}; split it into smaller files.") from error
    except ValueError as error:
        raise UnreadableDocument(f"The file is not valid JSON: {error}.") from error
    lines = [f"{key}: {scalar}" if key else scalar for key, scalar in _flatten_json(value)]
    return finish([("\n".join(lines), {})], None, "The JSON document contains no values.")


def _flatten_json(value: Any) -> Iterator[tuple[str, str]]:
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, node = pending.pop()
        if isinstance(node, dict):
            children = [(f"{path}.{key}" if path else str(key), child) for key, child in node.items()]
        elif isinstance(node, list):
            children = [(f"{path}[{index}]", child) for index, child in enumerate(node)]
        else:
            yield path, node if isinstance(node, str) else json.dumps(node)
            continue
        pending.extend(reversed(children))


def extract_csv(path: Path) -> Extracted:
    """Records as tab-separated lines, one segment per CSV_ROWS_PER_SEGMENT records ({"rows": "1-1000"}).

    When the first record looks like a header it is repeated at the top of every
    later segment, so each segment says what its columns are.
    """
    with path.open("rb") as file:
        encoding = text_encoding(file.read(4))
    raw_segments: list[tuple[str, Position]] = []
    try:
        with path.open(encoding=encoding, newline="") as handle:
            sample = handle.read(CSV_SAMPLE_CHARS)
            handle.seek(0)
            dialect = csv_dialect(sample) or csv.excel
            header = _has_header(sample)
            lines: list[str] = []
            first_row = 1
            header_line: str | None = None
            number = 0
            for number, record in enumerate(csv.reader(handle, dialect), start=1):
                line = "\t".join(" ".join(field.split()) for field in record)
                if number == 1 and header:
                    header_line = line
                lines.append(line)
                if number % CSV_ROWS_PER_SEGMENT == 0:
                    raw_segments.append(("\n".join(lines), {"rows": f"{first_row}-{number}"}))
                    first_row = number + 1
                    lines = [header_line] if header_line is not None else []
            if number >= first_row:
                raw_segments.append(("\n".join(lines), {"rows": f"{first_row}-{number}"}))
    except UnicodeDecodeError as error:
        raise UnreadableDocument(NOT_UTF8) from error
    except csv.Error as error:
        raise UnreadableDocument(f"The CSV file could not be parsed: {error}.") from error
    return finish(raw_segments, None, "The CSV file contains no values.")


def _sniffable(sample: str) -> str:
    # The sniffer's quote patterns expect \n line ends, and a last line cut mid-record confuses it.
    sample = sample.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in sample.rstrip("\n"):
        sample = sample[: sample.rindex("\n") + 1]
    return sample


def _has_header(sample: str) -> bool:
    try:
        return csv.Sniffer().has_header(_sniffable(sample))
    except csv.Error:
        return False
