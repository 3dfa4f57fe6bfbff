"""Every tenant statement the gateway and the worker issue names its tenant as a value.

`where tenant_id = %s` (or tenant_id in an insert's columns) in each SQL string
that reads or writes a relation with a tenant_id column: defence in depth
next to RLS, and under Citus what routes the statement to one shard (RLS's
auth.uid() is evaluated on every shard).  The SQL functions these statements
call are checked in the catalog (tests/py/support/distribution.py,
uid_call_violations).  The relations come from the migrated database's
catalog, the statements from the source's string literals (f-strings' fixed
parts included), so a new statement or a new tenant table is covered without
editing this file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import psycopg
import pytest

from quarry.paths import REPO_ROOT
from tests.py.support.database import DatabaseUrls
from tests.py.support.distribution import uid_call_violations

# The processes that serve tenants; quarry/dev/ is local tooling (it acts as an operator).
SOURCES = ("gateway", "worker", "quarry")
EXCLUDED = (REPO_ROOT / "quarry" / "dev",)
_RELATION = re.compile(r"\b(?:from|join|update|into)\s+([a-z_]+\.[a-z_]+)\b(?!\()", re.IGNORECASE)
# `tenant_id = %s` (any alias), or tenant_id first in an insert's column list.
_TENANT_VALUE = re.compile(r"\btenant_id\s*=\s*%|\(\s*tenant_id\s*,", re.IGNORECASE)


def tenant_relations(admin_url: str) -> set[str]:
    """Tables and views (any schema but the system's) with a tenant_id column."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            """
            select c.oid::regclass::text from pg_class as c
            inner join pg_attribute as a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
            where c.relkind in ('r', 'p', 'v') and c.relnamespace::regnamespace::text
                not in ('pg_catalog', 'information_schema')
            """
        ).fetchall()
    return {row[0] for row in rows}


def string_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """Each string literal with its line; an f-string counts as its fixed parts joined."""
    found: list[tuple[int, str]] = []
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [value.value for value in node.values if isinstance(value, ast.Constant)]
            inside_fstring.update(id(value) for value in node.values)
            found.append((node.lineno, " ".join(str(part) for part in parts)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstring:
            found.append((node.lineno, node.value))
    return found


def statements_without_tenant(source: str, relations: set[str]) -> list[tuple[int, str]]:
    """(line, relation) for each SQL literal touching a tenant relation without naming tenant_id."""
    missing: list[tuple[int, str]] = []
    for line, text in string_literals(ast.parse(source)):
        touched = {name.lower() for name in _RELATION.findall(text)} & relations
        if touched and not _TENANT_VALUE.search(text):
            missing.extend((line, relation) for relation in sorted(touched))
    return missing


def python_files() -> list[Path]:
    files = []
    for folder in SOURCES:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if not any(path.is_relative_to(excluded) for excluded in EXCLUDED):
                files.append(path)
    return files


def test_every_tenant_statement_names_its_tenant(database: DatabaseUrls) -> None:
    relations = tenant_relations(database.admin_url)
    assert {"app.documents", "api.documents", "app.chunks"} <= relations
    missing = [
        f"{path.relative_to(REPO_ROOT)}:{line} reads or writes {relation} without `tenant_id = %s`"
        for path in python_files()
        for line, relation in statements_without_tenant(path.read_text(encoding="utf-8"), relations)
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('conn.execute("select id from api.documents where id = %s", (doc,))', True),
        ('conn.execute("delete from app.documents where tenant_id = %s and id = %s", (t, doc))', False),
        ('conn.execute(f"select {COLUMNS} from api.documents where id = %s", (doc,))', True),
        ('conn.execute(f"select {COLUMNS} from api.documents where tenant_id = %s" " and id = %s", (t, doc))', False),
        ('conn.execute("insert into app.documents (id, title) values (%s, %s)", (doc, title))', True),
        ('conn.execute("select tenant_id, title from api.documents where id = %s", (doc,))', True),
        ('conn.execute("insert into app.documents (tenant_id, id) values (%s, %s)", (t, doc))', False),
        ('conn.execute("select internal.start_processing(%s)", (doc,))', False),  # a function: checked in SQL
        ('conn.execute("select * from app.usage_of(%s)", (t,))', False),
    ],
)
def test_the_scan_catches_a_statement_without_its_tenant(source: str, caught: bool) -> None:
    relations = {"app.documents", "api.documents", "app.usage_of"}
    assert bool(statements_without_tenant(source, relations)) is caught


def test_sql_functions_compare_tenant_id_with_a_value(database: DatabaseUrls) -> None:
    with psycopg.connect(database.admin_url) as conn:
        assert uid_call_violations(conn) == []
