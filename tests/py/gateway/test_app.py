"""The gateway process loads what HTTP needs, not the worker's parsers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from quarry.settings import Settings
from tests.py.support.database import DatabaseUrls, gateway_env
from tests.py.support.tokens import JwksServer

# Text extraction is the worker's: the PDF and Office parsers, and the extractor that loads them.
WORKER_ONLY_MODULES = (
    "pypdf",
    "docx",
    "pptx",
    "openpyxl",
    "quarry.parsing.extract",
    "quarry.parsing.pdf",
    "quarry.parsing.office",
    "quarry.documents.ingest",
    "procrastinate",
    "worker",
)

PROBE = """
import json, sys
from starlette.testclient import TestClient
from gateway.app import create_app
from quarry.settings import Settings

with TestClient(create_app(Settings.from_env())) as client:
    assert client.get("/readyz").status_code == 200, client.get("/readyz").text
    assert client.get("/openapi.json").status_code == 200
print(json.dumps(sorted(sys.modules)))
"""


def test_the_gateway_process_does_not_load_the_parsers(
    database: DatabaseUrls, jwks_server: JwksServer, tmp_path: Path
) -> None:
    env = gateway_env(database, jwks_server, tmp_path)
    Settings.from_env(env)  # the probe's settings are valid
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, "PATH": ""}, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert "gateway.app" in loaded and "quarry.parsing.sniff" in loaded, "the probe did not start the gateway"
    leaked = sorted(
        name
        for name in loaded
        if any(name == module or name.startswith(module + ".") for module in WORKER_ONLY_MODULES)
    )
    assert leaked == []
