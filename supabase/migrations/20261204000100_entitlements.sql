-- Entitlements: which Stripe price buys which plan, and what each Stripe
-- subscription status entitles a tenant to, both as data.
--
-- internal.stripe_prices maps a price id to a plan (seeded from the
-- deployment's STRIPE_PRICE_PRO / STRIPE_PRICE_ENTERPRISE through
-- internal.set_stripe_prices); a subscription to a price that is not in the
-- map is on Free and shows up in ops.unknown_stripe_prices.
-- app.subscription_entitlements is the one table-driven rule for every
-- status: `paid` keeps the subscribed plan, `grace` keeps it while the grace
-- period lasts (past_due), `free` is Free; `live` says whether Stripe still
-- bills the subscription (a live one blocks a second checkout).  A
-- subscription cancelled at the period's end keeps its plan until then.  A
-- downgrade deletes nothing: the quotas refuse new work (402) instead.

-- table: app.subscription_entitlements

create table app.subscription_entitlements (
    status app.subscription_status primary key,
    entitlement text not null,
    live boolean not null,
    constraint subscription_entitlements_known check (entitlement in ('paid', 'grace', 'free'))
);

comment on table app.subscription_entitlements is
'What each Stripe status entitles to (paid; grace: paid during the grace period; free) and whether it is live.';

insert into app.subscription_entitlements (status, entitlement, live) values
('active', 'paid', true),
('trialing', 'paid', true),
('past_due', 'grace', true),
('unpaid', 'free', true),
('paused', 'free', true),
('incomplete', 'free', true),
('incomplete_expired', 'free', false),
('canceled', 'free', false);

grant select on app.subscription_entitlements to authenticated, service_role;

alter table app.subscription_entitlements enable row level security;
alter table app.subscription_entitlements force row level security;

create policy subscription_entitlements_select_all on app.subscription_entitlements
for select to authenticated, service_role
using (true);

-- table: internal.stripe_prices

create table internal.stripe_prices (
    price_id text primary key,
    plan_id text not null references app.plans (id),
    updated_at timestamptz not null default now(),
    constraint stripe_prices_price_format check (price_id ~ '^price_[A-Za-z0-9_]{1,200}$'),
    constraint stripe_prices_paid_plan check (plan_id <> 'free')
);

comment on table internal.stripe_prices is
'Which Stripe price buys which plan; seeded from STRIPE_PRICE_PRO and STRIPE_PRICE_ENTERPRISE.';

grant select on internal.stripe_prices to service_role;

alter table internal.stripe_prices enable row level security;
alter table internal.stripe_prices force row level security;

create policy stripe_prices_select_service on internal.stripe_prices
for select to service_role
using (true);

create index stripe_prices_plan_idx on internal.stripe_prices (plan_id);

-- table: app.subscriptions (new columns)

alter table app.subscriptions
add column stripe_price_id text,
add column cancel_at_period_end boolean not null default false;

comment on column app.subscriptions.stripe_price_id is
'The subscribed Stripe price; one that internal.stripe_prices does not know gives Free.';
comment on column app.subscriptions.cancel_at_period_end is
'Cancelled at the period''s end: the plan lasts until current_period_end.';

create index subscriptions_price_idx on app.subscriptions (stripe_price_id);

-- function: app.effective_plan (the subscription-aware rule, now table-driven)

-- Callers see only their own subscription (RLS), so for anyone else this
-- answers 'free'; the SECURITY DEFINER quota functions see every row.
create or replace function app.effective_plan(tenant uuid)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
    subscribed_plan text;
    now_at timestamptz;
begin
    if tenant is null then
        return null;
    end if;
    now_at := app.clock();
    select s.plan_id into subscribed_plan
    from app.subscriptions as s
    inner join app.subscription_entitlements as e on s.status = e.status
    where
        s.tenant_id = tenant
        and (
            e.entitlement = 'paid'
            or (
                e.entitlement = 'grace'
                and now_at < app.utc_add(
                    s.past_due_since, (select b.past_due_grace from internal.billing_settings as b)
                )
            )
        )
        and not (s.cancel_at_period_end and s.current_period_end is not null and s.current_period_end <= now_at);
    return coalesce(subscribed_plan, 'free');
end
$$;

comment on function app.effective_plan(uuid) is
'The plan whose limits apply to the tenant now (app.subscription_entitlements decides per status).';

-- function: internal.plan_of_price

create function internal.plan_of_price(price text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return coalesce((select p.plan_id from internal.stripe_prices as p where p.price_id = price), 'free');
end
$$;

comment on function internal.plan_of_price(text) is 'The plan a Stripe price buys; Free for an unknown price.';

revoke execute on function internal.plan_of_price(text) from public;

-- function: internal.set_stripe_prices

-- Idempotent: the gateway and the worker call it with their configuration.
-- Subscriptions to a price that was unknown until now get its plan at once.
create function internal.set_stripe_prices(prices jsonb)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    changed integer;
begin
    if jsonb_typeof(prices) is distinct from 'object' then
        raise exception 'prices must be an object of price id to plan' using errcode = '22023';
    end if;
    insert into internal.stripe_prices (price_id, plan_id)
    select p.key, p.value from jsonb_each_text(prices) as p
    on conflict (price_id) do update set plan_id = excluded.plan_id, updated_at = now()
    where internal.stripe_prices.plan_id is distinct from excluded.plan_id;
    get diagnostics changed = row_count;
    update app.subscriptions as s set plan_id = internal.plan_of_price(s.stripe_price_id)
    where s.stripe_price_id is not null and s.plan_id is distinct from internal.plan_of_price(s.stripe_price_id);
    return changed;
end
$$;

comment on function internal.set_stripe_prices(jsonb) is
'Upsert the price id → plan map ({"price_…": "pro"}); returns how many entries changed.';

revoke execute on function internal.set_stripe_prices(jsonb) from public;
grant execute on function internal.set_stripe_prices(jsonb) to quarry_gateway, quarry_worker, service_role;

-- operator views (Supabase Studio)

create view ops.unknown_stripe_prices as
select
    s.tenant_id,
    s.stripe_customer_id,
    s.stripe_subscription_id,
    s.stripe_price_id,
    s.status,
    s.updated_at
from app.subscriptions as s
left join internal.stripe_prices as p on s.stripe_price_id = p.price_id
where s.stripe_price_id is not null and p.price_id is null;

comment on view ops.unknown_stripe_prices is
'Subscriptions to a Stripe price the price map does not know (they are on Free): add it to STRIPE_PRICE_*.';
