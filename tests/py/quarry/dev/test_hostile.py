"""quarry.dev.hostile: every hostile file is built in bounded memory and passes the gateway's sniff."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from quarry.dev.hostile import BIG_FILE_BYTES, MIB, write_hostile_files
from quarry.parsing.sniff import sniff


def test_every_hostile_file_is_streamed_to_disk_and_sniffs_as_its_format(tmp_path: Path) -> None:
    # The Office libraries make the ZIP formats' base packages; importing them is not building.
    import docx  # noqa: F401
    import openpyxl  # type: ignore[import-untyped]  # noqa: F401
    import pptx  # noqa: F401

    tracemalloc.start()
    try:
        files = write_hostile_files(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB
    assert sorted(files) == [
        "deeply-nested.pdf",
        "empty-objects.json",
        "huge-page.pdf",
        "nested-tags.html",
        "one-line.csv",
        "xml-at-cap.docx",
        "xml-at-cap.epub",
        "xml-at-cap.pptx",
        "xml-at-cap.xlsx",
    ]
    for name, path in files.items():
        assert sniff(path, name).format == path.suffix[1:], name
    assert BIG_FILE_BYTES - 3 <= files["empty-objects.json"].stat().st_size <= BIG_FILE_BYTES
    assert files["one-line.csv"].read_bytes().count(b"\n") == 1
    assert files["one-line.csv"].stat().st_size > BIG_FILE_BYTES
