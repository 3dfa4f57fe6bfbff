"""Locations inside the repository checkout."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = REPO_ROOT / "supabase" / "migrations"
SHIM_DIR = REPO_ROOT / "sql" / "shim"
SUPABASE_CLI = REPO_ROOT / "node_modules" / ".bin" / "supabase"


def latest_migration_version() -> str | None:
    """The version prefix of the newest migration file, as the CLI records it."""
    versions = sorted(path.name.split("_", 1)[0] for path in MIGRATIONS_DIR.glob("*.sql"))
    return versions[-1] if versions else None


WEBHOOK_DIR = REPO_ROOT / "supabase" / "functions" / "stripe-webhook"
# Deno from PyPI (the `deno` package, pinned in pyproject.toml), beside the venv's Python.
DENO = Path(sys.executable).parent / "deno"
