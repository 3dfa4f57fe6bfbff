"""The real stripe-webhook Edge Function under Deno, as a subprocess, for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from quarry.dev.webhook import webhook_command
from quarry.paths import WEBHOOK_DIR
from tests.py.support.processes import stop, wait_for


@contextmanager
def running_webhook(env: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """The function on env's PORT until the block ends; yields its URL once it answers."""
    url = f"http://127.0.0.1:{env['PORT']}/stripe-webhook"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            webhook_command(), cwd=WEBHOOK_DIR, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def ready() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return httpx.get(url, timeout=1).status_code == 405
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=60, message="the stripe-webhook function")
        yield url
    finally:
        stop(process, timeout=10)
