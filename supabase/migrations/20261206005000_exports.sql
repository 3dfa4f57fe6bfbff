-- Data export (GDPR Art. 20): the stub app.export_requests becomes the record
-- of each export a tenant asks for, and the request is the insert itself,
-- whichever path makes it (POST /api/export, or supabase-js through
-- api.request_export / an insert into the table).
--
-- The rules kept here: one export queued or running per tenant (a second
-- request is 409 naming the one in progress, decided under a per-tenant lock
-- before the plan's frequency is counted); the plan's frequency is the
-- existing meter (internal.meter_export); an export that fails gives its
-- allowance back; the build job is deferred in the transaction that records
-- the request, by internal.queue_export (api.request_export calls it right
-- after its insert), never by a trigger: under Citus a trigger runs on the
-- shard's node, where the queue is not (DESIGN §8).  A request recorded
-- without its job (an insert into the table by another path) is queued by the
-- expiry job's sweep (internal.requeue_exports).  Status, progress, counts and
-- the link's expiry change only through the functions below, from the states
-- they start from, each naming its tenant as a value.

-- type: app.export_status

create type app.export_status as enum ('queued', 'running', 'ready', 'failed', 'expired');

-- table: app.export_requests (the stub gains its lifecycle)

alter table app.export_requests
add column status app.export_status not null default 'queued',
-- When the plan's frequency counted it (app.clock(): tests move it).
add column requested_at timestamptz not null default app.clock(),
add column progress jsonb not null default '{}',
add column counts jsonb,
add column size_bytes bigint,
add column error text,
add column started_at timestamptz,
add column finished_at timestamptz,
add column expires_at timestamptz,
add column notified_at timestamptz,
add column updated_at timestamptz not null default now(),
add constraint export_requests_size_not_negative check (size_bytes >= 0),
add constraint export_requests_error_length check (char_length(error) <= 2000),
add constraint export_requests_failed_has_error check ((status = 'failed') = (error is not null)),
add constraint export_requests_ready_expires check (status not in ('ready', 'expired') or expires_at is not null);

comment on column app.export_requests.progress is
'While running: {"file": what is being written, "rows": rows written so far, "files_done", "files_total"}.';

-- One export queued or running per tenant.
create unique index export_requests_one_active_idx on app.export_requests (tenant_id)
where status in ('queued', 'running');
create index export_requests_expiring_idx on app.export_requests (tenant_id, expires_at) where status = 'ready';

-- function: internal.guard_export_request (trigger on app.export_requests)

-- Before the frequency is metered (trigger names sort before `…_meter`): a
-- request while another is queued or running is 409 with that one, under a
-- per-tenant lock so that concurrent requests see each other.
create function internal.guard_export_request()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    active app.export_requests;
begin
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('export:' || new.tenant_id::text, 0));
    select e.* into active from app.export_requests as e
    where e.tenant_id = new.tenant_id and e.status in ('queued', 'running');
    if found then
        perform internal.raise_http(
            409, 'export-in-progress', 'An export is already queued or running; wait for it to finish.',
            jsonb_build_object('export_id', active.id, 'export_status', active.status)
        );
    end if;
    new.status := 'queued';
    new.requested_at := app.clock();
    return new;
end
$$;

comment on function internal.guard_export_request() is
'Refuse an export request while another of the tenant''s exports is queued or running (409 with its id).';

revoke execute on function internal.guard_export_request() from public;

create trigger export_requests_active_guard
before insert on app.export_requests
for each row execute function internal.guard_export_request();

-- function: internal.defer_export_build

-- One build per tenant at a time (lock export:<tenant>), one job per export (its queueing lock).
create function internal.defer_export_build(tenant uuid, export uuid)
returns bigint
language sql
volatile
security definer
set search_path = ''
as $$
    select internal.defer_job(
        'exports:build', tenant, jsonb_build_object('export_id', export),
        'export:' || tenant::text, 'export:' || tenant::text || ':' || export::text
    )
$$;

comment on function internal.defer_export_build(uuid, uuid) is 'Defer the build job of one export.';

revoke execute on function internal.defer_export_build(uuid, uuid) from public;

-- function: internal.queue_export

-- The build job of the caller's new (queued) export, and the request's audit
-- entry, in the transaction that recorded it.
create function internal.queue_export(export uuid)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    job bigint;
begin
    if tenant is null then
        raise sqlstate '42501' using message = 'exports are queued by a signed-in user';
    end if;
    if not exists (
        select from app.export_requests as e where e.tenant_id = tenant and e.id = export and e.status = 'queued'
    ) then
        perform internal.raise_http(
            409, 'conflict', 'Only a queued export of the caller can be queued for building.',
            jsonb_build_object('export_id', export)
        );
    end if;
    job := internal.defer_export_build(tenant, export);
    perform internal.audit(tenant, 'export.requested', 'export', export, '{}');
    return job;
end
$$;

comment on function internal.queue_export(uuid) is
'Defer the build job of the caller''s new (queued) export and audit the request, in the requesting transaction.';

revoke execute on function internal.queue_export(uuid) from public;
grant execute on function internal.queue_export(uuid) to authenticated;

-- function: internal.start_export

-- queued → running (running again: a retried job starts the archive afresh).
-- Nothing to do (false) for an export that ended, or of an account being deleted.
create function internal.start_export(export uuid)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    if exists (select from app.account_deletions as d where d.tenant_id = tenant) then
        return false;
    end if;
    update app.export_requests as e
    set
        status = 'running', started_at = now(), updated_at = now(),
        progress = '{}', counts = null, size_bytes = null
    where e.tenant_id = tenant and e.id = export and e.status in ('queued', 'running');
    return found;
end
$$;

comment on function internal.start_export(uuid) is
'Start (or restart) building one of the caller''s exports; false if it is no longer queued or running.';

revoke execute on function internal.start_export(uuid) from public;
grant execute on function internal.start_export(uuid) to authenticated;

-- function: internal.export_progress

-- plpgsql: app.account_deletions comes with the next migration.
create function internal.export_progress(export uuid, current_progress jsonb)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.export_requests as e
    set progress = current_progress, updated_at = now()
    where
        e.tenant_id = tenant and e.id = export and e.status = 'running'
        and not exists (select from app.account_deletions as d where d.tenant_id = tenant);
    return case when found then true end;
end
$$;

comment on function internal.export_progress(uuid, jsonb) is
'Record how far the build of one of the caller''s running exports has got; null once it must stop (account deleted).';

revoke execute on function internal.export_progress(uuid, jsonb) from public;
grant execute on function internal.export_progress(uuid, jsonb) to authenticated;

-- function: internal.finish_export

-- running → ready; the link expires `link_days` after now (the test clock).
create function internal.finish_export(export uuid, archive_bytes bigint, file_counts jsonb, link_days integer)
returns timestamptz
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    expiry timestamptz;
begin
    if link_days not between 1 and 7 then
        raise exception 'an export link lasts 1 to 7 days, not %', link_days using errcode = '22023';
    end if;
    update app.export_requests as e
    set
        status = 'ready', size_bytes = archive_bytes, counts = file_counts, progress = '{}',
        finished_at = now(), updated_at = now(),
        expires_at = app.utc_add(app.clock(), make_interval(days => link_days))
    where
        e.tenant_id = tenant and e.id = export and e.status = 'running'
        and not exists (select from app.account_deletions as d where d.tenant_id = tenant)
    returning e.expires_at into expiry;
    if expiry is not null then
        perform internal.audit(tenant, 'export.ready', 'export', export, jsonb_build_object('size_bytes', archive_bytes));
    end if;
    return expiry;
end
$$;

comment on function internal.finish_export(uuid, bigint, jsonb, integer) is
'Mark one of the caller''s running exports ready (size, per-file counts, link expiry); null if it must not be.';

revoke execute on function internal.finish_export(uuid, bigint, jsonb, integer) from public;
grant execute on function internal.finish_export(uuid, bigint, jsonb, integer) to authenticated;

-- function: internal.fail_export

-- queued|running → failed, with a reason; the plan's frequency counts from the
-- last export that did not fail, so a failure costs the user nothing.
create function internal.fail_export(export uuid, reason text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.export_requests as e
    set status = 'failed', error = left(reason, 2000), progress = '{}', finished_at = now(), updated_at = now()
    where e.tenant_id = tenant and e.id = export and e.status in ('queued', 'running');
    if not found then
        return false;
    end if;
    update app.usage_counters as c
    set
        used = greatest(c.used - 1, 0),
        period_start = coalesce((
            select max(e.requested_at) from app.export_requests as e
            where e.tenant_id = tenant and e.status <> 'failed'
        ), '-infinity')
    where c.tenant_id = tenant and c.quota = 'exports';
    perform internal.audit(tenant, 'export.failed', 'export', export, '{}');
    return true;
end
$$;

comment on function internal.fail_export(uuid, text) is
'Fail one of the caller''s queued or running exports with a reason, giving its place in the plan''s frequency back.';

revoke execute on function internal.fail_export(uuid, text) from public;
grant execute on function internal.fail_export(uuid, text) to authenticated;

-- function: internal.export_notified

-- The email went out: recorded so that a retried job does not send it twice.
create function internal.export_notified(export uuid)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.export_requests as e
    set notified_at = now(), updated_at = now()
    where e.tenant_id = tenant and e.id = export and e.notified_at is null;
    return case when found then true end;
end
$$;

comment on function internal.export_notified(uuid) is
'Record that the email about one of the caller''s exports was sent.';

revoke execute on function internal.export_notified(uuid) from public;
grant execute on function internal.export_notified(uuid) to authenticated;

-- function: internal.exports_to_expire

-- Ready exports whose link has expired (app.clock()): the worker's periodic job
-- deletes their archives, then marks each expired.
create function internal.exports_to_expire(batch integer)
returns table (tenant_id uuid, id uuid)
language sql
stable
security definer
set search_path = ''
as $$
    select e.tenant_id, e.id from app.export_requests as e
    where e.status = 'ready' and e.expires_at <= app.clock()
    order by e.expires_at
    limit batch
$$;

comment on function internal.exports_to_expire(integer) is
'Ready exports past their link''s expiry (the expiry job''s work).';

revoke execute on function internal.exports_to_expire(integer) from public;
grant execute on function internal.exports_to_expire(integer) to quarry_worker;

-- function: internal.expire_export

create function internal.expire_export(tenant uuid, export uuid)
returns boolean
language sql
volatile
security definer
set search_path = ''
as $$
    update app.export_requests as e
    set status = 'expired', updated_at = now()
    where e.tenant_id = tenant and e.id = export and e.status = 'ready' and e.expires_at <= app.clock()
    returning true
$$;

comment on function internal.expire_export(uuid, uuid) is
'Mark a ready export whose archive was deleted at expiry as expired.';

revoke execute on function internal.expire_export(uuid, uuid) from public;
grant execute on function internal.expire_export(uuid, uuid) to quarry_worker;

-- function: internal.requeue_exports

-- Queued exports without a build job (recorded by a path that did not call
-- internal.queue_export, or whose job was lost) get one, so a request never
-- blocks its tenant's next one for good.  The queue is read first, on its own
-- (under Citus it lives on the coordinator), then the exports.
create function internal.requeue_exports(grace_seconds integer)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    building text[];
    stranded record;
    requeued integer := 0;
begin
    select coalesce(array_agg(j.args ->> 'export_id'), '{}') into building
    from procrastinate.procrastinate_jobs as j
    where j.task_name = 'exports:build' and j.status in ('todo', 'doing');
    for stranded in
        select e.tenant_id, e.id from app.export_requests as e
        where
            e.status = 'queued'
            and e.created_at <= now() - make_interval(secs => grace_seconds)
            and e.id::text <> all(building)
        order by e.created_at
        limit 100
    loop
        perform internal.defer_export_build(stranded.tenant_id, stranded.id);
        requeued := requeued + 1;
    end loop;
    return requeued;
end
$$;

comment on function internal.requeue_exports(integer) is
'Defer the build job of every queued export (older than grace_seconds) that has none; how many.';

revoke execute on function internal.requeue_exports(integer) from public;
grant execute on function internal.requeue_exports(integer) to quarry_worker;

-- API (exposed to supabase-js; the caller's privileges and RLS)

-- A ready export past its expiry reads as expired even before the expiry job has run.
create view api.exports with (security_invoker = true) as
select
    id,
    case
        when status = 'ready' and expires_at <= app.clock() then 'expired'::app.export_status
        else status
    end as status,  -- noqa: RF04
    progress,
    counts,
    size_bytes,
    error,
    created_at,
    started_at,
    finished_at,
    expires_at,
    tenant_id
from app.export_requests;

comment on view api.exports is
'The caller''s exports: status, progress, counts, size, expiry (newest first by created_at).';

grant select on api.exports to authenticated, service_role;

-- function: api.request_export

create function api.request_export()
returns setof api.exports
language plpgsql
volatile
set search_path = ''
as $$
declare
    requested app.export_requests;
begin
    insert into app.export_requests default values returning * into requested;
    perform internal.queue_export(requested.id);
    return query select
        requested.id,
        requested.status, requested.progress, requested.counts, requested.size_bytes, requested.error,
        requested.created_at, requested.started_at, requested.finished_at, requested.expires_at,
        requested.tenant_id;
end
$$;

comment on function api.request_export() is
'supabase-js: request an export of all your data (the plan''s frequency; one at a time); the link is emailed.';

revoke execute on function api.request_export() from public;
grant execute on function api.request_export() to authenticated;

-- function: internal.account_email

-- Where the caller's export mails go (the worker acts with claims that carry no email).
create function internal.account_email()
returns text
language sql
stable
security definer
set search_path = ''
as $$
    select u.email from auth.users as u where u.id = auth.uid()
$$;

comment on function internal.account_email() is 'The caller''s own email address (for the mails about its exports).';

revoke execute on function internal.account_email() from public;
grant execute on function internal.account_email() to authenticated;
