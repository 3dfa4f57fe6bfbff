-- Lookups that precede the tenant (DESIGN §8): an API key's public lookup id
-- and a Stripe customer id are known before the tenant is, so each maps to its
-- tenant through a small table of its own, keyed by the looked-up value alone.
-- Under Citus these tables are distributed by that value (sql/citus/distribute.sql),
-- so a lookup reads one shard, and every tenant table keeps tenant_id in each
-- key, unique constraint and foreign key: app.api_keys.lookup_id and
-- app.billing_customers.stripe_customer_id are now unique per tenant, and
-- app.subscriptions.stripe_subscription_id too (a Stripe subscription belongs
-- to one customer, which belongs to one tenant, so nothing is lost).
--
-- The lookup rows are written by the SECURITY DEFINER functions that create
-- the looked-up thing (never by a trigger: under Citus a trigger runs on the
-- shard's node and may touch only rows of its own tenant), and read in two
-- single-row steps: value → tenant, then (tenant, id) → the row.

-- table: internal.api_key_lookups

create table internal.api_key_lookups (
    lookup_id text primary key,
    tenant_id uuid not null references auth.users (id) on delete cascade,
    key_id uuid not null,
    constraint api_key_lookups_lookup_id_format check (lookup_id ~ '^[0-9A-Za-z]{12}$')
);

comment on table internal.api_key_lookups is
'An API key''s public lookup id → its tenant and key id (written by internal.issue_api_key).';

grant select on internal.api_key_lookups to service_role;

alter table internal.api_key_lookups enable row level security;
alter table internal.api_key_lookups force row level security;

create policy api_key_lookups_select_service on internal.api_key_lookups
for select to service_role
using (true);

create index api_key_lookups_tenant_idx on internal.api_key_lookups (tenant_id);

insert into internal.api_key_lookups (lookup_id, tenant_id, key_id)
select
    k.lookup_id,
    k.tenant_id,
    k.id
from app.api_keys as k;

-- table: app.api_keys (the lookup id is unique per tenant; globally through internal.api_key_lookups)

alter table app.api_keys drop constraint api_keys_lookup_id_key;
alter table app.api_keys add constraint api_keys_lookup_id_key unique (tenant_id, lookup_id);

-- table: internal.stripe_customer_lookups

create table internal.stripe_customer_lookups (
    stripe_customer_id text primary key,
    tenant_id uuid not null references auth.users (id) on delete cascade,
    constraint stripe_customer_lookups_customer_format check (stripe_customer_id ~ '^cus_[A-Za-z0-9_]{1,200}$')
);

comment on table internal.stripe_customer_lookups is
'A Stripe customer → its tenant (written by internal.record_billing_customer, with app.billing_customers).';

grant select on internal.stripe_customer_lookups to service_role;

alter table internal.stripe_customer_lookups enable row level security;
alter table internal.stripe_customer_lookups force row level security;

create policy stripe_customer_lookups_select_service on internal.stripe_customer_lookups
for select to service_role
using (true);

create index stripe_customer_lookups_tenant_idx on internal.stripe_customer_lookups (tenant_id);

insert into internal.stripe_customer_lookups (stripe_customer_id, tenant_id)
select
    c.stripe_customer_id,
    c.tenant_id
from app.billing_customers as c;

-- table: app.billing_customers (one customer per tenant; the reverse through the lookup)

alter table app.billing_customers drop constraint billing_customers_customer_key;
alter table app.billing_customers add constraint billing_customers_customer_key unique (tenant_id, stripe_customer_id);

-- table: app.subscriptions (the Stripe subscription id is unique per tenant)

alter table app.subscriptions drop constraint subscriptions_stripe_subscription_id_key;
alter table app.subscriptions
add constraint subscriptions_stripe_subscription_id_key unique (tenant_id, stripe_subscription_id);

-- function: internal.find_api_key (as before: one call, one row; now two single-row steps)

create or replace function internal.find_api_key(lookup text)
returns table (
    id uuid, tenant_id uuid, secret_hash text, expires_at timestamptz, revoked_at timestamptz
)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tenant uuid;
    key uuid;
begin
    select l.tenant_id, l.key_id into tenant, key from internal.api_key_lookups as l where l.lookup_id = lookup;
    if tenant is null then
        return;
    end if;
    return query
    select k.id, k.tenant_id, k.secret_hash, k.expires_at, k.revoked_at
    from app.api_keys as k
    where k.tenant_id = tenant and k.id = key and k.lookup_id = lookup;
end
$$;

comment on function internal.find_api_key(text) is
'For the gateway only: the key behind a lookup id, with its hash (lookup table, then the tenant''s row).';

-- function: internal.touch_api_key (now with the tenant, so it reaches one shard)

drop function internal.touch_api_key(uuid);

create function internal.touch_api_key(tenant uuid, key_id uuid)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
    update app.api_keys as k set last_used_at = now()
    where
        k.tenant_id = tenant and k.id = key_id
        and (k.last_used_at is null or k.last_used_at <= now() - interval '1 minute')
$$;

comment on function internal.touch_api_key(uuid, uuid) is
'For the gateway only: a key''s last_used_at, written at most once a minute.';

revoke execute on function internal.touch_api_key(uuid, uuid) from public;
grant execute on function internal.touch_api_key(uuid, uuid) to quarry_gateway;

-- function: internal.issue_api_key (as before, recording the lookup id first)

create or replace function internal.issue_api_key(key_name text, expires timestamptz)
returns app.issued_api_key
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    lookup text := internal.base62_random(12);
    secret text := internal.base62_random(32);
    body text;
    issued app.api_keys;
begin
    if tenant is null then
        perform internal.raise_http(401, 'unauthorized', 'Only a signed-in user can create API keys.', '{}');
    end if;
    -- A key cannot mint keys: a leaked key must not outlive its revocation.
    if auth.jwt() ? 'api_key_id' then
        perform internal.raise_http(
            403, 'forbidden', 'API keys cannot create API keys; sign in to create one.', '{}'
        );
    end if;
    -- One creation at a time per user, so neither the cap nor the hourly count can be raced.
    perform pg_advisory_xact_lock(hashtextextended('api_keys:' || tenant::text, 0));
    if not internal.valid_api_key_name(key_name) then
        perform internal.raise_http(
            422, 'invalid-parameter',
            '`name` must be 1 to 200 characters with no control characters.', '{"field": "name"}'
        );
    end if;
    if expires is not null and expires <= now() then
        perform internal.raise_http(
            422, 'invalid-parameter', '`expires_at` must be in the future.', '{"field": "expires_at"}'
        );
    end if;
    if (select count(*) from app.api_keys as k where k.tenant_id = tenant and k.revoked_at is null) >= 100 then
        perform internal.raise_http(
            409, 'too-many-keys', 'A user can have at most 100 active API keys; revoke one first.', '{}'
        );
    end if;
    -- Counted before the hash, so a refused creation costs no bcrypt.
    perform internal.count_api_key_creation(tenant);
    body := 'sk_live_' || lookup || '_' || secret;
    body := body || internal.base62_fixed(internal.crc32(body), 6);
    insert into app.api_keys as k (tenant_id, lookup_id, secret_hash, name, last4, expires_at)
    values (
        tenant, lookup, extensions.crypt(secret, extensions.gen_salt('bf', 10)), key_name, right(body, 4), expires
    )
    returning k.* into issued;
    insert into internal.api_key_lookups (lookup_id, tenant_id, key_id) values (lookup, tenant, issued.id);
    return row(
        issued.id, issued.name, body, 'sk_live_' || issued.lookup_id, issued.last4, issued.created_at,
        issued.expires_at
    )::app.issued_api_key;
end
$$;

-- function: internal.purge_revoked_api_keys (as before, with their lookup rows)

create or replace function internal.purge_revoked_api_keys(batch integer default 1000)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    purged integer;
begin
    with gone as (
        delete from app.api_keys as k
        using (
            select r.tenant_id, r.id from app.api_keys as r
            where r.revoked_at <= now() - interval '30 days'
            order by r.revoked_at
            limit batch
        ) as due
        where k.tenant_id = due.tenant_id and k.id = due.id
        returning k.lookup_id
    ),

    unlinked as (
        delete from internal.api_key_lookups as l using gone as g where l.lookup_id = g.lookup_id
        returning l.lookup_id
    )

    select count(*) into purged from gone;
    return purged;
end
$$;

-- function: internal.record_billing_customer (as before, binding the customer in the lookup)

-- Returns the tenant's customer: the one given, or the one recorded before
-- (a concurrent checkout won).  A customer already bound to another tenant
-- is refused (409): a customer belongs to one tenant for good.
create or replace function internal.record_billing_customer(tenant uuid, customer text)
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
    if found then
        insert into internal.stripe_customer_lookups (stripe_customer_id, tenant_id) values (customer, tenant);
    end if;
    select c.stripe_customer_id into recorded from app.billing_customers as c where c.tenant_id = tenant;
    return recorded;
exception when unique_violation then
    perform internal.raise_http(409, 'conflict', 'That Stripe customer belongs to another account.', '{}');
    return null;
end
$$;

-- function: internal.tenant_of_stripe_customer

create function internal.tenant_of_stripe_customer(customer text)
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
    select l.tenant_id from internal.stripe_customer_lookups as l where l.stripe_customer_id = customer
$$;

comment on function internal.tenant_of_stripe_customer(text) is
'The tenant a Stripe customer belongs to (null: not one of ours).';

revoke execute on function internal.tenant_of_stripe_customer(text) from public;

-- function: internal.apply_stripe_subscription (as before; the tenant from the lookup)

create or replace function internal.apply_stripe_subscription(event_id text, customer text, subscription jsonb)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid;
    item jsonb := subscription -> 'items' -> 'data' -> 0;
    sub_id text := subscription ->> 'id';
    sub_status app.subscription_status;
    sub_price text := item -> 'price' ->> 'id';
    period_end timestamptz;
    claimed_tenant text := subscription -> 'metadata' ->> 'tenant_id';
    current_row app.subscriptions;
    incoming_live boolean;
    current_live boolean;
    refusal text;
    result text := 'applied';
begin
    tenant := internal.tenant_of_stripe_customer(customer);
    if tenant is null then
        refusal := 'The customer is not one of ours (app.billing_customers).';
    elsif subscription ->> 'object' is distinct from 'subscription' or sub_id is null then
        refusal := 'Not a Stripe subscription.';
    elsif subscription ->> 'customer' is distinct from customer then
        refusal := 'The subscription belongs to another customer than the event''s.';
    elsif claimed_tenant is not null and claimed_tenant is distinct from tenant::text then
        refusal := 'The subscription''s metadata names another tenant than its customer''s.';
    elsif not exists (
        select from app.subscription_entitlements as e where e.status::text = subscription ->> 'status'
    ) then
        refusal := 'Unknown subscription status.';
    end if;
    if refusal is null then
        sub_status := (subscription ->> 'status')::app.subscription_status;
        period_end := to_timestamp(
            coalesce(subscription ->> 'current_period_end', item ->> 'current_period_end')::double precision
        );
        incoming_live := (select e.live from app.subscription_entitlements as e where e.status = sub_status);
        select s.* into current_row from app.subscriptions as s where s.tenant_id = tenant for update;
        if found then
            current_live := (
                select e.live from app.subscription_entitlements as e where e.status = current_row.status
            );
            if current_row.stripe_subscription_id is distinct from sub_id then
                if current_live and current_row.stripe_subscription_id is not null then
                    if incoming_live then
                        refusal := 'The account already has another live subscription ('
                        || current_row.stripe_subscription_id || ').';
                    else
                        result := 'stale';  -- an older subscription's end: the live one stays
                    end if;
                end if;
            elsif not current_live and incoming_live then
                result := 'stale';  -- canceled and incomplete_expired are final
            end if;
        end if;
    end if;
    if refusal is not null then
        if event_id is not null then
            perform internal.fail_stripe_event(event_id, refusal);
        end if;
        return 'failed';
    end if;

    if result = 'applied' then
        insert into app.subscriptions as s (
            tenant_id, plan_id, status, stripe_customer_id, stripe_subscription_id, stripe_price_id,
            current_period_end, cancel_at_period_end
        ) values (
            tenant, internal.plan_of_price(sub_price), sub_status, customer, sub_id, sub_price,
            period_end, coalesce((subscription ->> 'cancel_at_period_end')::boolean, false)
        )
        on conflict (tenant_id) do update set
            plan_id = excluded.plan_id,
            status = excluded.status,
            stripe_customer_id = excluded.stripe_customer_id,
            stripe_subscription_id = excluded.stripe_subscription_id,
            stripe_price_id = excluded.stripe_price_id,
            current_period_end = excluded.current_period_end,
            cancel_at_period_end = excluded.cancel_at_period_end
        where (
            s.plan_id, s.status, s.stripe_subscription_id, s.stripe_price_id, s.current_period_end,
            s.cancel_at_period_end
        ) is distinct from (
            excluded.plan_id, excluded.status, excluded.stripe_subscription_id, excluded.stripe_price_id,
            excluded.current_period_end, excluded.cancel_at_period_end
        );
        update auth.users as u
        set raw_app_meta_data = coalesce(u.raw_app_meta_data, '{}') || jsonb_build_object(
            'plan', app.effective_plan(tenant), 'subscription_status', sub_status
        )
        where u.id = tenant;
    end if;
    if event_id is not null then
        update internal.stripe_events as e
        set
            outcome = result,
            error = null,
            tenant_id = tenant,
            processed_at = now(),
            attempts = e.attempts + case when e.outcome = 'failed' then 1 else 0 end
        where e.id = event_id;
    end if;
    return result;
end
$$;
