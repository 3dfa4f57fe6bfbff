"""Create a local database and bring it to the current schema.

Order: the plain-PostgreSQL Supabase shim, the migrations through the real
Supabase CLI, then the dev-only logins.  Safe to run repeatedly.
"""

from __future__ import annotations

import subprocess
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from quarry.paths import REPO_ROOT, SHIM_DIR, SUPABASE_CLI


class DatabaseSetupError(RuntimeError):
    pass


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def create_database(admin_url: str, dbname: str, *, fresh: bool) -> bool:
    """Create dbname (dropping it first when fresh).  Returns True if it was created."""
    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as conn:
        if fresh:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
        return True


def run_sql_file(url: str, path: str) -> None:
    with open(path, encoding="utf-8") as handle, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(handle.read())


def apply_migrations(db_url: str) -> None:
    if not SUPABASE_CLI.exists():
        raise DatabaseSetupError(f"{SUPABASE_CLI} is missing: run `make setup`")
    separator = "&" if "?" in db_url else "?"
    cli_url = db_url if "sslmode=" in db_url else f"{db_url}{separator}sslmode=disable"
    result = subprocess.run(
        [str(SUPABASE_CLI), "migration", "up", "--db-url", cli_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DatabaseSetupError(f"supabase migration up failed:\n{result.stdout}\n{result.stderr}")


# Roles are the server's, not a database's: two databases prepared at once (parallel test
# workers, a test beside `make dev`) would race to create and grant the same roles.
PREPARE_LOCK = "quarry.dev.prepare_database"


def prepare_database(admin_url: str, dbname: str, *, fresh: bool = False) -> str:
    """Create (if needed) and migrate dbname; returns its admin URL.  One preparation at a time per server."""
    with psycopg.connect(with_database(admin_url, "postgres"), autocommit=True) as lock:
        lock.execute("select pg_advisory_lock(hashtext(%s))", (PREPARE_LOCK,))
        create_database(admin_url, dbname, fresh=fresh)
        db_url = with_database(admin_url, dbname)
        run_sql_file(db_url, str(SHIM_DIR / "supabase.sql"))
        apply_migrations(db_url)
        run_sql_file(db_url, str(SHIM_DIR / "dev_logins.sql"))
    return db_url
