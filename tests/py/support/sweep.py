"""The catalog-driven check that an erased tenant left nothing behind: every table of every schema.

Nothing here names a table: every ordinary table in the database (auth,
app, internal, the queue, anything added later) is read from pg_catalog,
and every column that can hold the tenant's id is searched, the id itself
(uuid columns) or its text inside any text, JSON or array column (job
arguments, lock names, audit details, keys such as `documents/<tenant>/…`).
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

_COLUMNS = """
select n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
from pg_catalog.pg_class as c
inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
inner join pg_catalog.pg_attribute as a on a.attrelid = c.oid
where c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
    and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%'
order by 1, 2, a.attnum
"""
_TEXTUAL = (
    "text",
    "character varying",
    "character",
    "json",
    "jsonb",
    "name",
    "uuid[]",
    "text[]",
    "character varying[]",
)


def tables_holding(admin_url: str, tenant: uuid.UUID) -> dict[str, int]:
    """Every table with a row that holds the tenant's id (in any column), and how many such rows."""
    columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
    found: dict[str, int] = {}
    with psycopg.connect(admin_url) as conn:
        for schema, table, column, kind in conn.execute(_COLUMNS):
            columns.setdefault((schema, table), []).append((column, kind))
        for (schema, table), table_columns in columns.items():
            tests = [
                sql.SQL("{} = %(id)s").format(sql.Identifier(column))
                if kind == "uuid"
                else sql.SQL("{}::text like %(pattern)s").format(sql.Identifier(column))
                for column, kind in table_columns
                if kind == "uuid" or kind.split("(")[0] in _TEXTUAL
            ]
            if not tests:
                continue
            query = sql.SQL("select count(*) from {}.{} where {}").format(
                sql.Identifier(schema), sql.Identifier(table), sql.SQL(" or ").join(tests)
            )
            row = conn.execute(query, {"id": tenant, "pattern": f"%{tenant}%"}).fetchone()
            if row and row[0]:
                found[f"{schema}.{table}"] = int(row[0])
    return found
