-- Quotas (DESIGN §6), enforced in SQL so that the gateway and PostgREST
-- get the same checks.  Every check-and-count is one atomic upsert on the
-- tenant's counter row (concurrent callers queue on its lock); the triggers
-- sit on the metered tables themselves, so no entry point can skip them.
-- Refusals are `raise sqlstate 'PGRST'` with the HTTP status inside, which
-- PostgREST and the gateway both turn into the same response.

-- types

create type app.quota as enum ('documents_per_month', 'storage_bytes', 'drive_folders', 'queries_per_day', 'exports');

-- tables

-- The tenant's counters: one row per quota.  period_start is the calendar
-- month or day (UTC) the count belongs to, or the time of the last export;
-- a row from an earlier period counts as zero.
create table app.usage_counters (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    quota app.quota not null,
    period_start timestamptz not null default '-infinity',
    used bigint not null default 0,
    primary key (tenant_id, quota),
    constraint usage_counters_used_not_negative check (used >= 0)
);

comment on table app.usage_counters is 'Quota usage per tenant; written only by the quota functions.';

-- Stubs until the Drive and export issues: the rows whose creation is metered.
create table app.drive_folders (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    google_folder_id text not null,
    name text not null,  -- noqa: RF04
    created_at timestamptz not null default now(),
    primary key (tenant_id, id),
    constraint drive_folders_folder_key unique (tenant_id, google_folder_id),
    constraint drive_folders_name_length check (char_length(name) between 1 and 1024),
    constraint drive_folders_folder_id_length check (char_length(google_folder_id) between 1 and 256)
);

comment on table app.drive_folders is 'A Google Drive folder a tenant syncs (metered by the plan).';

create table app.export_requests (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    created_at timestamptz not null default now(),
    primary key (tenant_id, id)
);

comment on table app.export_requests is 'A request to export all of a tenant''s data (metered by the plan).';

-- grants

grant usage on type app.quota to authenticated, service_role;
grant select on app.usage_counters to authenticated;
grant select, delete on app.usage_counters to service_role;
grant select, delete on app.drive_folders to authenticated;
grant insert (tenant_id, id, google_folder_id, name) on app.drive_folders to authenticated;
grant select, insert, update, delete on app.drive_folders to service_role;
grant select on app.export_requests to authenticated;
grant insert (tenant_id, id) on app.export_requests to authenticated;
grant select, insert, delete on app.export_requests to service_role;

-- RLS

alter table app.usage_counters enable row level security;
alter table app.usage_counters force row level security;
alter table app.drive_folders enable row level security;
alter table app.drive_folders force row level security;
alter table app.export_requests enable row level security;
alter table app.export_requests force row level security;

-- indexes

create index subscriptions_plan_idx on app.subscriptions (plan_id);
create index export_requests_tenant_created_idx on app.export_requests (tenant_id, created_at desc);

-- helpers

-- The start of the period a quota counts in, and when it resets (null: never).
create function app.quota_period_start(quota app.quota, moment timestamptz)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return case quota
        when 'documents_per_month' then date_trunc('month', moment, 'UTC')
        when 'queries_per_day' then date_trunc('day', moment, 'UTC')
        else '-infinity'::timestamptz
    end;
end
$$;

create function app.quota_resets_at(quota app.quota, period_start timestamptz, export_interval interval)
returns timestamptz
language sql
stable
set search_path = ''
as $$
    select case quota
        when 'documents_per_month' then (period_start at time zone 'UTC' + interval '1 month') at time zone 'UTC'
        when 'queries_per_day' then period_start + interval '1 day'
        when 'exports' then case when period_start > '-infinity' then period_start + export_interval end
    end
$$;

grant execute on function app.quota_period_start(app.quota, timestamptz) to authenticated, service_role;
grant execute on function app.quota_resets_at(app.quota, timestamptz, interval) to authenticated, service_role;

-- A UTC timestamp as ISO 8601 for error bodies.
create function internal.iso_utc(moment timestamptz)
returns text
language sql
stable
set search_path = ''
as $$
    select to_char(moment at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- The refusal: PostgREST answers with this status and body, the gateway too.
create function internal.raise_http(status integer, code text, message text, details jsonb, hint text default null)
returns void
language plpgsql
set search_path = ''
as $$
begin
    raise sqlstate 'PGRST' using
        message = jsonb_build_object('code', code, 'message', message, 'details', details::text, 'hint', hint)::text,
        detail = jsonb_build_object('status', status, 'headers', '{}'::jsonb)::text;
end
$$;

create function internal.raise_quota_exceeded(
    tenant_plan text, quota app.quota, used bigint, quota_limit bigint, resets_at timestamptz, message text
)
returns void
language sql
set search_path = ''
as $$
    select internal.raise_http(
        402,
        'quota-exceeded',
        message,
        jsonb_build_object(
            'limit', quota,
            'used', used,
            'limit_value', quota_limit,
            'resets_at', internal.iso_utc(resets_at),
            'plan', tenant_plan
        ),
        'Upgrade your plan, or wait until the limit resets.'
    )
$$;

-- Add `amount` to the tenant's counter in the current period if that keeps it
-- within `quota_limit` (null: unlimited), in one statement; the row lock makes
-- concurrent callers queue.  Returns the new count, or null if refused.
create function internal.consume_quota(tenant uuid, quota app.quota, amount bigint, quota_limit bigint)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    counted bigint;
begin
    insert into app.usage_counters as c (tenant_id, quota, period_start, used)
    select tenant, consume_quota.quota, app.quota_period_start(consume_quota.quota, app.clock()), amount
    where quota_limit is null or amount <= quota_limit
    on conflict on constraint usage_counters_pkey do update
    set
        used = case when c.period_start = excluded.period_start then c.used else 0 end + excluded.used,
        period_start = excluded.period_start
    where
        quota_limit is null
        or case when c.period_start = excluded.period_start then c.used else 0 end + excluded.used <= quota_limit
    returning c.used into counted;
    return counted;
end
$$;

-- Give back what was consumed (storage of a deleted document, a removed
-- folder); never below zero.
create function internal.release_quota(tenant uuid, quota app.quota, amount bigint)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.usage_counters as c
    set used = greatest(c.used - amount, 0)
    where c.tenant_id = tenant and c.quota = release_quota.quota;
end
$$;

-- What the counter holds now in the current period (for the refusal message).
create function internal.quota_used(tenant uuid, quota app.quota)
returns bigint
language sql
stable
security definer
set search_path = ''
as $$
    select coalesce(
        (
            select c.used from app.usage_counters as c
            where
                c.tenant_id = tenant and c.quota = quota_used.quota
                and c.period_start = app.quota_period_start(quota_used.quota, app.clock())
        ),
        0
    )
$$;

-- consume_quota or a 402 naming the limit, the usage and the reset time.
create function internal.require_quota(tenant uuid, tenant_plan app.plans, quota app.quota, amount bigint)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    quota_limit bigint := case quota
        when 'documents_per_month' then tenant_plan.documents_per_month
        when 'storage_bytes' then tenant_plan.storage_bytes
        when 'drive_folders' then tenant_plan.drive_folders
        when 'queries_per_day' then tenant_plan.queries_per_day
    end;
    used bigint;
    resets_at timestamptz;
begin
    if internal.consume_quota(tenant, quota, amount, quota_limit) is not null then
        return;
    end if;
    used := internal.quota_used(tenant, quota);
    resets_at := app.quota_resets_at(quota, app.quota_period_start(quota, app.clock()), null);
    perform internal.raise_quota_exceeded(
        tenant_plan.id, quota, used, quota_limit, resets_at,
        case quota
            when 'documents_per_month' then format(
                'The %s plan allows %s new documents per month; %s have been added this month.',
                tenant_plan.display_name, quota_limit, used
            )
            when 'storage_bytes' then format(
                'The %s plan allows %s bytes of storage; %s are in use and this needs %s more.',
                tenant_plan.display_name, quota_limit, used, amount
            )
            when 'drive_folders' then format(
                'The %s plan allows %s Drive folder(s); %s are connected.',
                tenant_plan.display_name, quota_limit, used
            )
            when 'queries_per_day' then format(
                'The %s plan allows %s queries per day; %s have been made today.',
                tenant_plan.display_name, quota_limit, used
            )
        end
    );
end
$$;

-- Upload: the format must be in the plan, then the monthly count and the
-- storage bytes are reserved, all inside the insert that creates the row.
create function internal.meter_document_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    tenant_plan app.plans := internal.tenant_plan(new.tenant_id);
begin
    if new.tenant_id is null then
        return new;  -- no caller: the not-null constraint and RLS refuse the row
    end if;
    if tenant_plan.formats is not null and (new.mime_type is null or new.mime_type <> all(tenant_plan.formats)) then
        perform internal.raise_http(
            415,
            'format-not-in-plan',
            format(
                'The %s plan does not include %s files.',
                tenant_plan.display_name, coalesce(new.mime_type, 'unidentified')
            ),
            jsonb_build_object(
                'mime_type', new.mime_type,
                'plan', tenant_plan.id,
                'allowed_formats', to_jsonb(tenant_plan.formats),
                'plans_allowing', (
                    select coalesce(jsonb_agg(p.id order by p.tier), '[]'::jsonb) from app.plans as p
                    where p.formats is null or new.mime_type = any(p.formats)
                )
            ),
            'Upgrade your plan to upload this format.'
        );
    end if;
    perform internal.require_quota(new.tenant_id, tenant_plan, 'documents_per_month', 1);
    perform internal.require_quota(new.tenant_id, tenant_plan, 'storage_bytes', new.size_bytes);
    return new;
end
$$;

-- A changed size moves the reservation with it.
create function internal.meter_document_resize()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if new.size_bytes > old.size_bytes then
        perform internal.require_quota(
            new.tenant_id, internal.tenant_plan(new.tenant_id), 'storage_bytes', new.size_bytes - old.size_bytes
        );
    elsif new.size_bytes < old.size_bytes then
        perform internal.release_quota(new.tenant_id, 'storage_bytes', old.size_bytes - new.size_bytes);
    end if;
    return new;
end
$$;

-- Deleting frees the storage, never the monthly count.
create function internal.meter_document_delete()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform internal.release_quota(old.tenant_id, 'storage_bytes', old.size_bytes);
    return null;
end
$$;

create function internal.meter_query()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if new.tenant_id is null then
        return new;  -- no caller: the not-null constraint and RLS refuse the row
    end if;
    perform internal.require_quota(new.tenant_id, internal.tenant_plan(new.tenant_id), 'queries_per_day', 1);
    return new;
end
$$;

create function internal.meter_drive_folder()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op = 'DELETE' then
        perform internal.release_quota(old.tenant_id, 'drive_folders', 1);
        return null;
    end if;
    if new.tenant_id is null then
        return new;
    end if;
    perform internal.require_quota(new.tenant_id, internal.tenant_plan(new.tenant_id), 'drive_folders', 1);
    return new;
end
$$;

-- One export per the plan's interval: the counter's period_start is the time
-- of the last accepted request; the upsert only moves it once the interval
-- has passed.
create function internal.meter_export()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    tenant_plan app.plans := internal.tenant_plan(new.tenant_id);
    now_at timestamptz := app.clock();
    last_at timestamptz;
begin
    if new.tenant_id is null then
        return new;  -- no caller: the not-null constraint and RLS refuse the row
    end if;
    insert into app.usage_counters as c (tenant_id, quota, period_start, used)
    values (new.tenant_id, 'exports', now_at, 1)
    on conflict (tenant_id, quota) do update
    set period_start = excluded.period_start, used = c.used + 1
    where tenant_plan.export_interval is null or c.period_start + tenant_plan.export_interval <= excluded.period_start;
    if found then
        return new;
    end if;
    select c.period_start into last_at from app.usage_counters as c
    where c.tenant_id = new.tenant_id and c.quota = 'exports';
    perform internal.raise_quota_exceeded(
        tenant_plan.id, 'exports', 1, 1, last_at + tenant_plan.export_interval,
        format(
            'The %s plan allows one export per %s; the last one was requested at %s.',
            tenant_plan.display_name, tenant_plan.export_interval, internal.iso_utc(last_at)
        )
    );
    return null;
end
$$;

revoke execute on function internal.raise_http(integer, text, text, jsonb, text) from public;
revoke execute on function internal.raise_quota_exceeded(
    text, app.quota, bigint, bigint, timestamptz, text
) from public;
revoke execute on function internal.consume_quota(uuid, app.quota, bigint, bigint) from public;
revoke execute on function internal.release_quota(uuid, app.quota, bigint) from public;
revoke execute on function internal.quota_used(uuid, app.quota) from public;
revoke execute on function internal.require_quota(uuid, app.plans, app.quota, bigint) from public;
revoke execute on function internal.meter_document_insert() from public;
revoke execute on function internal.meter_document_resize() from public;
revoke execute on function internal.meter_document_delete() from public;
revoke execute on function internal.meter_query() from public;
revoke execute on function internal.meter_drive_folder() from public;
revoke execute on function internal.meter_export() from public;

create trigger documents_meter_insert
before insert on app.documents
for each row execute function internal.meter_document_insert();

create trigger documents_meter_resize
before update of size_bytes on app.documents
for each row
when (new.size_bytes is distinct from old.size_bytes)
execute function internal.meter_document_resize();

create trigger documents_meter_delete
after delete on app.documents
for each row execute function internal.meter_document_delete();

create trigger query_log_meter
before insert on app.query_log
for each row execute function internal.meter_query();

create trigger drive_folders_meter
before insert on app.drive_folders
for each row execute function internal.meter_drive_folder();

create trigger drive_folders_meter_delete
after delete on app.drive_folders
for each row execute function internal.meter_drive_folder();

create trigger export_requests_meter
before insert on app.export_requests
for each row execute function internal.meter_export();

-- policies

create policy usage_counters_select_own on app.usage_counters
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy usage_counters_service on app.usage_counters
for all to service_role
using (true);

create policy drive_folders_select_own on app.drive_folders
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_folders_insert_own on app.drive_folders
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy drive_folders_delete_own on app.drive_folders
for delete to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_folders_service on app.drive_folders
for all to service_role
using (true)
with check (true);

create policy export_requests_select_own on app.export_requests
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy export_requests_insert_own on app.export_requests
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy export_requests_service on app.export_requests
for all to service_role
using (true)
with check (true);

-- ops functions

-- Set every tenant's storage counter to the real sum of its documents and
-- report the ones that had drifted.  The counter row is locked first, so an
-- upload in flight either finished (its row is summed) or waits.
create function internal.reconcile_storage()
returns table (tenant_id uuid, counted bigint, actual bigint)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid;
    counted_before bigint;
    real_sum bigint;
begin
    for tenant in
        select u.id from auth.users as u
        union
        select c.tenant_id from app.usage_counters as c
    loop
        select c.used into counted_before from app.usage_counters as c
        where c.tenant_id = tenant and c.quota = 'storage_bytes'
        for update;
        select coalesce(sum(d.size_bytes), 0) into real_sum from app.documents as d where d.tenant_id = tenant;
        if coalesce(counted_before, 0) <> real_sum then
            insert into app.usage_counters as c (tenant_id, quota, used) values (tenant, 'storage_bytes', real_sum)
            on conflict on constraint usage_counters_pkey do update set used = excluded.used;
            reconcile_storage.tenant_id := tenant;
            counted := coalesce(counted_before, 0);
            actual := real_sum;
            return next;
        end if;
    end loop;
end
$$;

revoke execute on function internal.reconcile_storage() from public;
grant execute on function internal.reconcile_storage() to service_role, quarry_worker;
