-- Plans and subscriptions (DESIGN §6): the limits as data, the tenant's
-- Stripe subscription (written by the billing webhook through the service
-- role), and effective_plan(), the one rule for which plan applies now.
-- The quota clock (app.clock) lives here too: every period, reset and grace
-- period is measured by it, so tests move it instead of sleeping.

-- types

create type app.subscription_status as enum (
    'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused'
);

-- tables

-- Reference data: one row per plan; a null limit means unlimited.
create table app.plans (
    id text primary key,
    display_name text not null,
    tier smallint not null unique,
    documents_per_month integer,
    storage_bytes bigint not null,
    drive_folders integer,
    formats text[],  -- noqa: LT01
    queries_per_day integer,
    requests_per_hour integer not null,
    export_interval interval,
    queue_priority integer not null,
    constraint plans_limits_not_negative check (
        coalesce(documents_per_month, 0) >= 0 and storage_bytes >= 0 and coalesce(drive_folders, 0) >= 0
        and coalesce(queries_per_day, 0) >= 0 and requests_per_hour > 0
    )
);

comment on table app.plans is 'What each plan allows. formats: MIME types; null = every supported format.';
comment on column app.plans.export_interval is 'At most one export per this interval; null = unlimited.';

insert into app.plans (
    id, display_name, tier, documents_per_month, storage_bytes, drive_folders, formats,
    queries_per_day, requests_per_hour, export_interval, queue_priority
) values
(
    'free', 'Free', 0, 50, 500 * 1000 * 1000, 1,
    array['application/pdf', 'text/plain', 'application/json', 'text/markdown'],
    100, 50, interval '1 month', 0
),
('pro', 'Pro', 1, 1000, 10::bigint * 1000 * 1000 * 1000, 10, null, null, 500, interval '7 days', 10),
('enterprise', 'Enterprise', 2, null, 100::bigint * 1000 * 1000 * 1000, null, null, null, 5000, null, 20);

-- At most one row; written by the billing webhook (service role) only.
create table app.subscriptions (
    tenant_id uuid not null primary key references auth.users (id) on delete cascade,
    plan_id text not null references app.plans (id),
    status app.subscription_status not null,
    stripe_customer_id text,
    stripe_subscription_id text unique,
    current_period_end timestamptz,
    past_due_since timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

comment on table app.subscriptions is 'The tenant''s Stripe subscription; no row means Free.';

-- Operator settings: one row.  clock_override exists for tests (period
-- rollover, grace periods); in production it stays null.
create table internal.billing_settings (
    singleton boolean primary key default true,
    past_due_grace interval not null default interval '7 days',
    clock_override timestamptz,
    constraint billing_settings_singleton check (singleton),
    constraint billing_settings_grace_not_negative check (past_due_grace >= interval '0')
);

insert into internal.billing_settings default values;

comment on table internal.billing_settings is
'How long past_due keeps the paid plan; clock_override pins the quota clock (tests only).';

-- grants

grant usage on type app.subscription_status to authenticated, service_role;
grant select on app.plans to authenticated, service_role;
grant select on app.subscriptions to authenticated;
grant select, insert, update, delete on app.subscriptions to service_role;
grant select on internal.billing_settings to authenticated;
grant select, update on internal.billing_settings to service_role;

-- RLS

alter table app.plans enable row level security;
alter table app.plans force row level security;
alter table app.subscriptions enable row level security;
alter table app.subscriptions force row level security;
alter table internal.billing_settings enable row level security;
alter table internal.billing_settings force row level security;

-- indexes

create index subscriptions_plan_idx on app.subscriptions (plan_id);

-- helpers

-- The time every quota, period and grace period is measured by.
create function app.clock()
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
    return coalesce((select s.clock_override from internal.billing_settings as s), now());
end
$$;

grant execute on function app.clock() to authenticated, service_role;

-- t + i on the UTC calendar: days and months do not stretch or shrink with
-- the session's time zone (PostgREST callers can choose it).
create function app.utc_add(t timestamptz, i interval)
returns timestamptz
language plpgsql
immutable
set search_path = ''
as $$
begin
    return (t at time zone 'UTC' + i) at time zone 'UTC';
end
$$;

grant execute on function app.utc_add(timestamptz, interval) to authenticated, service_role;

-- The plan whose limits apply now.  Callers see only their own subscription
-- (RLS), so for anyone else this answers 'free'; the SECURITY DEFINER quota
-- functions see every row.
create or replace function app.effective_plan(tenant uuid)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    subscribed_plan text;
begin
    if tenant is null then
        return null;
    end if;
    select s.plan_id into subscribed_plan
    from app.subscriptions as s
    where
        s.tenant_id = tenant
        and (
            s.status in ('active', 'trialing')
            or (
                s.status = 'past_due'
                and app.clock() < app.utc_add(
                    s.past_due_since, (select b.past_due_grace from internal.billing_settings as b)
                )
            )
        );
    return coalesce(subscribed_plan, 'free');
end
$$;

-- When a subscription falls past due, the grace period starts.
create function internal.track_past_due()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    -- Only the trigger sets past_due_since: a webhook replaying past_due (an
    -- upsert included) must not restart the grace period.
    if new.status <> 'past_due' then
        new.past_due_since := null;
    elsif tg_op = 'UPDATE' and old.status = 'past_due' then
        new.past_due_since := old.past_due_since;
    else
        new.past_due_since := app.clock();
    end if;
    new.updated_at := now();
    return new;
end
$$;

revoke execute on function internal.track_past_due() from public;

create trigger subscriptions_track_past_due
before insert or update on app.subscriptions
for each row execute function internal.track_past_due();

-- The limits that apply to a tenant now, for the SECURITY DEFINER checks.
create function internal.tenant_plan(tenant uuid)
returns app.plans
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    limits app.plans;
begin
    select p.* into limits from app.plans as p where p.id = app.effective_plan(tenant);
    return limits;
end
$$;

revoke execute on function internal.tenant_plan(uuid) from public;

-- The ingest job's priority comes from the plan (same trigger as before).
create or replace function internal.enqueue_document_ingest()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform procrastinate.procrastinate_defer_jobs_v1(array[
        row(
            'ingest',
            'ingest_document',
            (internal.tenant_plan(new.tenant_id)).queue_priority,
            'document:' || new.id::text,
            'ingest:' || new.id::text,
            jsonb_build_object('tenant_id', new.tenant_id, 'document_id', new.id),
            null
        )::procrastinate.procrastinate_job_to_defer_v1
    ]);
    return null;
end
$$;

-- policies

create policy plans_select_all on app.plans
for select to authenticated, service_role
using (true);

create policy subscriptions_select_own on app.subscriptions
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy subscriptions_all_service on app.subscriptions
for all to service_role
using (true)
with check (true);

create policy billing_settings_select on internal.billing_settings
for select to authenticated, service_role
using (true);

create policy billing_settings_update_service on internal.billing_settings
for update to service_role
using (true)
with check (true);

-- API (exposed to supabase-js)

create view api.plans with (security_invoker = true) as
select
    id,
    display_name,
    tier,
    documents_per_month,
    storage_bytes,
    drive_folders,
    formats,
    queries_per_day,
    requests_per_hour,
    export_interval,
    queue_priority
from app.plans;

create view api.subscription with (security_invoker = true) as
select
    plan_id,
    status,
    current_period_end,
    past_due_since,
    created_at,
    updated_at
from app.subscriptions;

grant select on api.plans, api.subscription to authenticated;
