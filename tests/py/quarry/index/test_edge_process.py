"""Qdrant Edge hosted in a child process: the caller keeps running while the child builds the index.

(The shared VectorIndex contract runs on this backend in test_contract.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from quarry.dev.stalls import longest_stall
from quarry.index import IndexPoint, IndexUnavailable
from quarry.index.base import DENSE_SIZE
from quarry.index.edge import EdgeIndex
from quarry.index.edge_process import EdgeProcessIndex
from quarry.index.handle import open_vector_index
from quarry.paths import REPO_ROOT
from quarry.settings import Settings, SettingsError
from tests.py.quarry.index.test_contract import document

BUILD_POINTS = 8000


def gone(pid: int, timeout: float) -> bool:
    """Whether the process has exited (a zombie not yet reaped counts: it holds nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def random_points(count: int, seed: int) -> list[IndexPoint]:
    """Points on random directions: enough of them (above the engine's indexing threshold) make a long build."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DENSE_SIZE))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    created = datetime.now(UTC)
    return [
        IndexPoint(uuid.uuid4(), uuid.uuid4(), vector.tolist(), [1 + i % 50], [1.0], "upload", "text/plain", created, 0)
        for i, vector in enumerate(vectors)
    ]


def test_building_the_index_in_the_child_leaves_the_callers_threads_running(tmp_path: Path) -> None:
    index = EdgeProcessIndex(tmp_path / "shard")
    try:
        tenant = uuid.uuid4()
        points = random_points(BUILD_POINTS, seed=1)
        for start in range(0, BUILD_POINTS, 1000):
            index.upsert(tenant, points[start : start + 1000])
        took, stall = longest_stall(index.optimize)
        # In-process, the GIL is held for the whole build: the stall would be as long as the call.
        assert took > 0.5, f"the build took {took:.2f} s: too short to tell"
        assert stall < took / 3, f"the caller stalled {stall:.2f} s of a {took:.2f} s build"
        assert index.count(tenant) == BUILD_POINTS
    finally:
        index.close()


def test_a_killed_child_fails_the_call_and_the_next_call_starts_another_with_the_data(tmp_path: Path) -> None:
    index = EdgeProcessIndex(tmp_path / "shard")
    try:
        tenant, doc = uuid.uuid4(), uuid.uuid4()
        points = document(doc, 5, seed=7)
        index.upsert(tenant, points)
        first = index.child_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert gone(first, 5)
        with pytest.raises(IndexUnavailable, match="stopped"):
            index.count(tenant)
        assert index.document_point_ids(tenant, doc) == {point.id for point in points}
        assert index.child_pid() not in (None, first)
    finally:
        index.close()
    with pytest.raises(IndexUnavailable, match="closed"):
        index.count(uuid.uuid4())


def test_the_child_exits_with_its_parent_and_releases_the_shard(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from quarry.index.edge_process import EdgeProcessIndex\n"
        "index = EdgeProcessIndex(Path(sys.argv[1]))\n"
        "print(index.child_pid(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "shard")],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        with pytest.raises(IndexUnavailable, match="another process"):
            EdgeIndex(tmp_path / "shard")
        parent.kill()  # no clean-up: SIGKILL
        parent.wait(10)
        assert gone(child, 10), "the Edge child outlived its parent"
        EdgeIndex(tmp_path / "shard").close()  # the lock went with it
    finally:
        parent.kill()
        if parent.stdin is not None:
            parent.stdin.close()
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_shard_owned_elsewhere_is_unavailable_and_leaves_no_child(tmp_path: Path) -> None:
    owner = EdgeIndex(tmp_path / "shard")
    try:
        children_before = _children()
        with pytest.raises(IndexUnavailable, match="another process"):
            EdgeProcessIndex(tmp_path / "shard")
        assert _children() <= children_before
    finally:
        owner.close()


def test_the_setting_chooses_the_child_process(tmp_path: Path) -> None:
    env = {"QUARRY_ENV": "development", "QUARRY_DATA_DIR": str(tmp_path), "INDEX_EDGE_PROCESS": "on"}
    settings = Settings.from_env(env)
    assert settings.index_edge_process
    index = open_vector_index(settings)
    try:
        assert isinstance(index, EdgeProcessIndex)
    finally:
        index.close()
    assert not Settings.from_env({**env, "INDEX_EDGE_PROCESS": "off"}).index_edge_process
    default = {key: value for key, value in env.items() if key != "INDEX_EDGE_PROCESS"}
    assert not Settings.from_env(default).index_edge_process
    with pytest.raises(SettingsError, match="INDEX_EDGE_PROCESS"):
        Settings.from_env({**env, "INDEX_EDGE_PROCESS": "yes"})


def _children() -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.add(int(entry.name))
    return found
