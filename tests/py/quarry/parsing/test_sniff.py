"""sniff: the format comes from the content; the filename's extension can only make it refuse."""

from __future__ import annotations

import codecs
import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from quarry.parsing.errors import UnreadableDocument, UnsupportedDocument
from quarry.parsing.extract import extract
from quarry.parsing.sniff import FORMATS, TEXT_CHECKED_BYTES, Sniffed, sniff
from tests.fixtures.make_documents import DOCUMENTS

SAMPLES = {
    "sample.pdf": "pdf",
    "sample.txt": "txt",
    "sample.md": "md",
    "sample.json": "json",
    "sample.docx": "docx",
    "sample.pptx": "pptx",
    "sample.xlsx": "xlsx",
    "sample.csv": "csv",
    "sample.html": "html",
    "sample.epub": "epub",
}


def refusal(path: Path, filename: str | None) -> UnsupportedDocument:
    with pytest.raises(UnsupportedDocument) as caught:
        sniff(path, filename)
    return caught.value


def write(tmp_path: Path, data: bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_formats_name_every_supported_format_with_its_mime_type():
    assert set(FORMATS) == set(SAMPLES.values())
    assert FORMATS["pdf"] == "application/pdf"
    assert FORMATS["docx"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    assert FORMATS["epub"] == "application/epub+zip"


@pytest.mark.parametrize(("name", "fmt"), SAMPLES.items())
def test_each_sample_is_recognised_under_its_own_name(name, fmt):
    assert sniff(DOCUMENTS / name, name) == Sniffed(format=fmt, mime_type=FORMATS[fmt])


@pytest.mark.parametrize(
    ("name", "fmt"),
    # Without a name, Markdown and CSV are indistinguishable from plain text.
    {**SAMPLES, "sample.md": "txt", "sample.csv": "txt"}.items(),
)
def test_without_a_filename_the_content_decides(name, fmt):
    assert sniff(DOCUMENTS / name, None).format == fmt


def test_an_unknown_extension_does_not_override_the_content():
    assert sniff(DOCUMENTS / "sample.pdf", "scan.jpeg").format == "pdf"
    assert sniff(DOCUMENTS / "sample.docx", "letter.doc").format == "docx"


# --- extension/content mismatch -------------------------------------------------------------------


def test_an_elf_binary_named_pdf_is_refused_and_named():
    error = refusal(DOCUMENTS / "elf-binary.pdf", "elf-binary.pdf")
    assert error.reason == "The file is named .pdf but contains an ELF executable."
    assert error.detected == "ELF executable"


def test_an_elf_binary_without_a_name_is_refused_as_unsupported():
    error = refusal(DOCUMENTS / "elf-binary.pdf", None)
    assert error.reason == "This file type is not supported: it looks like an ELF executable."


def test_a_pdf_named_docx_is_refused():
    error = refusal(DOCUMENTS / "sample.pdf", "report.docx")
    assert error.reason == "The file is named .docx but contains PDF."
    assert error.detected == "PDF"


def test_a_docx_named_xlsx_is_refused():
    error = refusal(DOCUMENTS / "sample.docx", "budget.xlsx")
    assert error.reason == "The file is named .xlsx but contains DOCX."


def test_json_named_pdf_is_refused():
    assert refusal(DOCUMENTS / "sample.json", "data.pdf").reason == "The file is named .pdf but contains JSON."


def test_invalid_json_named_json_is_refused_with_the_parse_error():
    error = refusal(DOCUMENTS / "sample.txt", "data.json")
    assert error.reason.startswith("The file is named .json but is not valid JSON: Expecting value: line 1 column 1")


def test_a_json_scalar_named_json_is_refused(tmp_path):
    error = refusal(write(tmp_path, b"42\n"), "n.json")
    assert error.reason == "The file is named .json but its top level is a number, not an object or array."


def test_prose_named_csv_is_refused(tmp_path):
    prose = b"The quarry, as the survey noted, is old.\nIt closed in 1950, sadly.\nNothing more to add.\n"
    error = refusal(write(tmp_path, prose), "notes.csv")
    assert error.reason == "The file is named .csv but contains plain text."


def test_text_without_any_delimiter_named_csv_is_single_column_csv(tmp_path):
    assert sniff(write(tmp_path, b"rock\ngranite\nmarble\n"), "rocks.csv").format == "csv"


def test_semicolon_csv_is_csv(tmp_path):
    assert sniff(write(tmp_path, b"rock;tonnes\ngranite;12\nmarble;7\n"), "rocks.csv").format == "csv"


@pytest.mark.parametrize(
    ("fixture", "filename", "fmt"),
    [
        ("sample.json", "data.txt", "txt"),
        ("sample.html", "page.txt", "txt"),
        ("sample.html", "page.md", "md"),
        ("sample.csv", "rows.txt", "txt"),
        ("sample.md", "notes.markdown", "md"),
        ("deep.json", "nested.txt", "txt"),
    ],
)
def test_within_the_text_family_txt_md_and_csv_extensions_win(fixture, filename, fmt):
    assert sniff(DOCUMENTS / fixture, filename).format == fmt


def test_plain_text_named_html_is_refused_but_a_fragment_with_tags_is_html(tmp_path):
    assert refusal(DOCUMENTS / "sample.txt", "page.html").reason == "The file is named .html but contains plain text."
    assert sniff(write(tmp_path, b"Hello <b>there</b>, <p>granite</p>"), "page.htm").format == "html"


def test_html_is_recognised_after_whitespace_comments_and_an_xml_declaration(tmp_path):
    page = b'\n  <?xml version="1.0"?>\n<!-- generated -->\n<HTML><body>Granite</body></HTML>'
    assert sniff(write(tmp_path, page), None).format == "html"


def test_text_mentioning_html_is_not_html(tmp_path):
    assert sniff(write(tmp_path, b"Use <html> to start a page."), None).format == "txt"


def test_text_that_starts_like_json_but_is_not_json_is_plain_text(tmp_path):
    assert sniff(write(tmp_path, b"[INFO] quarry opened\n[INFO] quarry closed\n"), "log").format == "txt"


# --- JSON nesting -----------------------------------------------------------------------------------


def test_json_nested_ten_thousand_levels_is_refused():
    for filename in ("deep.json", None):
        error = refusal(DOCUMENTS / "deep.json", filename)
        assert error.reason == "The JSON is nested more than 64 levels."


@pytest.mark.parametrize(("depth", "accepted"), [(64, True), (65, False)])
def test_json_may_nest_exactly_64_levels(tmp_path, depth, accepted):
    path = write(tmp_path, b'{"a":' * (depth - 1) + b"[1]" + b"}" * (depth - 1), "x.json")
    if accepted:
        assert sniff(path, "x.json").format == "json"
    else:
        assert "nested more than 64 levels" in refusal(path, "x.json").reason


# --- binaries and ZIP containers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "detected"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(32), "PNG image"),
        (b"\xff\xd8\xff\xe0" + bytes(32), "JPEG image"),
        (b"GIF89a" + bytes(32), "GIF image"),
        (b"\x1f\x8b\x08\x00" + bytes(32), "gzip archive"),
        (b"MZ\x90\x00\x03\x00" + bytes(58) + b"PE\x00\x00", "Windows executable"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(32),
            "legacy Office file (.doc/.xls/.ppt) or password-protected Office document",
        ),
        (b"PK\x05\x06" + bytes(18), "empty ZIP archive"),
        (zip_bytes({"readme.txt": b"granite"}), "ZIP archive"),
        (zip_bytes({"mimetype": b"application/vnd.oasis.opendocument.text"}), "OpenDocument file"),
        (zip_bytes({"[Content_Types].xml": b"<Types/>", "visio/document.xml": b"<x/>"}), "Office Open XML package"),
        (b"PK\x03\x04" + bytes(range(200)), "damaged ZIP archive"),
    ],
)
def test_unsupported_binaries_are_named(tmp_path, data, detected):
    error = refusal(write(tmp_path, data), "upload.bin")
    assert error.detected == detected
    assert error.reason.startswith("This file type is not supported: it looks like ")


@pytest.mark.parametrize("start", [b"MZ", b"ID3", b"GIF89a", b"fLaC"])
def test_text_that_starts_like_a_printable_signature_is_still_text(tmp_path, start):
    assert sniff(write(tmp_path, start + b" is written on the old quarry map."), None).format == "txt"


def test_rtf_is_refused_although_it_is_text(tmp_path):
    assert refusal(write(tmp_path, b"{\\rtf1\\ansi Granite}"), None).detected == "RTF document"


def test_nul_bytes_make_a_file_binary(tmp_path):
    path = write(tmp_path, b"granite\x00marble")
    assert refusal(path, "rocks.txt").reason == "The file is named .txt but contains unrecognised binary data."
    error = refusal(path, None)
    assert error.reason == "This file type is not supported: it looks like unrecognised binary data."
    assert error.detected is None


def test_a_zip_with_an_entry_expanding_too_far_is_refused_as_a_zip_bomb(tmp_path):
    data = zip_bytes({"[Content_Types].xml": b"<Types/>", "word/document.xml": bytes(2 * 1024 * 1024)})
    error = refusal(write(tmp_path, data), "bomb.docx")
    assert "zip bomb" in error.reason
    assert error.detected == "zip bomb"


def test_a_zip_with_too_many_entries_is_refused_as_a_zip_bomb(tmp_path):
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as archive:
        for index in range(10_001):
            archive.writestr(f"e{index}", b"")
    assert "10,001 entries" in refusal(path, "many.docx").reason


# --- text encodings -----------------------------------------------------------------------------------


def test_latin1_text_is_refused_with_the_offending_byte_and_offset():
    error = refusal(DOCUMENTS / "latin1.txt", "latin1.txt")
    assert error.reason == "The file is not UTF-8 text (invalid byte 0xE9 at offset 10); save it as UTF-8."


def test_the_offset_of_an_invalid_byte_is_exact_across_read_chunks(tmp_path):
    # A two-byte character straddles the 1 MiB chunk boundary; the bad byte comes after it.
    data = b"a" * (1024 * 1024 - 1) + "é".encode() + b"bc\xffd"
    error = refusal(write(tmp_path, data), "big.txt")
    assert f"invalid byte 0xFF at offset {1024 * 1024 + 3}" in error.reason


def test_utf8_with_a_bom_is_text(tmp_path):
    assert sniff(write(tmp_path, codecs.BOM_UTF8 + b"Granite"), "a.txt").format == "txt"
    assert sniff(write(tmp_path, codecs.BOM_UTF8 + b'{"rock": "granite"}'), None).format == "json"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_bom_is_text(tmp_path, encoding):
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    assert sniff(write(tmp_path, bom + "Granite é".encode(encoding)), "a.txt").format == "txt"
    assert sniff(write(tmp_path, bom + '{"rock": "granite"}'.encode(encoding)), None).format == "json"
    assert sniff(write(tmp_path, bom + "<!doctype html><p>x</p>".encode(encoding)), None).format == "html"


def test_utf16_without_a_bom_is_not_text(tmp_path):
    assert refusal(write(tmp_path, "Granite".encode("utf-16-le")), "a.txt").detected is None


def test_utf32_is_refused_with_advice(tmp_path):
    error = refusal(write(tmp_path, codecs.BOM_UTF32_LE + "Granite".encode("utf-32-le")), "a.txt")
    assert error.reason == "The file is UTF-32 text, which is not supported; save it as UTF-8."


def test_an_empty_file_is_refused():
    error = refusal(DOCUMENTS / "empty.txt", "empty.txt")
    assert error.reason == "The file is empty."
    assert error.detected == "empty file"


# --- untrusted filenames ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        None,
        "",
        "report",
        "../../etc/passwd.pdf",
        "..\\..\\windows\\report.PDF",
        "C:\\Users\\me\\report.pdf",
        "a.b.c.tar.pdf",
        "é" * 995 + ".pdf",
        "文件" * 500,
        ".pdf",
        "report.pdf.",
        "report.pdf ",
        "nul\x00byte.pdf",
        "/",
        ".",
        "..",
    ],
)
def test_odd_filenames_never_stop_a_pdf_being_a_pdf(filename):
    assert sniff(DOCUMENTS / "sample.pdf", filename).format == "pdf"


def test_a_traversal_filename_only_contributes_its_extension(tmp_path):
    # /etc/passwd exists and is text; the content at path is what counts.
    assert sniff(DOCUMENTS / "sample.pdf", "../../../../etc/passwd").format == "pdf"
    error = refusal(DOCUMENTS / "sample.txt", "../../etc/passwd.pdf")
    assert error.reason == "The file is named .pdf but contains plain text."


def test_a_long_unicode_name_with_a_wrong_extension_is_refused():
    error = refusal(DOCUMENTS / "sample.txt", "Überprüfung " * 80 + ".docx")
    assert error.reason == "The file is named .docx but contains plain text."


def test_extensions_are_case_insensitive():
    assert sniff(DOCUMENTS / "sample.docx", "LETTER.DOCX").format == "docx"
    assert refusal(DOCUMENTS / "sample.docx", "LETTER.PPTX").reason == "The file is named .pptx but contains DOCX."


# --- bounded reading: the gateway judges an upload by its head --------------------------------------


def test_a_60_mib_json_is_sniffed_from_its_head_in_bounded_memory(tmp_path):
    from quarry.dev.hostile import write_json_of_empty_objects

    path = tmp_path / "objects.json"
    write_json_of_empty_objects(path)
    tracemalloc.start()
    try:
        assert sniff(path, "objects.json").format == "json"
        assert sniff(path, None).format == "json"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_a_long_json_that_turns_invalid_after_the_head_is_left_to_the_worker(tmp_path):
    # Was refused at upload when sniff parsed whole files; the worker's extraction now refuses it.
    data = b'{"rows": [' + b'"granite", ' * 20_000 + b"oops]}"
    path = write(tmp_path, data, "rows.json")
    assert sniff(path, "rows.json").format == "json"
    with pytest.raises(UnreadableDocument, match="The file is not valid JSON"):
        extract(path, "json")


def test_a_long_file_that_only_starts_with_a_bracket_is_text(tmp_path):
    log = b"[INFO] quarry opened\n" * 10_000
    assert sniff(write(tmp_path, log), None).format == "txt"
    with pytest.raises(UnsupportedDocument, match="does not begin like a JSON object or array"):
        sniff(write(tmp_path, log, "log.json"), "log.json")


def test_a_long_json_nested_too_deep_in_its_head_is_refused_at_upload(tmp_path):
    data = b'{"a":' * 100 + b"[" + b"1," * 100_000 + b"1]" + b"}" * 100
    assert "nested more than 64 levels" in refusal(write(tmp_path, data, "deep.json"), "deep.json").reason


def test_a_string_cut_by_the_end_of_the_head_still_starts_like_json(tmp_path):
    data = b'{"text": "' + b"granite " * 20_000 + b'"}'
    assert sniff(write(tmp_path, data), None).format == "json"


def test_an_invalid_byte_beyond_the_checked_prefix_is_left_to_the_worker(tmp_path):
    data = b"granite\n" * (TEXT_CHECKED_BYTES // 8) + b"caf\xe9\n"
    path = write(tmp_path, data, "notes.txt")
    assert sniff(path, "notes.txt").format == "txt"
    with pytest.raises(UnreadableDocument, match="not UTF-8"):
        extract(path, "txt")
