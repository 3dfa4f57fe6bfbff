"""Locations inside the repository checkout."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = REPO_ROOT / "supabase" / "migrations"
SHIM_DIR = REPO_ROOT / "sql" / "shim"
SUPABASE_CLI = REPO_ROOT / "node_modules" / ".bin" / "supabase"


def latest_migration_version() -> str | None:
    """The version prefix of the newest migration file, as the CLI records it."""
    versions = sorted(path.name.split("_", 1)[0] for path in MIGRATIONS_DIR.glob("*.sql"))
    return versions[-1] if versions else None
