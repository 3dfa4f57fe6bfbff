"""The shape of the tree: the gateway and the worker share the core and never each other.

quarry/ is the shared core; gateway/ (HTTP) and worker/ (jobs) import it and
nothing of each other, and the core imports neither.  Read from the source
(every import statement, at any depth, including ones inside functions), so
a lazy import cannot slip through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from quarry.paths import REPO_ROOT

FORBIDDEN = {
    "gateway": {"worker"},
    "worker": {"gateway"},
    "quarry": {"gateway", "worker"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_may(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_check_sees_imports() -> None:
    sample = REPO_ROOT / "gateway" / "app.py"
    assert {"quarry", "starlette"} <= imported_packages(sample)
