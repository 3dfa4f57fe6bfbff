from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest

from quarry.storage.scratch import scratch_directory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_directory_is_removed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    removed_on: list[int] = []
    real_rmtree = shutil.rmtree

    def rmtree(path: Path, ignore_errors: bool) -> None:
        removed_on.append(threading.get_ident())
        real_rmtree(path, ignore_errors)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    async with scratch_directory("quarry-test-") as workdir:
        (workdir / "file").write_bytes(b"x" * 1024)
    assert not workdir.exists()
    assert removed_on and removed_on[0] != loop_thread


@pytest.mark.anyio
async def test_the_directory_is_removed_when_the_work_fails() -> None:
    seen: list[Path] = []

    async def failing_work() -> None:
        async with scratch_directory("quarry-test-") as workdir:
            seen.append(workdir)
            (workdir / "file").write_bytes(b"x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await failing_work()
    assert not seen[0].exists()


@pytest.mark.anyio
async def test_the_directory_is_removed_when_the_work_is_cancelled() -> None:
    seen: list[Path] = []

    async def work() -> None:
        async with scratch_directory("quarry-test-") as workdir:
            seen.append(workdir)
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)  # the removal runs in a thread
    assert not seen[0].exists()
