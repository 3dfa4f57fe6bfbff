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

-- grants

grant usage on type app.quota to authenticated, service_role;
grant select on app.usage_counters to authenticated;
grant select, delete on app.usage_counters to service_role;
-- A document's size is what was stored; changing it would move storage without a file.
revoke update (size_bytes) on app.documents from authenticated;

-- RLS

alter table app.usage_counters enable row level security;
alter table app.usage_counters force row level security;

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

create function app.quota_resets_at(quota app.quota, period_start timestamptz)
returns timestamptz
language sql
stable
set search_path = ''
as $$
    select case quota
        when 'documents_per_month' then app.utc_add(period_start, interval '1 month')
        when 'queries_per_day' then app.utc_add(period_start, interval '1 day')
    end
$$;

grant execute on function app.quota_period_start(app.quota, timestamptz) to authenticated, service_role;
grant execute on function app.quota_resets_at(app.quota, timestamptz) to authenticated, service_role;

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

-- A limit of the plan by name (null: unlimited).
create function internal.plan_limit(tenant_plan app.plans, quota app.quota)
returns bigint
language plpgsql
immutable
set search_path = ''
as $$
begin
    return case quota
        when 'documents_per_month' then tenant_plan.documents_per_month
        when 'storage_bytes' then tenant_plan.storage_bytes
        when 'drive_folders' then tenant_plan.drive_folders
        when 'queries_per_day' then tenant_plan.queries_per_day
    end;
end
$$;

-- The 402 for a quota that cannot take `amount` more: the limit, the usage
-- and the reset time, in words and as fields.
create function internal.refuse_quota(tenant uuid, tenant_plan app.plans, quota app.quota, amount bigint)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    quota_limit bigint := internal.plan_limit(tenant_plan, quota);
    used bigint := internal.quota_used(tenant, quota);
begin
    perform internal.raise_quota_exceeded(
        tenant_plan.id, quota, used, quota_limit,
        app.quota_resets_at(quota, app.quota_period_start(quota, app.clock())),
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

-- consume_quota, or the 402.
create function internal.require_quota(tenant uuid, tenant_plan app.plans, quota app.quota, amount bigint)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if internal.consume_quota(tenant, quota, amount, internal.plan_limit(tenant_plan, quota)) is null then
        perform internal.refuse_quota(tenant, tenant_plan, quota, amount);
    end if;
end
$$;

-- Before the gateway receives a file: the same 402 the insert would raise if
-- the month is used up or `expected_bytes` cannot fit, so a client does not
-- send 60 MB to hear no.  Advisory only: nothing is counted here, and the
-- insert's atomic check is the one that decides.
create function internal.precheck_upload(expected_bytes bigint)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    tenant_plan app.plans;
begin
    if tenant is null then
        return;
    end if;
    tenant_plan := internal.tenant_plan(tenant);
    if internal.quota_used(tenant, 'documents_per_month') + 1
        > coalesce(tenant_plan.documents_per_month, 'infinity'::numeric) then
        perform internal.refuse_quota(tenant, tenant_plan, 'documents_per_month', 1);
    end if;
    if internal.quota_used(tenant, 'storage_bytes') + greatest(expected_bytes, 0) > tenant_plan.storage_bytes then
        perform internal.refuse_quota(tenant, tenant_plan, 'storage_bytes', greatest(expected_bytes, 0));
    end if;
end
$$;

-- Whether a new row is to be metered.  The BEFORE triggers run before RLS
-- checks the row, so a row claiming another tenant is refused here, the way
-- RLS would refuse it, before it can touch (or reveal) that tenant's
-- counters.  No tenant at all: not metered (the not-null constraint refuses).
create function internal.metered_row(tenant uuid, table_name text)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
    if tenant is null then
        return false;
    end if;
    if auth.uid() is not null and tenant <> auth.uid() then
        raise sqlstate '42501' using message = format(
            'new row violates row-level security policy for table "%s"', table_name
        );
    end if;
    return true;
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
    tenant_plan app.plans;
begin
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
    tenant_plan := internal.tenant_plan(new.tenant_id);
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
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
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
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
    perform internal.require_quota(new.tenant_id, internal.tenant_plan(new.tenant_id), 'queries_per_day', 1);
    return new;
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
revoke execute on function internal.refuse_quota(uuid, app.plans, app.quota, bigint) from public;
revoke execute on function internal.plan_limit(app.plans, app.quota) from public;
revoke execute on function internal.precheck_upload(bigint) from public;
grant execute on function internal.precheck_upload(bigint) to authenticated;
revoke execute on function internal.metered_row(uuid, text) from public;
revoke execute on function internal.meter_document_insert() from public;
revoke execute on function internal.meter_document_resize() from public;
revoke execute on function internal.meter_document_delete() from public;
revoke execute on function internal.meter_query() from public;

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

-- policies

create policy usage_counters_select_own on app.usage_counters
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy usage_counters_service on app.usage_counters
for all to service_role
using (true);

-- ops functions

-- Set storage counters to the real sum of the tenants' documents (one
-- tenant, or all) and report the ones that had drifted.  Each counter row is
-- created if missing and locked before summing, so an upload in flight has
-- either committed (its row is summed) or waits for this transaction; for a
-- large deployment, reconcile tenant by tenant (one transaction each) so no
-- lock is held for long.
create function internal.reconcile_storage(only_tenant uuid default null)
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
        select u.id from auth.users as u where only_tenant is null or u.id = only_tenant
    loop
        insert into app.usage_counters as c (tenant_id, quota, used) values (tenant, 'storage_bytes', 0)
        on conflict on constraint usage_counters_pkey do nothing;
        select c.used into counted_before from app.usage_counters as c
        where c.tenant_id = tenant and c.quota = 'storage_bytes'
        for update;
        select coalesce(sum(d.size_bytes), 0) into real_sum from app.documents as d where d.tenant_id = tenant;
        if counted_before <> real_sum then
            update app.usage_counters as c set used = real_sum
            where c.tenant_id = tenant and c.quota = 'storage_bytes';
            reconcile_storage.tenant_id := tenant;
            counted := counted_before;
            actual := real_sum;
            return next;
        end if;
    end loop;
end
$$;

revoke execute on function internal.reconcile_storage(uuid) from public;
grant execute on function internal.reconcile_storage(uuid) to service_role, quarry_worker;

-- data

-- Documents uploaded before this migration are counted from the start.
insert into app.usage_counters (tenant_id, quota, period_start, used)
select
    d.tenant_id,
    'storage_bytes'::app.quota as quota,
    '-infinity'::timestamptz as period_start,
    sum(d.size_bytes) as used
from app.documents as d
group by d.tenant_id
union all
select
    d.tenant_id,
    'documents_per_month'::app.quota as quota,
    date_trunc('month', now(), 'UTC') as period_start,
    count(*) as used
from app.documents as d
where d.created_at >= date_trunc('month', now(), 'UTC')
group by d.tenant_id;
