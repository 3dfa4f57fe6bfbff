"""The Citus distribution check (DESIGN §8), on plain PostgreSQL.

A scratch database gets today's migrations, stand-ins for the Citus functions
(tests/sql/helpers/citus_stub.sql, which refuse what Citus refuses) and
sql/citus/distribute.sql, run twice as an operator would.  The catalog check
(tests/py/support/distribution.py) must find nothing; a deliberately broken
table in a scratch schema must make it fail, and the stand-ins must refuse it.
What this cannot show is how a real Citus cluster plans and runs the queries
(README "Scaling" lists what is verified and what is not).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from quarry.dev.database import prepare_database, run_sql_file
from quarry.paths import REPO_ROOT
from tests.py.support.database import ADMIN_SERVER_URL, TEST_DATABASE, DatabaseUrls
from tests.py.support.distribution import (
    ANCHOR,
    TENANT_COLUMN,
    Placement,
    placements,
    policy_violations,
    tables_with_tenant_id,
    violations,
    worker_side_functions,
)

SCRIPT = REPO_ROOT / "sql" / "citus" / "distribute.sql"
STUB = REPO_ROOT / "tests" / "sql" / "helpers" / "citus_stub.sql"


def run_script(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def distributed_url() -> str:
    """Migrated, then distributed by the script (twice) against the stand-ins."""
    url = prepare_database(ADMIN_SERVER_URL, f"{TEST_DATABASE}_distributed", fresh=True)
    run_sql_file(url, str(STUB))
    for attempt in (1, 2):
        result = run_script(url)
        assert result.returncode == 0, f"run {attempt}: {result.stderr}"
    return url


@pytest.fixture
def distributed(distributed_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose transaction is rolled back: what a test builds there does not stay."""
    with psycopg.connect(distributed_url) as conn:
        yield conn
        conn.rollback()


def test_the_migrated_schema_passes_the_distribution_check(distributed: psycopg.Connection[Any]) -> None:
    assert violations(distributed) == []


def test_the_walk_reaches_what_the_triggers_call(distributed: psycopg.Connection[Any]) -> None:
    """The check follows triggers into the functions they call (so it is not vacuously empty)."""
    reached = worker_side_functions(distributed, placements(distributed))
    assert {"internal.audit", "internal.tenant_plan", "app.effective_plan", "internal.consume_quota"} <= set(reached)
    assert "trigger documents_audit on app.documents" in reached["internal.audit"]
    assert "check chunks_id_derived on app.chunks" in reached["internal.chunk_id"]
    assert "internal.defer_job" not in reached  # the queue is reached from the coordinator only


def test_every_table_with_tenant_id_is_placed_and_tenant_tables_are_co_located(
    distributed: psycopg.Connection[Any],
) -> None:
    placed = placements(distributed)
    with_tenant = tables_with_tenant_id(distributed)
    assert with_tenant, "the catalog query finds the tenant tables"
    assert [table for table in with_tenant if table not in placed] == []
    tenant_tables = [table for table in with_tenant if placed[table] == Placement("tenant", TENANT_COLUMN)]
    assert ANCHOR in tenant_tables
    # Everything else with a tenant_id is a lookup by its own key or stays on the coordinator, on purpose.
    others = {table: placed[table] for table in with_tenant if table not in tenant_tables}
    assert {placement.kind for placement in others.values()} <= {"lookup", "coordinator"}, others
    # The plan data and the users are copies on every node; the queue is not in the metadata at all.
    assert placed["app.plans"].kind == placed["auth.users"].kind == "reference"
    assert not [table for table in placed if table.startswith("procrastinate.")]


def test_the_script_is_idempotent_and_rewrites_every_policy_to_the_citus_form(
    distributed: psycopg.Connection[Any], distributed_url: str
) -> None:
    before = distributed.execute("select count(*) from public.pg_dist_partition").fetchone()
    assert run_script(distributed_url).returncode == 0
    assert distributed.execute("select count(*) from public.pg_dist_partition").fetchone() == before
    rewritten = distributed.execute(
        "select count(*) from pg_policy where pg_get_expr(polqual, polrelid) = '(tenant_id = auth.uid())'"
    ).fetchone()
    assert rewritten is not None and rewritten[0] > 0
    assert distributed.execute(
        "select count(*) from pg_policy where concat(pg_get_expr(polqual, polrelid),"
        " pg_get_expr(polwithcheck, polrelid)) ilike '%select%'"
    ).fetchone() == (0,)
    settings = distributed.execute(
        "select setconfig from pg_db_role_setting where setrole = 0"
        " and setdatabase = (select oid from pg_database where datname = current_database())"
    ).fetchone()
    assert settings is not None
    assert {"citus.propagate_set_commands=local", "citus.enable_unsafe_triggers=on"} <= set(settings[0])


def test_supabase_keeps_its_policy_form_and_only_that_subquery(database: DatabaseUrls) -> None:
    """The migrated database (what 6A runs, without the script)."""
    with psycopg.connect(database.admin_url) as conn:
        assert policy_violations(conn) == []
        supabase_form = conn.execute(
            "select count(*) from pg_policy where pg_get_expr(polqual, polrelid) like '%( SELECT auth.uid() AS uid)%'"
        ).fetchone()
    assert supabase_form is not None and supabase_form[0] > 0


BROKEN_TABLE = """
create schema broken;
create table broken.widgets (
    tenant_id uuid not null references auth.users (id),
    id uuid not null,
    code text not null,
    document_id uuid,
    primary key (tenant_id, id),
    constraint widgets_code_key unique (code),
    foreign key (tenant_id, document_id) references app.documents (tenant_id, id) on delete set null (document_id)
);
alter table broken.widgets enable row level security;
create policy widgets_own on broken.widgets for select to authenticated
using (tenant_id in (select d.tenant_id from app.documents as d));
create function broken.queue_widget() returns trigger language plpgsql as $$
begin
    perform pg_notify('widgets', new.id::text);
    insert into procrastinate.procrastinate_jobs (queue_name, task_name, args)
    values ('widgets', 'widgets:build', '{}');
    update app.plans set display_name = display_name;
    return new;
end
$$;
create trigger widgets_queue after insert on broken.widgets for each row execute function broken.queue_widget();
create function broken.my_widgets() returns setof broken.widgets language sql as $$
    select * from broken.widgets where tenant_id = auth.uid()
$$;
create function internal.broken_widget_count() returns bigint language sql as $$
    select count(*) from broken.widgets as w where w.tenant_id = (select auth.uid())
$$;
"""


def test_a_deliberately_broken_table_fails_the_check(distributed: psycopg.Connection[Any]) -> None:
    distributed.execute(BROKEN_TABLE)
    found = "\n".join(violations(distributed))
    assert "broken.widgets: has tenant_id but sql/citus/distribute.sql does not name it" in found
    assert "broken.widgets: unique key broken.widgets_code_key does not include tenant_id" in found
    assert "sets tenant_id's key to NULL/DEFAULT on delete" in found
    assert "broken.widgets: policy widgets_own has a subquery" in found
    assert "broken.queue_widget (runs on the workers: trigger widgets_queue on broken.widgets)" in found
    assert "NOTIFY from a shard's node reaches no listener" in found
    assert "touches procrastinate.procrastinate_jobs (not distributed)" in found
    assert "writes the reference table app.plans" in found
    assert "internal.broken_widget_count(): compares tenant_id with the auth.uid() call" in found


def test_the_stand_ins_refuse_what_citus_refuses(distributed: psycopg.Connection[Any]) -> None:
    distributed.execute(BROKEN_TABLE)
    # The script turned it on for the database; off, a table with triggers is refused first.
    distributed.execute("select set_config('citus.enable_unsafe_triggers', 'off', true)")
    refusals = {
        "with its triggers": "because it has triggers",
        "with the subquery policy": "Subqueries are not supported in policies",
        "with the key on code": "do not include the partition column",
        "with SET NULL": "SET NULL or SET DEFAULT is not supported",
    }
    fixes = [
        "select set_config('citus.enable_unsafe_triggers', 'on', true)",
        "drop policy widgets_own on broken.widgets",
        "alter table broken.widgets drop constraint widgets_code_key",
        None,
    ]
    for (case, message), fix in zip(refusals.items(), fixes, strict=True):
        distributed.execute("savepoint attempt")
        with pytest.raises(psycopg.errors.RaiseException) as refused:
            distributed.execute(
                "select create_distributed_table('broken.widgets', 'tenant_id', colocate_with => %s)", (ANCHOR,)
            )
        error = refused.value.diag
        assert message in f"{error.message_primary} {error.message_detail}", case
        distributed.execute("rollback to savepoint attempt")
        if fix is not None:
            distributed.execute(fix)
    distributed.execute("alter table broken.widgets drop constraint widgets_tenant_id_document_id_fkey")
    distributed.execute(
        "alter table broken.widgets add foreign key (tenant_id, document_id) references app.documents (tenant_id, id)"
    )
    distributed.execute(
        "select create_distributed_table('broken.widgets', 'tenant_id', colocate_with => %s)", (ANCHOR,)
    )
    assert placements(distributed)["broken.widgets"] == Placement("tenant", TENANT_COLUMN)
