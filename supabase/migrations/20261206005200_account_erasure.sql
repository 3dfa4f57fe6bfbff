-- Account erasure: the functions the worker's `account:delete` job calls,
-- step by step (quarry/account/deletion.py), each acting only on a tenant
-- whose deletion is recorded (app.account_deletions), so no call can erase
-- an account that did not ask for it.  Rows are found through the catalog
-- (internal.tenant_tables: every table with a tenant_id column), so a table
-- added later is counted and erased without touching this file.

-- function: internal.require_deletion

-- Every erasing function starts here: only a tenant whose deletion is recorded can be erased.
create function internal.require_deletion(tenant uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
    if not exists (select from app.account_deletions as d where d.tenant_id = tenant) then
        raise exception 'tenant % is not being deleted', tenant using errcode = '55000';
    end if;
end
$$;

comment on function internal.require_deletion(uuid) is 'Refuse (55000) unless the tenant''s deletion is recorded.';

revoke execute on function internal.require_deletion(uuid) from public;

-- function: internal.begin_account_deletion

-- The job starts (or resumes) a deletion: its email, the steps done, the counts.
create function internal.begin_account_deletion(tenant uuid)
returns setof app.account_deletions
language sql
volatile
security definer
set search_path = ''
as $$
    update app.account_deletions as d
    set
        state = 'running', attempts = d.attempts + 1, started_at = coalesce(d.started_at, now()), updated_at = now()
    where d.tenant_id = tenant
    returning d.*
$$;

comment on function internal.begin_account_deletion(uuid) is
'Start (or resume) a tenant''s deletion; nothing if it is not being deleted (already done).';

revoke execute on function internal.begin_account_deletion(uuid) from public;
grant execute on function internal.begin_account_deletion(uuid) to quarry_worker;

-- function: internal.finish_deletion_step

create function internal.finish_deletion_step(tenant uuid, step text, found_counts jsonb)
returns boolean
language sql
volatile
security definer
set search_path = ''
as $$
    update app.account_deletions as d
    set
        steps = d.steps || jsonb_build_object(step, now()),
        counts = d.counts || coalesce(found_counts, '{}'),
        last_error = null,
        updated_at = now()
    where d.tenant_id = tenant
    returning true
$$;

comment on function internal.finish_deletion_step(uuid, text, jsonb) is
'Record one step of a tenant''s deletion as done, with what it erased.';

revoke execute on function internal.finish_deletion_step(uuid, text, jsonb) from public;
grant execute on function internal.finish_deletion_step(uuid, text, jsonb) to quarry_worker;

-- function: internal.deletion_step_failed

create function internal.deletion_step_failed(tenant uuid, reason text)
returns boolean
language sql
volatile
security definer
set search_path = ''
as $$
    update app.account_deletions as d
    set state = 'retrying', last_error = left(reason, 2000), updated_at = now()
    where d.tenant_id = tenant
    returning true
$$;

comment on function internal.deletion_step_failed(uuid, text) is
'Record why a tenant''s deletion stopped (it is retried; the reason shows in its progress and ops).';

revoke execute on function internal.deletion_step_failed(uuid, text) from public;
grant execute on function internal.deletion_step_failed(uuid, text) to quarry_worker;

-- function: internal.tenant_tables

-- Every table that holds tenant rows (a tenant_id column), from the catalog:
-- what the deletion counts and erases, and what an export must account for.
create function internal.tenant_tables()
returns table (table_name regclass)
language sql
stable
set search_path = ''
as $$
    select c.oid::regclass
    from pg_catalog.pg_class as c
    inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
    inner join pg_catalog.pg_attribute as a on a.attrelid = c.oid
    where
        n.nspname in ('app', 'internal')
        and c.relkind in ('r', 'p')
        and a.attname = 'tenant_id'
        and not a.attisdropped
        and c.oid <> 'app.account_deletions'::regclass
    order by c.oid::regclass::text
$$;

comment on function internal.tenant_tables() is
'Every table with a tenant_id column (but the deletion record), from the catalog.';

revoke execute on function internal.tenant_tables() from public;

-- function: internal.tenant_row_counts

create function internal.tenant_row_counts(tenant uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tbl regclass;
    n bigint;
    found_counts jsonb := '{}'::jsonb;
begin
    for tbl in select t.table_name from internal.tenant_tables() as t loop
        execute format('select count(*) from %s where tenant_id = $1', tbl) into n using tenant;
        if n > 0 then
            found_counts := found_counts || jsonb_build_object(tbl::text, n);
        end if;
    end loop;
    return found_counts;
end
$$;

comment on function internal.tenant_row_counts(uuid) is
'How many rows each tenant table holds for a tenant (zeros left out).';

revoke execute on function internal.tenant_row_counts(uuid) from public;
grant execute on function internal.tenant_row_counts(uuid) to quarry_worker;

-- function: internal.delete_tenant_jobs

-- A deleting tenant's jobs that are not running (but `own_job`), with the
-- reasons their attempts failed (internal.job_failures): how many jobs.
create function internal.delete_tenant_jobs(tenant uuid, own_job bigint)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    gone bigint[];
begin
    with deleted as (
        delete from procrastinate.procrastinate_jobs as j
        where j.args ->> 'tenant_id' = tenant::text and j.status <> 'doing' and j.id is distinct from own_job
        returning j.id
    )

    select coalesce(array_agg(d.id), '{}') into gone from deleted as d;
    delete from internal.job_failures as f where f.job_id = any(gone);
    return cardinality(gone);
end
$$;

comment on function internal.delete_tenant_jobs(uuid, bigint) is
'Delete a tenant''s jobs that are not running (but the caller''s own) and their failure reasons; how many.';

revoke execute on function internal.delete_tenant_jobs(uuid, bigint) from public;

-- function: internal.quiesce_tenant_jobs

-- Nothing of the tenant's may run while it is erased: its waiting, failed and
-- finished jobs are deleted, and the number still running (but `own_job`) is
-- returned, for the deletion to wait on.
create function internal.quiesce_tenant_jobs(tenant uuid, own_job bigint)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    running integer;
begin
    perform internal.require_deletion(tenant);
    perform internal.delete_tenant_jobs(tenant, own_job);
    select count(*)::integer into running from procrastinate.procrastinate_jobs as j
    where j.args ->> 'tenant_id' = tenant::text and j.status = 'doing' and j.id is distinct from own_job;
    return running;
end
$$;

comment on function internal.quiesce_tenant_jobs(uuid, bigint) is
'Delete a deleting tenant''s jobs that are not running; how many still run (but the caller''s own).';

revoke execute on function internal.quiesce_tenant_jobs(uuid, bigint) from public;
grant execute on function internal.quiesce_tenant_jobs(uuid, bigint) to quarry_worker;

-- function: internal.erase_tenant_documents

-- A batch of a deleting tenant's documents (chunks and texts go with them); each
-- delete records an outbox change, through which the index drops its points.
create function internal.erase_tenant_documents(tenant uuid, batch integer)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    erased integer;
begin
    perform internal.require_deletion(tenant);
    delete from app.documents as d
    where d.tenant_id = tenant and d.id in (
        select x.id from app.documents as x where x.tenant_id = tenant limit batch
    );
    get diagnostics erased = row_count;
    if erased > 0 then
        perform pg_notify('quarry_outbox', '');  -- the relay, woken by the change (not by a trigger)
    end if;
    return erased;
end
$$;

comment on function internal.erase_tenant_documents(uuid, integer) is
'Delete up to `batch` documents of a tenant being deleted (the outbox removes their points); how many.';

revoke execute on function internal.erase_tenant_documents(uuid, integer) from public;
grant execute on function internal.erase_tenant_documents(uuid, integer) to quarry_worker;

-- function: internal.tenant_outbox_pending

create function internal.tenant_outbox_pending(tenant uuid)
returns integer
language sql
stable
security definer
set search_path = ''
as $$
    select count(*)::integer from app.outbox as o where o.tenant_id = tenant
$$;

comment on function internal.tenant_outbox_pending(uuid) is
'Index changes of a tenant the outbox relay has not applied yet.';

revoke execute on function internal.tenant_outbox_pending(uuid) from public;
grant execute on function internal.tenant_outbox_pending(uuid) to quarry_worker;

-- function: internal.erase_tenant_rows

-- Every row of a deleting tenant in every tenant table (internal.tenant_tables),
-- and its jobs that are not running.  Triggers may add rows while others go
-- (an audit entry, a counter), and a foreign key without a cascade may need
-- another table emptied first: so it goes round until a round erases nothing.
create function internal.erase_tenant_rows(tenant uuid, own_job bigint)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tbl regclass;
    n bigint;
    erased jsonb := '{}'::jsonb;
    round_erased bigint;
    blocked boolean;
begin
    perform internal.require_deletion(tenant);
    for round_number in 1..20 loop
        round_erased := 0;
        blocked := false;
        for tbl in select t.table_name from internal.tenant_tables() as t loop
            begin
                execute format('delete from %s where tenant_id = $1', tbl) using tenant;
                get diagnostics n = row_count;
            exception when foreign_key_violation then
                blocked := true;
                n := 0;
            end;
            if n > 0 then
                round_erased := round_erased + n;
                erased := jsonb_set(erased, array[tbl::text], to_jsonb(coalesce((erased ->> tbl::text)::bigint, 0) + n));
            end if;
        end loop;
        round_erased := round_erased + internal.delete_tenant_jobs(tenant, own_job);
        if round_erased = 0 and not blocked then
            return erased;
        end if;
    end loop;
    raise exception 'the rows of tenant % could not all be erased', tenant using errcode = '55000';
end
$$;

comment on function internal.erase_tenant_rows(uuid, bigint) is
'Delete every row of a tenant being deleted from every tenant table, and its jobs that are not running.';

revoke execute on function internal.erase_tenant_rows(uuid, bigint) from public;
grant execute on function internal.erase_tenant_rows(uuid, bigint) to quarry_worker;

-- function: internal.account_billing_customer

create function internal.account_billing_customer(tenant uuid)
returns text
language sql
stable
security definer
set search_path = ''
as $$
    select c.stripe_customer_id from app.billing_customers as c
    where c.tenant_id = tenant and exists (select from app.account_deletions as d where d.tenant_id = tenant)
$$;

comment on function internal.account_billing_customer(uuid) is 'The Stripe customer of a tenant being deleted.';

revoke execute on function internal.account_billing_customer(uuid) from public;
grant execute on function internal.account_billing_customer(uuid) to quarry_worker;

-- The deletion revokes the Drive token at Google, then forgets the connection (as a disconnect does).
grant execute on function internal.forget_drive_connection(uuid) to quarry_worker;

-- function: internal.forget_account_deletion

-- The last step: the deletion record goes, and the job's own queue row keeps
-- no trace of the tenant (it stays, anonymous, for the ops views' counts and
-- durations); the reasons its earlier attempts failed go (a message may name
-- the tenant).
create function internal.forget_account_deletion(tenant uuid, own_job bigint)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    perform internal.delete_tenant_jobs(tenant, own_job);
    update procrastinate.procrastinate_jobs as j
    set args = '{"erased": true}', lock = null, queueing_lock = null
    where j.id = own_job and j.args ->> 'tenant_id' = tenant::text;
    if found then
        delete from internal.job_failures as f where f.job_id = own_job;
    end if;
    delete from app.account_deletions as d where d.tenant_id = tenant;
    return found;
end
$$;

comment on function internal.forget_account_deletion(uuid, bigint) is
'Finish a tenant''s deletion: delete its record and anonymise the deleting job''s own queue row.';

revoke execute on function internal.forget_account_deletion(uuid, bigint) from public;
grant execute on function internal.forget_account_deletion(uuid, bigint) to quarry_worker;

-- function: internal.deletions_to_resume

-- Deletions whose job is gone (it gave up, or was lost): the periodic
-- `account:resume` defers them again, so every deletion ends.  The queue is
-- read first, on its own (under Citus it lives on the coordinator).
create function internal.deletions_to_resume()
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    active_locks text[];
    tenant uuid;
    resumed integer := 0;
begin
    select coalesce(array_agg(j.lock), '{}') into active_locks
    from procrastinate.procrastinate_jobs as j
    where j.task_name = 'account:delete' and j.status in ('todo', 'doing');
    for tenant in
        select d.tenant_id from app.account_deletions as d
        where 'account:' || d.tenant_id::text <> all(active_locks)
        order by d.requested_at
        limit 100
    loop
        perform internal.defer_account_deletion(tenant);
        resumed := resumed + 1;
    end loop;
    return resumed;
end
$$;

comment on function internal.deletions_to_resume() is
'Defer again the deletion job of every deletion that has none waiting or running; how many.';

revoke execute on function internal.deletions_to_resume() from public;
grant execute on function internal.deletions_to_resume() to quarry_worker;
