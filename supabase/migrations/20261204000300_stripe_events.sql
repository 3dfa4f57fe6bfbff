-- Stripe events: what the stripe-webhook Edge Function (and the worker's
-- reconciliation) write, and the login role that may write nothing else.
--
-- The webhook, in one transaction: internal.claim_stripe_event records the
-- event id (a duplicate, even a concurrent one, waits on the first and then
-- changes nothing) and takes a per-customer lock; it re-fetches the
-- subscription from Stripe; internal.apply_stripe_subscription writes it.
-- The apply function is the one writer of Stripe's state: the tenant comes
-- from app.billing_customers only (metadata naming another tenant is
-- refused), the price map gives the plan, a subscription that is not the
-- tenant's live one cannot replace it (stale events of an old subscription,
-- a second subscription), a cancelled subscription stays cancelled, and
-- {plan, subscription_status} is mirrored into auth.users.raw_app_meta_data
-- (app_metadata; user_metadata is the user's to write).  A refused event is
-- kept as failed, with its error, in ops.stripe_event_failures, and can be
-- replayed (the worker re-fetches and applies it again).

do $webhook_role$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'quarry_webhook') then
        create role quarry_webhook nologin noinherit;
    end if;
    -- On Supabase the Edge Function logs in as postgres (SUPABASE_DB_URL), which is
    -- no superuser there: it needs the membership to `set local role quarry_webhook`.
    if not (select r.rolsuper from pg_catalog.pg_roles as r where r.rolname = current_user) then
        execute format('grant quarry_webhook to %I', current_user);
    end if;
end
$webhook_role$;

comment on role quarry_webhook is
'The stripe-webhook Edge Function: may record Stripe events and apply subscriptions, nothing else.';

grant usage on schema internal to quarry_webhook;

-- table: internal.stripe_events

create table internal.stripe_events (
    id text primary key,
    event_type text not null,
    stripe_customer_id text,
    object_id text,
    tenant_id uuid references auth.users (id) on delete set null,
    outcome text not null default 'received',
    error text,
    attempts integer not null default 1,
    stripe_created_at timestamptz,
    received_at timestamptz not null default now(),
    processed_at timestamptz,
    constraint stripe_events_id_format check (id ~ '^evt_[A-Za-z0-9_]{1,200}$'),
    constraint stripe_events_outcome_known check (outcome in ('received', 'applied', 'stale', 'ignored', 'failed')),
    constraint stripe_events_error_length check (char_length(error) <= 1000),
    constraint stripe_events_type_length check (char_length(event_type) <= 200)
);

comment on table internal.stripe_events is
'Every Stripe event received (id = Stripe''s, so a redelivery is a no-op), with its outcome and error.';

grant select on internal.stripe_events to service_role;

alter table internal.stripe_events enable row level security;
alter table internal.stripe_events force row level security;

create policy stripe_events_select_service on internal.stripe_events
for select to service_role
using (true);

create index stripe_events_failed_idx on internal.stripe_events (received_at) where outcome = 'failed';
create index stripe_events_customer_idx on internal.stripe_events (stripe_customer_id, received_at);
create index stripe_events_tenant_idx on internal.stripe_events (tenant_id) where tenant_id is not null;

-- function: internal.lock_stripe_customer

create function internal.lock_stripe_customer(customer text)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('stripe-customer:' || customer, 0));
end
$$;

comment on function internal.lock_stripe_customer(text) is
'Serialise the transactions that work on one Stripe customer (until the transaction ends).';

revoke execute on function internal.lock_stripe_customer(text) from public;
grant execute on function internal.lock_stripe_customer(text) to quarry_worker;

-- function: internal.claim_stripe_event

-- 'new': the event is ours (until the transaction ends), the customer is
-- locked: re-fetch and apply.  'duplicate': it was received before (or is
-- being handled by a concurrent delivery, which this waited for).
-- 'ignored': a type we do not handle, recorded as such.
create function internal.claim_stripe_event(
    event_id text, event_type text, customer text, object_id text, created_at timestamptz
)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    insert into internal.stripe_events (id, event_type, stripe_customer_id, object_id, stripe_created_at)
    values (event_id, event_type, customer, object_id, created_at)
    on conflict (id) do nothing;
    if not found then
        return 'duplicate';
    end if;
    if event_type not in (
        'checkout.session.completed', 'customer.subscription.created', 'customer.subscription.updated',
        'customer.subscription.deleted', 'invoice.paid', 'invoice.payment_failed'
    ) then
        update internal.stripe_events as e set outcome = 'ignored', processed_at = now() where e.id = event_id;
        return 'ignored';
    end if;
    if customer is null then
        update internal.stripe_events as e set outcome = 'failed', error = 'The event names no customer.'
        where e.id = event_id;
        return 'failed';
    end if;
    perform internal.lock_stripe_customer(customer);
    return 'new';
end
$$;

comment on function internal.claim_stripe_event(text, text, text, text, timestamptz) is
'Record a Stripe event once and lock its customer: new, duplicate, ignored or failed.';

revoke execute on function internal.claim_stripe_event(text, text, text, text, timestamptz) from public;
grant execute on function internal.claim_stripe_event(text, text, text, text, timestamptz) to quarry_webhook;

-- function: internal.fail_stripe_event

create function internal.fail_stripe_event(event_id text, reason text)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update internal.stripe_events as e
    set outcome = 'failed', error = left(reason, 1000), processed_at = now()
    where e.id = event_id;
end
$$;

comment on function internal.fail_stripe_event(text, text) is
'Mark a received event failed, with why (shown in ops.stripe_event_failures; replayable).';

revoke execute on function internal.fail_stripe_event(text, text) from public;
grant execute on function internal.fail_stripe_event(text, text) to quarry_webhook, quarry_worker;

-- function: internal.apply_stripe_subscription

-- subscription: the Stripe subscription object as re-fetched from Stripe.
-- Returns 'applied', 'stale' (an older subscription's state, or a cancelled
-- one coming back: nothing changed) or 'failed' (refused: nothing changed
-- but the event's error).  event_id null: a reconciliation, no event.
create function internal.apply_stripe_subscription(event_id text, customer text, subscription jsonb)
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
    select c.tenant_id into tenant from app.billing_customers as c where c.stripe_customer_id = customer;
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

comment on function internal.apply_stripe_subscription(text, text, jsonb) is
'Write a Stripe subscription (as re-fetched) for the customer''s tenant: applied, stale or failed.';

revoke execute on function internal.apply_stripe_subscription(text, text, jsonb) from public;
grant execute on function internal.apply_stripe_subscription(text, text, jsonb) to quarry_webhook, quarry_worker;

-- function: internal.billing_customers_to_reconcile

create function internal.billing_customers_to_reconcile()
returns table (tenant_id uuid, stripe_customer_id text)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return query select c.tenant_id, c.stripe_customer_id from app.billing_customers as c order by c.created_at;
end
$$;

comment on function internal.billing_customers_to_reconcile() is
'Every tenant''s Stripe customer, for the reconciliation job.';

revoke execute on function internal.billing_customers_to_reconcile() from public;
grant execute on function internal.billing_customers_to_reconcile() to quarry_worker;

-- function: internal.stripe_events_to_replay

create function internal.stripe_events_to_replay(only_event text default null)
returns table (id text, event_type text, stripe_customer_id text, object_id text)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return query
    select e.id, e.event_type, e.stripe_customer_id, e.object_id
    from internal.stripe_events as e
    where e.outcome = 'failed' and e.stripe_customer_id is not null and (only_event is null or e.id = only_event)
    order by e.received_at;
end
$$;

comment on function internal.stripe_events_to_replay(text) is 'Failed events (or the one named) to replay.';

revoke execute on function internal.stripe_events_to_replay(text) from public;
grant execute on function internal.stripe_events_to_replay(text) to quarry_worker;

-- function: internal.job_queue (the reconciliation joins the maintenance queue)

create or replace function internal.job_queue(task_name text)
returns text
language sql
immutable
set search_path = ''
as $$
    select case task_name
        when 'documents:ingest' then 'ingest'
        when 'maintenance:purge_idempotency_keys' then 'maintenance'
        when 'maintenance:purge_revoked_api_keys' then 'maintenance'
        when 'billing:reconcile' then 'maintenance'
    end
$$;

-- operator views (Supabase Studio)

create view ops.stripe_event_failures as
select
    id,
    event_type,
    stripe_customer_id,
    object_id,
    tenant_id,
    error,
    attempts,
    received_at,
    processed_at
from internal.stripe_events
where outcome = 'failed';

comment on view ops.stripe_event_failures is
'Stripe events that could not be applied, with why; `python -m quarry.billing replay` applies them again.';

create view ops.stripe_events_by_outcome as
select
    event_type,
    outcome,
    count(*) as events,
    max(received_at) as last_received_at
from internal.stripe_events
group by event_type, outcome;
