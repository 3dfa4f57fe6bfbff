"""Local scratch space for a file on its way through (an upload, a download to parse)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def scratch_directory(prefix: str) -> AsyncIterator[Path]:
    """A temporary directory, created and removed off the event loop.

    Removing a file of tens of megabytes that is still being written back can take the
    filesystem tens of milliseconds: on the loop, every other request would wait for it.
    """
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=prefix))
    try:
        yield path
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)
