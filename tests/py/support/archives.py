"""Reading an export archive back, as its owner would, and checking it against its manifest."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any


def open_archive(data: bytes) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None, "a damaged entry"
    return archive


def verified_manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    """manifest.json, after checking every JSON file's SHA-256, size and row count against it."""
    manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
    assert manifest["format"] == "quarry-export" and manifest["format_version"] == 1
    names = set(archive.namelist())
    for name, summary in manifest["files"].items():
        data = archive.read(name)
        assert hashlib.sha256(data).hexdigest() == summary["sha256"], f"{name}: checksum"
        assert len(data) == summary["bytes"], f"{name}: size"
        assert len(json.loads(data)) == summary["rows"], f"{name}: rows"
    originals = [name for name in names if name.startswith("originals/")]
    assert len(originals) == manifest["originals"]["files"]
    assert names == {"manifest.json", *manifest["files"], *originals}
    return manifest


def rows(archive: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(archive.read(name))
    return loaded


def everything(archive: zipfile.ZipFile) -> bytes:
    """Every entry's uncompressed bytes (and names), to search for what must not be there."""
    return b"\n".join(name.encode() + b"\n" + archive.read(name) for name in archive.namelist())
