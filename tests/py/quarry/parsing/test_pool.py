"""The parse pool: real child processes, real parsers, real hostile files."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quarry.dev.hostile import write_csv_of_one_line, write_html_of_nested_tags
from quarry.errors import Unavailable
from quarry.parsing import pool as pool_module
from quarry.parsing.budget import MIB, ExtractionBudget
from quarry.parsing.errors import UnreadableDocument
from quarry.parsing.extract import extract
from quarry.parsing.parse_child import PARSE_NICENESS, truncation_notice
from quarry.parsing.pool import ParsePool
from quarry.parsing.segments import Segment

DOCUMENTS = Path(__file__).resolve().parents[3] / "fixtures" / "documents"
BUDGET = ExtractionBudget(memory_mib=1024, processes=2, timeout_seconds=20, max_text_chars=1_000_000)


@pytest.fixture(scope="module")
def pool() -> Iterator[ParsePool]:
    pool = ParsePool(BUDGET)
    pool.warm()
    yield pool
    pool.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("name", "fmt"), [("sample.pdf", "pdf"), ("sample.docx", "docx"), ("sample.xlsx", "xlsx"), ("sample.json", "json")]
)
def test_a_child_extracts_exactly_what_extract_does(pool: ParsePool, name: str, fmt: str) -> None:
    assert pool.extract_blocking(DOCUMENTS / name, fmt) == extract(DOCUMENTS / name, fmt)


def test_an_unreadable_file_keeps_its_own_reason(pool: ParsePool) -> None:
    with pytest.raises(UnreadableDocument, match="damaged or not a PDF"):
        pool.extract_blocking(DOCUMENTS / "corrupt.pdf", "pdf")


def test_every_child_is_capped_at_its_share_of_the_budget(pool: ParsePool) -> None:
    pids = pool.child_pids()
    assert len(pids) == BUDGET.processes
    for pid in pids:
        limits = Path(f"/proc/{pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max address space"))
        assert line.split()[3:5] == [str(512 * MIB)] * 2


def test_every_child_runs_at_a_lower_cpu_priority_than_the_worker(pool: ParsePool) -> None:
    for pid in pool.child_pids():
        niceness = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert niceness == os.getpriority(os.PRIO_PROCESS, 0) + PARSE_NICENESS
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():  # the scheduler weighs sessions by their autogroup's niceness
            assert autogroup.read_text().split()[-1] == str(PARSE_NICENESS)


@pytest.mark.serial  # bounds a duration: runs alone, after the parallel pass
def test_a_file_that_needs_more_memory_fails_and_its_child_is_replaced(pool: ParsePool, tmp_path: Path) -> None:
    csv = tmp_path / "one-line.csv"
    write_csv_of_one_line(csv)
    before = set(pool.child_pids())
    started = time.monotonic()
    with pytest.raises(UnreadableDocument) as caught:
        pool.extract_blocking(csv, "csv")
    assert caught.value.reason == (
        "The file is too large or too complex to extract (it needed more than 512 MiB of memory or 20 seconds)."
    )
    assert time.monotonic() - started < 15
    after = set(pool.child_pids())
    assert len(after) == BUDGET.processes
    assert len(before - after) == 1
    assert not any(alive(pid) for pid in before - after)
    assert pool.extract_blocking(DOCUMENTS / "sample.pdf", "pdf").segments


@pytest.mark.serial  # bounds a duration: runs alone, after the parallel pass
def test_a_parse_past_its_deadline_is_killed(tmp_path: Path) -> None:
    html = tmp_path / "nested.html"
    write_html_of_nested_tags(html)
    pool = ParsePool(ExtractionBudget(memory_mib=512, processes=1, timeout_seconds=1, max_text_chars=1000))
    try:
        pool.warm()
        [child] = pool.child_pids()
        started = time.monotonic()
        with pytest.raises(UnreadableDocument, match=r"too large or too complex .* or 1 seconds\)"):
            pool.extract_blocking(html, "html")
        assert time.monotonic() - started < 3
        assert not alive(child)
        assert pool.extract_blocking(DOCUMENTS / "sample.txt", "txt").segments
    finally:
        pool.close()


def test_text_beyond_the_cap_is_cut_with_a_notice(tmp_path: Path) -> None:
    text = tmp_path / "long.md"
    text.write_text("# One\n" + "a" * 60 + "\n# Two\n" + "b" * 60 + "\n")
    pool = ParsePool(ExtractionBudget(memory_mib=512, processes=1, timeout_seconds=10, max_text_chars=100))
    try:
        segments = pool.extract_blocking(text, "md").segments
    finally:
        pool.close()
    assert segments == [
        Segment("# One\n" + "a" * 60, {"section": "One"}),  # 66 characters
        Segment("# Two\n" + "b" * 28, {"section": "Two"}),  # the other 34
        Segment(truncation_notice(100), {"note": "truncated"}),
    ]


def test_a_child_killed_while_idle_does_not_fail_the_next_document() -> None:
    pool = ParsePool(ExtractionBudget(memory_mib=512, processes=1, timeout_seconds=10, max_text_chars=1000))
    try:
        pool.warm()
        [child] = pool.child_pids()
        os.kill(child, signal.SIGKILL)
        time.sleep(0.2)
        assert pool.extract_blocking(DOCUMENTS / "sample.txt", "txt").segments
        assert pool.child_pids() != [child]
    finally:
        pool.close()


def test_callers_beyond_the_process_count_wait_their_turn() -> None:
    pool = ParsePool(ExtractionBudget(memory_mib=640, processes=2, timeout_seconds=10, max_text_chars=1000))

    async def many() -> list[int]:
        results = await asyncio.gather(*(pool.extract(DOCUMENTS / "sample.pdf", "pdf") for _ in range(8)))
        return [len(result.segments) for result in results]

    try:
        assert asyncio.run(many()) == [3] * 8
        assert len(pool.child_pids()) == 2
    finally:
        pool.close()


def test_closing_the_pool_ends_its_children() -> None:
    pool = ParsePool(ExtractionBudget(memory_mib=512, processes=1, timeout_seconds=10, max_text_chars=1000))
    pool.warm()
    [child] = pool.child_pids()
    pool.close()
    assert not alive(child)


def test_a_child_that_does_not_start_in_time_is_a_retryable_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "_START_SECONDS", 0.0)
    pool = ParsePool(ExtractionBudget(memory_mib=512, processes=1, timeout_seconds=10, max_text_chars=1000))
    try:
        with pytest.raises(Unavailable) as caught:
            pool.extract_blocking(DOCUMENTS / "sample.txt", "txt")
        assert caught.value.detail == "The worker could not start a parser."
        assert caught.value.retryable
        assert pool.child_pids() == []
        monkeypatch.undo()
        assert pool.extract_blocking(DOCUMENTS / "sample.txt", "txt").segments
    finally:
        pool.close()
