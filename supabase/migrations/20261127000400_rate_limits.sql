-- Rate limits: gateway requests per UTC hour per account (JWT and API-key
-- callers alike; each key's share is counted too), one statement per
-- request; and api.usage, every limit of the caller's plan with its
-- usage, for supabase-js and GET /api/billing/usage.

-- tables

-- Requests in the current UTC hour: subject_id = tenant_id is the account's
-- count (every request), subject_id = a key's id is that key's share.
create table app.rate_limit_windows (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    subject_id uuid not null,
    window_start timestamptz not null,
    requests integer not null,
    primary key (tenant_id, subject_id),
    constraint rate_limit_windows_requests_not_negative check (requests >= 0)
);

comment on table app.rate_limit_windows is 'Gateway requests per caller in the current hour.';

-- grants

grant select on app.rate_limit_windows to authenticated;
grant select, delete on app.rate_limit_windows to service_role;

-- RLS

alter table app.rate_limit_windows enable row level security;
alter table app.rate_limit_windows force row level security;

-- policies

create policy rate_limit_windows_select_own on app.rate_limit_windows
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy rate_limit_windows_service on app.rate_limit_windows
for all to service_role
using (true);

-- gateway functions

-- One request: counted in the account's current UTC hour unless the plan's
-- allowance is already used (refused requests stop counting at limit + 1).
-- The allowance is the account's, whoever calls: were each key limited on its
-- own, minting keys would multiply it.  A key's requests are also counted on
-- the key, for its owner to see (api.api_keys).  One statement per request
-- for the gateway.  No row when the user no longer exists (a deleted
-- account's token is still signed).
create function internal.hit_rate_limit(tenant uuid, api_key_id uuid default null)
returns table (request_limit integer, remaining integer, resets_at timestamptz, allowed boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    hour_limit integer;
    current_window timestamptz;
    counted integer;
begin
    if not exists (select from auth.users as u where u.id = tenant) then
        return;
    end if;
    hour_limit := (internal.tenant_plan(tenant)).requests_per_hour;
    current_window := date_trunc('hour', app.clock(), 'UTC');
    insert into app.rate_limit_windows as w (tenant_id, subject_id, window_start, requests)
    values (tenant, tenant, current_window, 1)
    on conflict on constraint rate_limit_windows_pkey do update
    set
        requests = case
            when w.window_start = excluded.window_start then least(w.requests + 1, hour_limit + 1)
            else 1
        end,
        window_start = excluded.window_start
    returning w.requests into counted;
    if api_key_id is not null and counted <= hour_limit then
        insert into app.rate_limit_windows as w (tenant_id, subject_id, window_start, requests)
        values (tenant, api_key_id, current_window, 1)
        on conflict on constraint rate_limit_windows_pkey do update
        set
            requests = case when w.window_start = excluded.window_start then w.requests + 1 else 1 end,
            window_start = excluded.window_start;
    end if;
    request_limit := hour_limit;
    remaining := greatest(hour_limit - counted, 0);
    resets_at := current_window + interval '1 hour';
    allowed := counted <= hour_limit;
    return next;
end
$$;

revoke execute on function internal.hit_rate_limit(uuid, uuid) from public;
grant execute on function internal.hit_rate_limit(uuid, uuid) to quarry_gateway;

-- API (exposed to supabase-js)

-- Each limit of the caller's plan: used, the limit (null: unlimited) and
-- when the count resets (null: it does not), with the effective plan and
-- the subscription's status (null: no subscription).
create view api.usage with (security_invoker = true) as
with caller as (
    select
        p.*,
        app.clock() as now_at,
        (
            select s.status from app.subscriptions as s
            where s.tenant_id = auth.uid()
        ) as subscription_status
    from app.plans as p
    where p.id = app.effective_plan(auth.uid())
),

metered as (
    select
        q.quota,
        q.quota_limit,
        app.quota_period_start(q.quota, c.now_at) as current_period
    from caller as c
    cross join lateral (
        values
        ('documents_per_month'::app.quota, c.documents_per_month::bigint),
        ('storage_bytes', c.storage_bytes),
        ('drive_folders', c.drive_folders::bigint),
        ('queries_per_day', c.queries_per_day::bigint)
    ) as q (quota, quota_limit)
)

select
    m.quota::text as limit_name,
    coalesce(
        (
            select u.used from app.usage_counters as u
            where u.tenant_id = auth.uid() and u.quota = m.quota and u.period_start = m.current_period
        ),
        0
    ) as used,
    m.quota_limit as limit_value,
    app.quota_resets_at(m.quota, m.current_period) as resets_at,
    c.id as plan,
    c.subscription_status
from metered as m cross join caller as c
union all
select
    'exports' as limit_name,
    case when app.utc_add(e.period_start, c.export_interval) > c.now_at then 1 else 0 end as used,
    case when c.export_interval is not null then 1 end as limit_value,
    case
        when app.utc_add(e.period_start, c.export_interval) > c.now_at
            then app.utc_add(e.period_start, c.export_interval)
    end as resets_at,
    c.id as plan,
    c.subscription_status
from caller as c
left join app.usage_counters as e on e.tenant_id = auth.uid() and e.quota = 'exports'
union all
select
    'requests_per_hour' as limit_name,
    coalesce(
        (
            select w.requests from app.rate_limit_windows as w
            where
                w.tenant_id = auth.uid() and w.subject_id = auth.uid()
                and w.window_start = date_trunc('hour', c.now_at, 'UTC')
        ),
        0
    ) as used,
    c.requests_per_hour as limit_value,
    date_trunc('hour', c.now_at, 'UTC') + interval '1 hour' as resets_at,
    c.id as plan,
    c.subscription_status
from caller as c;

grant select on api.usage to authenticated;
