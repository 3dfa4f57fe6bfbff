-- Turn a migrated Quarry database into a distributed one (Phase 6B, DESIGN §8).
--
-- Run on the Citus coordinator, as a superuser, after every migration has been
-- applied, with the workers already added (README "Scaling" has the steps):
--
--     psql -v ON_ERROR_STOP=1 -d quarry -f sql/citus/distribute.sql
--
-- Idempotent: each step checks the Citus metadata first, so running it again
-- (after a new migration, say) changes only what is not distributed yet.
-- Every table with a tenant_id column is named below, in one of four lists;
-- tests/py/test_distribution.py fails when one is missing, and runs this
-- script against stand-ins of the Citus functions that refuse what Citus
-- refuses (a key or foreign key without the distribution column, a policy
-- with a subquery, a trigger without citus.enable_unsafe_triggers, ...).
--
--   1. reference tables (a copy on every node): auth.users (self-hosted Auth
--      on 6B; every tenant table references it) and the plan data;
--   2. lookups that precede the tenant, distributed by the looked-up value,
--      each in a co-location group of its own: a lookup reads one shard, and
--      a reference table would make every write a commit on every node while
--      copying millions of rows to each;
--   3. tenant tables, distributed by tenant_id and co-located with
--      app.documents, so that a tenant's rows of every table sit on one node
--      (joins, foreign keys and triggers stay local);
--   4. the coordinator's own: the procrastinate queue (left as plain local
--      tables: jobs are claimed with SKIP LOCKED across the whole queue) and
--      internal.stripe_events (Stripe's event log, keyed by Stripe's event id,
--      not tenant data; it references auth.users, so it joins the metadata as
--      a Citus local table).

-- Citus 13 refuses a policy with a subquery on a distributed table, so
-- the Supabase form `tenant_id = (select auth.uid())` (evaluated once per
-- statement on Supabase) becomes `tenant_id = auth.uid()`: the same rule.
create or replace function pg_temp.unwrap_uid(expression text)
returns text
language sql
immutable
as $$
    select replace(expression, '( SELECT auth.uid() AS uid)', 'auth.uid()')
$$;

do $policies$
declare
    policy record;
begin
    for policy in
        select
            p.polname,
            p.polrelid::regclass as relation,
            pg_get_expr(p.polqual, p.polrelid) as using_expression,
            pg_get_expr(p.polwithcheck, p.polrelid) as check_expression
        from pg_policy as p
        where
            p.polrelid::regclass::text ~ '^(app|internal|auth)\.'
            and (
                pg_get_expr(p.polqual, p.polrelid) like '%( SELECT auth.uid() AS uid)%'
                or pg_get_expr(p.polwithcheck, p.polrelid) like '%( SELECT auth.uid() AS uid)%'
            )
    loop
        execute format(
            'alter policy %I on %s%s%s',
            policy.polname,
            policy.relation,
            coalesce(' using (' || pg_temp.unwrap_uid(policy.using_expression) || ')', ''),
            coalesce(' with check (' || pg_temp.unwrap_uid(policy.check_expression) || ')', '')
        );
    end loop;
end
$policies$;

-- Triggers on distributed tables run on the node holding the row's shard.
-- Quarry's triggers touch only the same tenant's rows (co-located) and the
-- reference tables; tests/py/test_distribution.py keeps them so.
select set_config('citus.enable_unsafe_triggers', 'on', false);

create or replace function pg_temp.is_distributed(relation regclass)
returns boolean
language sql
stable
as $$
    select exists (select from pg_dist_partition as p where p.logicalrelid = relation)
$$;

-- Place a table unless Citus already did: 'reference', 'coordinator' (a Citus
-- local table) or 'distributed' by a column, co-located as asked.
create or replace function pg_temp.place(
    relation regclass, placement text, distribution_column text default null, colocate text default null
)
returns void
language plpgsql
as $$
begin
    if pg_temp.is_distributed(relation) then
        return;
    elsif placement = 'reference' then
        perform create_reference_table(relation);
    elsif placement = 'coordinator' then
        perform citus_add_local_table_to_metadata(relation);
    elsif placement = 'distributed' then
        perform create_distributed_table(relation, distribution_column, colocate_with => colocate);
    else
        raise exception 'unknown placement %', placement;
    end if;
end
$$;

-- 1. reference tables (referenced ones first)

select pg_temp.place('auth.users', 'reference');
select pg_temp.place('app.plans', 'reference');
select pg_temp.place('app.subscription_entitlements', 'reference');
select pg_temp.place('internal.billing_settings', 'reference');
select pg_temp.place('internal.stripe_prices', 'reference');

-- Auth's own tables that reference auth.users (sessions, identities, ... on
-- a self-hosted Auth) stay on the coordinator, as Citus local tables.
select pg_temp.place(c.conrelid, 'coordinator')
from pg_constraint as c
where
    c.contype = 'f'
    and c.confrelid = 'auth.users'::regclass
    and c.connamespace = 'auth'::regnamespace
    and c.conrelid <> c.confrelid;

-- 2. lookups that precede the tenant, each by its looked-up value

select pg_temp.place('internal.api_key_lookups', 'distributed', 'lookup_id', 'none');
select pg_temp.place('internal.stripe_customer_lookups', 'distributed', 'stripe_customer_id', 'none');
select pg_temp.place('app.drive_oauth_states', 'distributed', 'state_hash', 'none');

-- 3. tenant tables, by tenant_id, co-located with app.documents (referenced tables first)

select pg_temp.place('app.documents', 'distributed', 'tenant_id', 'none');
select pg_temp.place('app.chunks', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.document_texts', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.outbox', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.blob_deletions', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.query_log', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.subscriptions', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.usage_counters', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.rate_limit_windows', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.api_keys', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.api_key_creations', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.audit_log', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.idempotency_keys', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.billing_customers', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.export_requests', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.drive_connections', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.drive_folders', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.drive_sync_runs', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.drive_files', 'distributed', 'tenant_id', 'app.documents');
select pg_temp.place('app.account_deletions', 'distributed', 'tenant_id', 'app.documents');

-- 4. the coordinator's own

select pg_temp.place('internal.stripe_events', 'coordinator');

-- Functions that run on the workers (triggers and what they call, policies'
-- auth.uid()) must exist there: every function of Quarry's schemas is
-- propagated (without a distribution argument: calls still run where they
-- are made).
select create_distributed_function(p.oid::regprocedure)
from pg_proc as p
where
    p.pronamespace in ('app'::regnamespace, 'internal'::regnamespace, 'auth'::regnamespace)
    and p.prokind = 'f'
    and not exists (
        select from pg_dist_object as o
        where o.classid = 'pg_proc'::regclass and o.objid = p.oid
    );

-- Settings for every session of this database:
--   * SET LOCAL (how quarry.db.act_as sets the claims) reaches the workers a
--     transaction touches; set_config() never does;
--   * triggers run on the distributed tables' shards.
do $settings$
begin
    execute format('alter database %I set citus.propagate_set_commands = %L', current_database(), 'local');
    execute format('alter database %I set citus.enable_unsafe_triggers = %L', current_database(), 'on');
end
$settings$;
