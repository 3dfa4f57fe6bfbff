"""extract: cleaned text with positions for every format, and a clear reason when there is none."""

from __future__ import annotations

import codecs
import io
import json
import logging
import shutil
import time
import tracemalloc
import unicodedata
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from quarry.parsing import office, textfiles
from quarry.parsing.errors import UnreadableDocument, UnsupportedDocument
from quarry.parsing.extract import Extracted, Segment, extract
from quarry.parsing.sniff import sniff
from tests.fixtures.make_documents import DOCUMENTS, SENTENCES
from tests.py.support.hostile import MIB, write_docx_bomb

SAMPLE_FORMATS = ["pdf", "txt", "md", "json", "docx", "pptx", "xlsx", "csv", "html", "epub"]


def unreadable(path: Path, fmt: str) -> UnreadableDocument:
    with pytest.raises(UnreadableDocument) as caught:
        extract(path, fmt)
    return caught.value


def sample(fmt: str) -> Extracted:
    return extract(DOCUMENTS / f"sample.{fmt}", fmt)


def positions(extracted: Extracted) -> list[dict[str, int | str]]:
    return [segment.position for segment in extracted.segments]


def write(tmp_path: Path, data: bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- every format -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", SAMPLE_FORMATS)
def test_every_sample_extracts_clean_text(fmt):
    segments = sample(fmt).segments
    assert segments
    for segment in segments:
        text = segment.text
        assert text == text.strip(" \n")
        assert text == unicodedata.normalize("NFC", text)
        assert "\r" not in text
        assert "  " not in text
        assert "\n\n\n" not in text
        assert all(char in "\n\t" or unicodedata.category(char) != "Cc" for char in text)


@pytest.mark.parametrize("fmt", SAMPLE_FORMATS)
def test_the_sniffed_format_round_trips_into_extract(fmt):
    path = DOCUMENTS / f"sample.{fmt}"
    assert extract(path, sniff(path, path.name).format).segments == sample(fmt).segments


def test_an_unknown_format_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown document format 'rtf'"):
        extract(DOCUMENTS / "sample.txt", "rtf")


def test_an_empty_file_has_a_clear_reason():
    assert unreadable(DOCUMENTS / "empty.txt", "txt").reason == "The file is empty."


# --- PDF -------------------------------------------------------------------------------------------------


def test_pdf_has_one_segment_per_page():
    extracted = sample("pdf")
    assert extracted.page_count == 3
    assert positions(extracted) == [{"page": 1}, {"page": 2}, {"page": 3}]
    for number, (segment, sentence) in enumerate(zip(extracted.segments, SENTENCES["pdf"], strict=True), start=1):
        assert segment.text == f"Page {number}\n{sentence}\nQuarry records, volume one."


def test_a_password_protected_pdf_is_unreadable():
    assert unreadable(DOCUMENTS / "encrypted.pdf", "pdf").reason == "The PDF is password-protected."


def test_a_pdf_encrypted_only_with_an_owner_password_opens_with_the_empty_password(tmp_path):
    writer = PdfWriter(clone_from=DOCUMENTS / "sample.pdf")
    writer.encrypt(user_password="", owner_password="owner-only", algorithm="AES-128")
    path = tmp_path / "owner.pdf"
    writer.write(path)
    assert PdfReader(path).is_encrypted
    assert SENTENCES["pdf"][1] in extract(path, "pdf").segments[1].text


def test_a_corrupt_pdf_is_unreadable():
    reason = unreadable(DOCUMENTS / "corrupt.pdf", "pdf").reason
    assert reason == "The PDF is damaged or not a PDF, and could not be read."


def test_a_scanned_pdf_without_a_text_layer_is_unreadable():
    reason = unreadable(DOCUMENTS / "scanned.pdf", "pdf").reason
    assert reason == "The PDF has no text layer (scanned images?); OCR is not supported."


def test_pypdf_does_not_log_warnings_for_a_pdf_it_repairs(tmp_path, caplog):
    # A wrong startxref makes pypdf rebuild the cross-reference table, which it reports as warnings.
    data = (DOCUMENTS / "sample.pdf").read_bytes()
    broken = data[: data.rindex(b"startxref")] + b"startxref\n99\n%%EOF\n"
    with caplog.at_level(logging.DEBUG):
        extracted = extract(write(tmp_path, broken), "pdf")
        unreadable(DOCUMENTS / "corrupt.pdf", "pdf")
    assert SENTENCES["pdf"][2] in extracted.segments[2].text
    assert [record for record in caplog.records if record.name.startswith("pypdf")] == []


# --- DOCX -------------------------------------------------------------------------------------------------


def test_docx_headings_start_sections_and_tables_keep_their_rows():
    extracted = sample("docx")
    assert extracted.page_count is None
    assert extracted.segments == [
        Segment("A survey of the northern ridge.", {}),
        Segment(f"Geology\n{SENTENCES['docx'][0]}\nMineral\tShare\nQuartz\t35%\tVeins", {"section": "Geology"}),
        Segment(
            "Operations\nWork stops when the wind exceeds sixty kilometres an hour.",
            {"section": "Operations"},
        ),
    ]


def test_a_damaged_docx_is_unreadable(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", b"<Types")
        archive.writestr("word/document.xml", b"not xml")
    reason = unreadable(write(tmp_path, out.getvalue()), "docx").reason
    assert reason == "The DOCX file is damaged or is not a Word document."


def test_a_truncated_docx_is_unreadable(tmp_path):
    data = (DOCUMENTS / "sample.docx").read_bytes()
    reason = unreadable(write(tmp_path, data[: len(data) // 2]), "docx").reason
    assert reason == "The DOCX file is damaged or is not a Word document."


@pytest.fixture(scope="module")
def docx_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.docx"
    write_docx_bomb(path, 1024 * MIB)
    return path


def test_a_docx_zip_bomb_is_refused_quickly_in_bounded_memory(docx_bomb):
    with zipfile.ZipFile(docx_bomb) as archive:
        assert archive.getinfo("word/document.xml").file_size >= 1024 * MIB
    tracemalloc.start()
    started = time.monotonic()
    try:
        reason = unreadable(docx_bomb, "docx").reason
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "looks like a zip bomb" in reason
    assert elapsed < 2
    assert peak < 64 * MIB


def test_the_docx_bomb_is_also_refused_at_upload(docx_bomb):
    with pytest.raises(UnsupportedDocument) as caught:
        sniff(docx_bomb, "bomb.docx")
    assert "looks like a zip bomb" in caught.value.reason


def test_a_docx_just_under_the_limits_is_read(tmp_path):
    # Spaces compress about 1000:1, so stay under the 1 MiB size from which the ratio counts.
    path = tmp_path / "padded.docx"
    write_docx_bomb(path, MIB - 1)
    assert extract(path, "docx").segments == [Segment("Boom", {})]


@pytest.mark.parametrize("fmt", ["docx", "pptx", "xlsx", "epub"])
def test_every_zip_format_refuses_an_entry_that_expands_too_far(tmp_path, fmt):
    path = tmp_path / f"ratio.{fmt}"
    shutil.copy(DOCUMENTS / f"sample.{fmt}", path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.bin", bytes(2 * MIB))
    assert "expands" in unreadable(path, fmt).reason


def test_a_zip_with_too_many_entries_is_refused_before_it_is_opened(tmp_path):
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(10_001):
            archive.writestr(f"e{index}", b"")
    assert unreadable(path, "docx").reason == (
        "The archive looks like a zip bomb: it declares 10,001 entries (the limit is 10,000)."
    )


# --- PPTX and XLSX -------------------------------------------------------------------------------------


def test_pptx_has_one_segment_per_slide_with_tables_and_notes():
    extracted = sample("pptx")
    assert extracted.page_count == 2
    assert extracted.segments == [
        Segment(f"Quarterly review\n{SENTENCES['pptx'][0]}", {"slide": 1}),
        Segment(f"Next quarter\nShift\tTonnes\nNight\t4100\n\n{SENTENCES['pptx'][1]}", {"slide": 2}),
    ]


def test_xlsx_has_one_segment_per_sheet_as_tab_separated_rows():
    extracted = sample("xlsx")
    assert extracted.page_count == 2
    assert extracted.segments == [
        Segment(
            f"Rock\tTonnes\tShipped\tNote\nGranite\t1200\t2024-03-01\nSandstone\t2.5\t\t{SENTENCES['xlsx'][0]}",
            {"sheet": "Q1"},
        ),
        Segment(f"Rock\tTonnes\tNote\nLimestone\t800\t{SENTENCES['xlsx'][1]}", {"sheet": "Q2"}),
    ]


def test_xlsx_says_where_it_truncated_a_long_sheet(monkeypatch):
    monkeypatch.setattr(office, "MAX_ROWS_PER_SHEET", 2)
    first, second = sample("xlsx").segments
    assert first.text == "Rock\tTonnes\tShipped\tNote\nGranite\t1200\t2024-03-01\n[truncated after 2 rows]"
    assert second.text == f"Rock\tTonnes\tNote\nLimestone\t800\t{SENTENCES['xlsx'][1]}"


# --- text family -----------------------------------------------------------------------------------------


def test_txt_is_one_cleaned_segment():
    extracted = sample("txt")
    assert extracted.page_count is None
    assert extracted.segments == [
        Segment(f"Quarry notes\n\n{SENTENCES['txt'][0]}\nThe Caf\u00e9 by the gate opens at dawn.", {}),
    ]


@pytest.mark.parametrize(
    "encoded",
    [
        codecs.BOM_UTF8 + "Granite é\r\nMarble".encode(),
        codecs.BOM_UTF16_LE + "Granite é\r\nMarble".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "Granite é\r\nMarble".encode("utf-16-be"),
    ],
)
def test_byte_order_marks_are_decoded_and_dropped(tmp_path, encoded):
    assert extract(write(tmp_path, encoded), "txt").segments == [Segment("Granite é\nMarble", {})]


def test_cleaning_strips_controls_and_collapses_space_but_keeps_tabs(tmp_path):
    raw = "  a\u00a0\u00a0b\x00c\x1b[0m\u200bd\te\f\f\n\n\n\n\nf \n\x85g\u2028h  \n"
    assert extract(write(tmp_path, raw.encode()), "txt").segments == [Segment("a bc[0m\u200bd\te\n\nf\n\ng\nh", {})]


def test_a_whitespace_only_text_file_has_no_text(tmp_path):
    assert unreadable(write(tmp_path, b" \n\t\r\n\x00"), "txt").reason == "The text file contains no text."


def test_non_utf8_text_is_unreadable():
    assert unreadable(DOCUMENTS / "latin1.txt", "txt").reason == "The file is not UTF-8 text; save it as UTF-8."


def test_markdown_headings_outside_code_fences_start_sections():
    extracted = sample("md")
    assert positions(extracted) == [{}, {"section": "Quarry guide"}, {"section": "Extraction"}, {"section": "Safety"}]
    extraction = extracted.segments[2].text
    assert extraction.startswith(f"## Extraction\n\n{SENTENCES['md'][0]}\n\n```sh\n# this is a shell comment")
    assert extracted.segments[3].text.endswith("#### Fine print stays in its section\n\nVisitors must sign in.")


def test_markdown_heading_syntax(tmp_path):
    text = b"#hashtag is not a heading\n## Closed heading ##\nbody\n    # indented code, not a heading\n"
    extracted = extract(write(tmp_path, text), "md")
    assert extracted.segments == [
        Segment("#hashtag is not a heading", {}),
        Segment("## Closed heading ##\nbody\n # indented code, not a heading", {"section": "Closed heading"}),
    ]


def test_json_is_flattened_to_searchable_paths():
    extracted = sample("json")
    assert extracted.segments == [
        Segment(
            "quarry.name: Northern Ridge\n"
            "quarry.depth_m: 42\n"
            "quarry.open: true\n"
            "quarry.rocks[0]: granite\n"
            "quarry.rocks[1].kind: basalt\n"
            f"quarry.rocks[1].note: {SENTENCES['json'][0]}\n"
            "closed: null",
            {},
        )
    ]


def test_json_too_deep_to_sniff_is_also_unreadable():
    assert unreadable(DOCUMENTS / "deep.json", "json").reason == "The JSON is nested more than 64 levels."


def test_json_lone_surrogates_are_dropped(tmp_path):
    path = write(tmp_path, json.dumps({"rock": "gran\ud800ite"}).encode())
    assert extract(path, "json").segments == [Segment("rock: granite", {})]


def test_csv_rows_become_tab_separated_lines():
    extracted = sample("csv")
    assert extracted.segments == [
        Segment(
            "rock\ttonnes\tdestination\n"
            "granite\t1200\tHarbour wall, north pier\n"
            f"gravel\t5400\t{SENTENCES['csv'][0]}\n"
            "slate\t300\tVillage roofs",
            {"rows": "1-4"},
        )
    ]


def test_long_csv_is_split_into_row_ranges_that_repeat_the_header(monkeypatch):
    monkeypatch.setattr(textfiles, "CSV_ROWS_PER_SEGMENT", 3)
    extracted = sample("csv")
    assert extracted.segments == [
        Segment("rock\ttonnes\tdestination\ngranite\t1200\tHarbour wall, north pier\n"
                f"gravel\t5400\t{SENTENCES['csv'][0]}", {"rows": "1-3"}),
        Segment("rock\ttonnes\tdestination\nslate\t300\tVillage roofs", {"rows": "4-4"}),
    ]  # fmt: skip


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_csv_with_a_byte_order_mark(tmp_path, encoding):
    path = write(tmp_path, "rock;tonnes\r\ngranite;12\r\n".encode(encoding))
    assert extract(path, "csv").segments == [Segment("rock\ttonnes\ngranite\t12", {"rows": "1-2"})]


def test_a_csv_field_over_the_size_limit_is_unreadable(tmp_path):
    path = write(tmp_path, b'a,b\n1,"' + b"x" * 200_000 + b'"\n')
    assert unreadable(path, "csv").reason.startswith("The CSV file could not be parsed: field larger than field limit")


# --- HTML and EPUB ---------------------------------------------------------------------------------------


def test_html_keeps_visible_text_and_splits_at_h1_to_h3():
    extracted = sample("html")
    assert extracted.segments == [
        Segment("Opening hours: nine to five.", {}),
        Segment(
            f"Visitor centre\n{SENTENCES['html'][0]}\nAmmonites\nTrilobites",
            {"section": "Visitor centre"},
        ),
        Segment(
            "Prices & tickets\nTicket\tPrice\nAdult\t5 €\nSmall print\nChildren go free.\nDogs on leads.",
            {"section": "Prices & tickets"},
        ),
    ]
    text = "\n".join(segment.text for segment in extracted.segments)
    for hidden in ("do not index me", "color: red", "Hidden noscript text", "Hidden template text"):
        assert hidden not in text


def test_html_preformatted_text_keeps_its_line_breaks(tmp_path):
    page = b"<p>Before   the\n  code</p><pre>line one\n  line two</pre>"
    assert extract(write(tmp_path, page), "html").segments == [Segment("Before the code\nline one\n line two", {})]


def test_html_without_visible_text_is_unreadable(tmp_path):
    page = b"<html><head><title>Only a title</title><script>x = 1</script></head><body> </body></html>"
    assert unreadable(write(tmp_path, page), "html").reason == "The HTML page contains no visible text."


def test_epub_follows_the_spine_with_one_segment_per_item():
    extracted = sample("epub")
    assert extracted.page_count == 2
    assert extracted.segments == [
        Segment(f"The Opening Cut\n{SENTENCES['epub'][0]}", {"section": "The Opening Cut"}),
        Segment(f"{SENTENCES['epub'][1]}\nWater filled the pit within a year.", {"section": "Last Blast"}),
    ]


def write_epub(path: Path, chapters: list[bytes], encrypted: tuple[str, ...] = ()) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="book.opf" media-type="application/oebps-package+xml"/></rootfiles></container>',
        )
        items = "".join(
            f'<item id="c{n}" href="c{n}.xhtml" media-type="application/xhtml+xml"/>' for n in range(len(chapters))
        )
        refs = "".join(f'<itemref idref="c{n}"/>' for n in range(len(chapters)))
        archive.writestr(
            "book.opf",
            f'<package xmlns="http://www.idpf.org/2007/opf"><manifest>{items}</manifest><spine>{refs}</spine></package>',
        )
        for n, chapter in enumerate(chapters):
            archive.writestr(f"c{n}.xhtml", chapter)
        if encrypted:
            references = "".join(
                f'<EncryptedData xmlns="http://www.w3.org/2001/04/xmlenc#"><CipherData>'
                f'<CipherReference URI="{name}"/></CipherData></EncryptedData>'
                for name in encrypted
            )
            archive.writestr(
                "META-INF/encryption.xml",
                f'<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container">{references}</encryption>',
            )


def test_an_epub_item_without_heading_or_title_is_named_by_its_spine_number(tmp_path):
    path = tmp_path / "book.epub"
    write_epub(path, [b"<html><body><p>Granite.</p></body></html>", b"<html><body><p>Marble.</p></body></html>"])
    assert extract(path, "epub").segments == [Segment("Granite.", {"section": 1}), Segment("Marble.", {"section": 2})]


def test_a_drm_protected_epub_is_unreadable(tmp_path):
    path = tmp_path / "book.epub"
    write_epub(path, [b"\x8f\x12binary ciphertext"], encrypted=("c0.xhtml",))
    assert unreadable(path, "epub").reason == "The EPUB is DRM-protected; its text cannot be read."


def test_an_epub_without_a_package_is_unreadable(tmp_path):
    path = tmp_path / "book.epub"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
    assert unreadable(path, "epub").reason.startswith("The EPUB file is damaged")


@pytest.mark.parametrize("fmt", ["pdf", "txt", "md", "json", "docx", "pptx", "xlsx", "csv", "html", "epub"])
def test_extraction_ignores_the_file_name(tmp_path, fmt):
    """Stored blobs have no extension; no parser may depend on one."""
    path = tmp_path / "original"
    shutil.copy(DOCUMENTS / f"sample.{fmt}", path)
    assert extract(path, fmt).segments


# --- caps sized to the extraction budget ------------------------------------------------------------


def test_json_with_more_than_a_million_objects_is_refused(tmp_path):
    path = write(tmp_path, b"[" + b"{}," * textfiles.MAX_JSON_OBJECTS + b"{}]")
    assert unreadable(path, "json").reason == (
        "The JSON holds more than 1,000,000 objects; split it into smaller files."
    )


def test_json_with_a_million_objects_is_read(tmp_path):
    path = write(tmp_path, b"[" + b'{"a":1},' * (textfiles.MAX_JSON_OBJECTS - 1) + b'{"a":2}]')
    lines = extract(path, "json").segments[0].text.splitlines()
    assert len(lines) == textfiles.MAX_JSON_OBJECTS
    assert lines[-1] == f"[{textfiles.MAX_JSON_OBJECTS - 1}].a: 2"


def test_a_docx_with_more_xml_than_the_cap_is_refused_at_upload_and_in_the_worker(tmp_path):
    from quarry.parsing.zipguard import MAX_MARKUP_UNCOMPRESSED

    # Spaces also exceed the compression ratio; the XML cap is checked first, so it names the reason.
    path = tmp_path / "long.docx"
    write_docx_bomb(path, MAX_MARKUP_UNCOMPRESSED + MIB)
    expected = "The document holds more than 12 MiB of XML, more than Quarry extracts from one file"
    assert unreadable(path, "docx").reason.startswith(expected)
    with pytest.raises(UnsupportedDocument, match=expected):
        sniff(path, "long.docx")


@pytest.mark.parametrize("name", ["xml-at-cap.docx", "xml-at-cap.pptx", "xml-at-cap.xlsx", "xml-at-cap.epub"])
def test_hostile_zip_formats_at_the_xml_cap_pass_the_guard(tmp_path, name):
    from quarry.dev import hostile
    from quarry.parsing.zipguard import MARKUP_SUFFIXES, MAX_MARKUP_UNCOMPRESSED, check_zip_bounds

    path = tmp_path / name
    writer = {
        "docx": hostile.write_docx_at_cap,
        "pptx": hostile.write_pptx_at_cap,
        "xlsx": hostile.write_xlsx_at_cap,
        "epub": hostile.write_epub_at_cap,
    }[path.suffix[1:]]
    writer(path)
    check_zip_bounds(path)
    with zipfile.ZipFile(path) as archive:
        markup = sum(info.file_size for info in archive.infolist() if info.filename.endswith(MARKUP_SUFFIXES))
    assert MAX_MARKUP_UNCOMPRESSED - 64 * 1024 < markup <= MAX_MARKUP_UNCOMPRESSED
