"""HTML to text with the standard library's tolerant parser; also used for EPUB chapters."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TextIO

from quarry.parsing.errors import UnreadableDocument, parser_failures
from quarry.parsing.segments import Extracted, SectionWriter, finish
from quarry.parsing.textfiles import NOT_UTF8, text_encoding

_HIDDEN = frozenset({"script", "style", "noscript", "template"})
_SECTION_HEADINGS = frozenset({"h1", "h2", "h3"})
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "br", "caption", "dd", "details", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "h4", "h5", "h6", "header", "hr", "li",
        "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "thead", "tfoot", "tr", "ul",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")
_FEED_CHARS = 1024 * 1024


@dataclass
class HtmlText:
    """The visible text of a page as blocks: ("heading", text) for h1-h3, ("text", line) otherwise."""

    title: str = ""
    blocks: list[tuple[str, str]] = field(default_factory=list)

    def first_heading(self) -> str | None:
        return next((text for kind, text in self.blocks if kind == "heading"), None)

    def text(self) -> str:
        return "\n".join(text for _, text in self.blocks)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = HtmlText()
        self._inline: list[str] = []
        self._hidden_depth = 0
        self._pre_depth = 0
        self._in_title = False
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden_depth += 1
        elif self._hidden_depth:
            return
        elif tag == "title":
            self._in_title = True
        elif tag in _SECTION_HEADINGS:
            self._flush()
            self._in_heading = True
        elif tag in _CELLS:
            if "".join(self._inline).strip():
                self._inline.append("\t")
        elif tag in _BLOCKS:
            self._flush()
            if tag == "pre":
                self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden_depth = max(0, self._hidden_depth - 1)
        elif self._hidden_depth:
            return
        elif tag == "title":
            self._in_title = False
        elif tag in _SECTION_HEADINGS:
            self._flush()
        elif tag in _BLOCKS:
            self._flush()
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            return
        if self._in_title:
            self.page.title += data
        elif self._pre_depth:
            self._inline.append(data)
        else:
            self._inline.append(_WHITESPACE.sub(" ", data))

    def close(self) -> None:
        super().close()
        self._flush()
        self.page.title = " ".join(self.page.title.split())

    def _flush(self) -> None:
        text = "".join(self._inline)
        self._inline = []
        if self._in_heading:
            self._in_heading = False
            heading = " ".join(text.split())
            if heading:
                self.page.blocks.append(("heading", heading))
        elif self._pre_depth:
            if text.strip():
                self.page.blocks.append(("text", text))
        else:
            lines = [line.strip(" ") for line in text.split("\n")]
            if any(lines):
                self.page.blocks.append(("text", "\n".join(lines)))


def parse_html(chunks: Iterable[str]) -> HtmlText:
    parser = _TextParser()
    for chunk in chunks:
        parser.feed(chunk)
    parser.close()
    return parser.page


def _read_chunks(handle: TextIO) -> Iterator[str]:
    try:
        while chunk := handle.read(_FEED_CHARS):
            yield chunk
    except UnicodeDecodeError as error:
        raise UnreadableDocument(NOT_UTF8) from error


def extract_html(path: Path) -> Extracted:
    """Visible text; h1-h3 start new segments ({"section": heading}), script/style/noscript/template dropped."""
    with path.open("rb") as file:
        encoding = text_encoding(file.read(4))
    with path.open(encoding=encoding) as handle, parser_failures("The HTML file could not be parsed."):
        page = parse_html(_read_chunks(handle))
    writer = SectionWriter()
    for kind, text in page.blocks:
        if kind == "heading":
            writer.start_section(text)
        else:
            writer.add(text)
    return finish(writer.segments(), None, "The HTML page contains no visible text.")
