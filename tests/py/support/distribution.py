"""The Citus distribution check, read from the catalog (never from a list of today's tables).

`violations(conn)` lists every way the schema would not distribute by
tenant_id as sql/citus/distribute.sql does, on plain PostgreSQL.  It reads the
placements the script made from the stand-ins' pg_dist_partition
(tests/sql/helpers/citus_stub.sql), and checks:

* every table with a tenant_id column has a placement: distributed (by
  tenant_id, co-located with app.documents, or by a lookup value), reference,
  or coordinator-only — a table the script does not name has none;
* a table distributed by a column has that column in its primary key, every
  unique constraint and unique index, and in every foreign key, position for
  position with the co-located target's; other foreign keys point at
  reference tables; no ON DELETE SET NULL/SET DEFAULT on it;
* no policy contains a subquery, except the Supabase-only
  `(select auth.uid())`, which the script rewrites (`tenant_id = auth.uid()`);
* what runs on the workers (the triggers of distributed and reference tables,
  the functions their check constraints and policies call, and every function
  those call) touches only co-located tenant tables and reads reference
  tables: never the queue or another coordinator-only table, never a lookup
  table, no write to a reference table, no NOTIFY;
* no SQL function compares tenant_id with the auth.uid() call (a variable
  holding it is a value, which routes a statement to one shard).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

TENANT_COLUMN = "tenant_id"
ANCHOR = "app.documents"  # the tenant tables' co-location group
# The policy form only Supabase gets; distribute.sql rewrites it to `auth.uid()`.
SUPABASE_UID = "( SELECT auth.uid() AS uid)"
SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", "pg_toast"]
# schema.name in a function body (aliases and columns match too; only catalog names count).
_QUALIFIED = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\b", re.IGNORECASE)
_WRITE = re.compile(r"\b(?:insert\s+into|update|delete\s+from)\s+(\w+)\.(\w+)", re.IGNORECASE)
_NOTIFY = re.compile(r"\bpg_notify\s*\(|\bnotify\s+\w", re.IGNORECASE)
_UID_CALL_COMPARED = re.compile(
    r"tenant_id\s*=\s*\(?\s*(?:select\s+)?auth\.uid\(\)|auth\.uid\(\)\s*\)?\s*=\s*[\w.]*tenant_id", re.IGNORECASE
)


@dataclass(frozen=True)
class Placement:
    kind: str  # "tenant", "lookup", "reference" or "coordinator"
    column: str | None = None


def _rows(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def placements(conn: psycopg.Connection[Any]) -> dict[str, Placement]:
    """What the distribution script made of each table (empty if it has not run)."""
    if not _rows(conn, "select to_regclass('public.pg_dist_partition')")[0][0]:
        return {}
    anchor_group = _rows(
        conn, "select colocationid from public.pg_dist_partition where logicalrelid = %s::regclass", (ANCHOR,)
    )
    group = anchor_group[0][0] if anchor_group else None
    found: dict[str, Placement] = {}
    for relation, method, column, colocation, model in _rows(
        conn, "select logicalrelid::text, partmethod, partkey, colocationid, repmodel from public.pg_dist_partition"
    ):
        if method == "h":
            tenant = column == TENANT_COLUMN and colocation == group
            found[relation] = Placement("tenant" if tenant else "lookup", column)
        else:
            found[relation] = Placement("reference" if model == "t" else "coordinator")
    return found


def tables_with_tenant_id(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        row[0]
        for row in _rows(
            conn,
            """
            select c.oid::regclass::text from pg_class as c
            inner join pg_attribute as a on a.attrelid = c.oid and a.attname = %s and not a.attisdropped
            where c.relkind in ('r', 'p') and c.relnamespace::regnamespace::text <> all(%s)
            order by 1
            """,
            (TENANT_COLUMN, SYSTEM_SCHEMAS),
        )
    ]


def key_violations(
    conn: psycopg.Connection[Any], relation: str, column: str, placed: dict[str, Placement]
) -> list[str]:
    """A table distributed by `column`: its keys and foreign keys include it, or point at reference tables."""
    problems = []
    for index, in_key in _rows(
        conn,
        """
        select i.indexrelid::regclass::text,
            (select a.attnum from pg_attribute as a where a.attrelid = i.indrelid and a.attname = %s) = any(i.indkey)
        from pg_index as i where i.indrelid = %s::regclass and i.indisunique
        """,
        (column, relation),
    ):
        if not in_key:
            problems.append(f"{relation}: unique key {index} does not include {column}")
    for name, target, own_position, target_column_position, delete_action in _rows(
        conn,
        """
        select c.conname, c.confrelid::regclass::text,
            array_position(c.conkey, (select a.attnum from pg_attribute as a
                                      where a.attrelid = c.conrelid and a.attname = %s)),
            array_position(c.confkey, (select a.attnum from pg_attribute as a
                                       where a.attrelid = c.confrelid and a.attname = %s)),
            c.confdeltype
        from pg_constraint as c where c.conrelid = %s::regclass and c.contype = 'f'
        """,
        (column, column, relation),
    ):
        target_placement = placed.get(target)
        if target_placement is not None and target_placement.kind == "reference":
            continue
        if own_position is None or own_position != target_column_position:
            problems.append(f"{relation}: foreign key {name} to {target} does not include {column} on both sides")
        elif placed.get(relation) != target_placement and relation in placed:
            problems.append(f"{relation}: foreign key {name} to {target}, which is not co-located with it")
        if delete_action in ("n", "d"):
            problems.append(f"{relation}: foreign key {name} sets {column}'s key to NULL/DEFAULT on delete")
    return problems


def policy_violations(conn: psycopg.Connection[Any]) -> list[str]:
    """Policies with a subquery other than the Supabase form the script rewrites."""
    problems = []
    for relation, name, expression in _rows(
        conn,
        """
        select p.polrelid::regclass::text, p.polname,
            concat_ws(' ', pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        from pg_policy as p
        where p.polrelid::regclass::text not like 'procrastinate.%%'
        """,
    ):
        if re.search(r"\bselect\b", expression.replace(SUPABASE_UID, ""), re.IGNORECASE):
            problems.append(f"{relation}: policy {name} has a subquery (Citus refuses it): {expression}")
    return problems


class _Catalog:
    """Relations and functions by qualified name, with function bodies, for the reachability walk."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.relations = {
            row[0]
            for row in _rows(
                conn,
                "select n.nspname || '.' || c.relname from pg_class as c"
                " join pg_namespace as n on n.oid = c.relnamespace"
                " where c.relkind in ('r', 'p', 'v', 'm') and n.nspname <> all(%s)",
                (SYSTEM_SCHEMAS,),
            )
        }
        self.functions: dict[str, list[tuple[int, str]]] = {}
        self.bodies: dict[int, tuple[str, str]] = {}
        for oid, name, body in _rows(
            conn,
            "select p.oid, n.nspname || '.' || p.proname, coalesce(p.prosrc, '') from pg_proc as p"
            " join pg_namespace as n on n.oid = p.pronamespace where n.nspname <> all(%s)"
            " and p.prolang <> (select l.oid from pg_language as l where l.lanname = 'c')",
            (SYSTEM_SCHEMAS,),
        ):
            self.functions.setdefault(name.lower(), []).append((oid, body))
            self.bodies[oid] = (name, body)

    def reachable(self, roots: set[int]) -> dict[int, tuple[str, str]]:
        seen: dict[int, tuple[str, str]] = {}
        todo = [oid for oid in roots if oid in self.bodies]
        while todo:
            oid = todo.pop()
            if oid in seen:
                continue
            seen[oid] = self.bodies[oid]
            for schema, name in _QUALIFIED.findall(self.bodies[oid][1]):
                for callee, _ in self.functions.get(f"{schema}.{name}".lower(), []):
                    if callee not in seen:
                        todo.append(callee)
        return seen


def worker_side_functions(conn: psycopg.Connection[Any], placed: dict[str, Placement]) -> dict[str, set[str]]:
    """Each function Citus would run on the shards' nodes → why (the triggers, checks and policies that reach it)."""
    roots = _worker_side_roots(conn, placed)
    catalog = _Catalog(conn)
    reached: dict[str, set[str]] = {}
    for root, why in roots.items():
        for name, _ in catalog.reachable({root}).values():
            reached.setdefault(name, set()).add(why)
    return reached


def _worker_side_roots(conn: psycopg.Connection[Any], placed: dict[str, Placement]) -> dict[int, str]:
    distributed = [relation for relation, placement in placed.items() if placement.kind in ("tenant", "lookup")]
    distributed += [relation for relation, placement in placed.items() if placement.kind == "reference"]
    distributed += [relation for relation in tables_with_tenant_id(conn) if relation not in placed]
    roots: dict[int, str] = {}
    for oid, why in _rows(
        conn,
        """
        select t.tgfoid, 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text
        from pg_trigger as t where not t.tgisinternal and t.tgrelid::regclass::text = any(%s)
        union all
        select d.refobjid, 'check ' || c.conname || ' on ' || c.conrelid::regclass::text
        from pg_constraint as c
        join pg_depend as d on d.classid = 'pg_constraint'::regclass and d.objid = c.oid
            and d.refclassid = 'pg_proc'::regclass
        where c.conrelid::regclass::text = any(%s)
        union all
        select d.refobjid, 'policy ' || p.polname || ' on ' || p.polrelid::regclass::text
        from pg_policy as p
        join pg_depend as d on d.classid = 'pg_policy'::regclass and d.objid = p.oid
            and d.refclassid = 'pg_proc'::regclass
        where p.polrelid::regclass::text = any(%s)
        """,
        (distributed, distributed, distributed),
    ):
        roots.setdefault(oid, why)
    return roots


def worker_side_violations(conn: psycopg.Connection[Any], placed: dict[str, Placement]) -> list[str]:
    """What Citus runs on the shards' nodes touches only co-located tenant rows and reads reference tables."""
    roots = _worker_side_roots(conn, placed)
    catalog = _Catalog(conn)
    problems = []
    for root, why in sorted(roots.items(), key=lambda item: item[1]):
        for name, body in catalog.reachable({root}).values():
            where = f"{name} (runs on the workers: {why})"
            if _NOTIFY.search(body):
                problems.append(f"{where}: NOTIFY from a shard's node reaches no listener")
            for schema, table in _QUALIFIED.findall(body):
                relation = f"{schema}.{table}".lower()
                if relation not in catalog.relations:
                    continue
                placement = placed.get(relation)
                if placement is None or placement.kind not in ("tenant", "reference"):
                    kind = placement.kind if placement is not None else "not distributed"
                    problems.append(f"{where}: touches {relation} ({kind}), which is not on the shard's node")
            for schema, table in _WRITE.findall(body):
                placement = placed.get(f"{schema}.{table}".lower())
                if placement is not None and placement.kind == "reference":
                    problems.append(f"{where}: writes the reference table {schema}.{table}")
    return sorted(set(problems))


def uid_call_violations(conn: psycopg.Connection[Any]) -> list[str]:
    """SQL functions that compare tenant_id with auth.uid() itself instead of a value holding it."""
    return [
        f"{name}: compares tenant_id with the auth.uid() call; assign it to a variable (a value routes to one shard)"
        for name, body in _rows(
            conn,
            "select p.oid::regprocedure::text, p.prosrc from pg_proc as p"
            " where p.pronamespace::regnamespace::text in ('app', 'internal', 'api')",
        )
        if _UID_CALL_COMPARED.search(body)
    ]


def violations(conn: psycopg.Connection[Any]) -> list[str]:
    """Everything that keeps this database from distributing as sql/citus/distribute.sql does."""
    placed = placements(conn)
    problems = []
    for relation in tables_with_tenant_id(conn):
        placement = placed.get(relation)
        if placement is None:
            problems.append(f"{relation}: has tenant_id but sql/citus/distribute.sql does not name it")
            problems += key_violations(conn, relation, TENANT_COLUMN, placed)
    for relation, placement in placed.items():
        if placement.column is not None:
            problems += key_violations(conn, relation, placement.column, placed)
    return problems + policy_violations(conn) + worker_side_violations(conn, placed) + uid_call_violations(conn)
