-- Billing customers: one Stripe customer per tenant, unique both ways.
--
-- The gateway creates the customer in Stripe on the tenant's first checkout
-- (metadata.tenant_id, an idempotency key derived from the tenant, so
-- concurrent checkouts create one) and records it here through
-- internal.record_billing_customer, which only its login role may call.  The
-- webhook resolves a Stripe customer to a tenant through this table alone,
-- never through metadata.  Tenants read their own row; nobody writes it
-- through the API.  internal.begin_checkout is the SQL side of "one live
-- subscription per tenant": it refuses a checkout while one exists.

-- table: app.billing_customers

create table app.billing_customers (
    tenant_id uuid not null primary key references auth.users (id) on delete cascade,
    stripe_customer_id text not null,
    created_at timestamptz not null default now(),
    constraint billing_customers_customer_key unique (stripe_customer_id),
    constraint billing_customers_customer_format check (stripe_customer_id ~ '^cus_[A-Za-z0-9_]{1,200}$')
);

comment on table app.billing_customers is 'The tenant''s Stripe customer (one each way); written by the gateway only.';

grant select on app.billing_customers to authenticated;
grant select on app.billing_customers to service_role;

alter table app.billing_customers enable row level security;
alter table app.billing_customers force row level security;

create policy billing_customers_select_own on app.billing_customers
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy billing_customers_select_service on app.billing_customers
for select to service_role
using (true);

-- function: internal.record_billing_customer

-- Returns the tenant's customer: the one given, or the one recorded before
-- (a concurrent checkout won).  A customer already bound to another tenant
-- is refused (409): a customer belongs to one tenant for good.
create function internal.record_billing_customer(tenant uuid, customer text)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    recorded text;
begin
    if not exists (select from auth.users as u where u.id = tenant) then
        perform internal.raise_http(404, 'not-found', 'No such user.', '{}');
    end if;
    insert into app.billing_customers (tenant_id, stripe_customer_id) values (tenant, customer)
    on conflict (tenant_id) do nothing;
    select c.stripe_customer_id into recorded from app.billing_customers as c where c.tenant_id = tenant;
    return recorded;
exception when unique_violation then
    perform internal.raise_http(409, 'conflict', 'That Stripe customer belongs to another account.', '{}');
    return null;
end
$$;

comment on function internal.record_billing_customer(uuid, text) is
'Bind a Stripe customer to a tenant (once); returns the tenant''s customer id.';

revoke execute on function internal.record_billing_customer(uuid, text) from public;
grant execute on function internal.record_billing_customer(uuid, text) to quarry_gateway;

-- function: internal.begin_checkout

-- For the caller (auth.uid()): their Stripe customer id (null: none yet), or
-- 409 subscription-exists while they have a live subscription, whose plan
-- and status the problem carries (the gateway adds a Billing Portal link).
create function internal.begin_checkout()
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    live_plan text;
    live_status app.subscription_status;
begin
    if tenant is null then
        perform internal.raise_http(401, 'unauthorized', 'Sign in first.', '{}');
    end if;
    select s.plan_id, s.status into live_plan, live_status
    from app.subscriptions as s
    inner join app.subscription_entitlements as e on s.status = e.status
    where s.tenant_id = tenant and e.live and s.stripe_subscription_id is not null;
    if found then
        perform internal.raise_http(
            409,
            'subscription-exists',
            'The account already has a subscription; change it in the Billing Portal.',
            jsonb_build_object('plan', live_plan, 'subscription_status', live_status)
        );
    end if;
    return (select c.stripe_customer_id from app.billing_customers as c where c.tenant_id = tenant);
end
$$;

comment on function internal.begin_checkout() is
'The caller''s Stripe customer (null: none yet); 409 subscription-exists while a live subscription exists.';

revoke execute on function internal.begin_checkout() from public;
grant execute on function internal.begin_checkout() to authenticated;
