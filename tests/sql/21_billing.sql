-- Billing: the entitlement rule per Stripe status, the price map, one Stripe
-- customer per tenant, the webhook's event record and apply function, and
-- who may touch any of it (anon, the owner, another tenant, the service role,
-- the gateway's and the webhook's login roles).
begin;
set local search_path = tests, public;
select plan(66);

select tests.create_users('a', 'b', 'c');
select tests.set_clock('2026-03-15 12:00:00+00');
select internal.set_stripe_prices('{"price_pro": "pro", "price_ent": "enterprise"}');

-- A Stripe subscription object, as the webhook re-fetches it.
create function pg_temp.sub(
    id text, customer text, status text, price text, tenant uuid default null, cancel_at_period_end boolean default false
)
returns jsonb
language sql
as $$
    select jsonb_build_object(
        'object', 'subscription', 'id', id, 'customer', customer, 'status', status,
        'cancel_at_period_end', cancel_at_period_end,
        'metadata', case when tenant is null then '{}'::jsonb else jsonb_build_object('tenant_id', tenant) end,
        'items', jsonb_build_object('data', jsonb_build_array(jsonb_build_object(
            'price', jsonb_build_object('id', price),
            'current_period_end', extract(epoch from timestamptz '2026-04-15 12:00:00+00')
        )))
    )
$$;
grant execute on function pg_temp.sub(text, text, text, text, uuid, boolean) to public;

create function pg_temp.plan_of(user_name text) returns text language sql as $$
    select app.effective_plan(tests.user_id(user_name))
$$;
grant execute on function pg_temp.plan_of(text) to public;

-- the entitlement rule, as data

select is(
    (select count(*) from app.subscription_entitlements),
    (select count(*) from unnest(enum_range(null::app.subscription_status)))::bigint,
    'every Stripe status has an entitlement'
);
select results_eq(
    $$select status::text, entitlement, live from app.subscription_entitlements order by status::text$$,
    $$values ('active', 'paid', true), ('canceled', 'free', false), ('incomplete', 'free', true),
    ('incomplete_expired', 'free', false), ('past_due', 'grace', true), ('paused', 'free', true),
    ('trialing', 'paid', true), ('unpaid', 'free', true)$$,
    'active and trialing are paid, past_due has a grace period, the rest are Free'
);

-- one Stripe customer per tenant, recorded by the gateway's login role only

set local session authorization quarry_gateway;
select is(internal.record_billing_customer(tests.user_id('a'), 'cus_a'), 'cus_a', 'the gateway records A''s customer');
select is(
    internal.record_billing_customer(tests.user_id('a'), 'cus_a_again'), 'cus_a',
    'a second (concurrent) checkout gets the customer recorded first'
);
select is(
    (tests.refusal($$select internal.record_billing_customer(tests.user_id('b'), 'cus_a')$$) ->> 'status')::int,
    409, 'A''s customer cannot be bound to B'
);
select is(internal.record_billing_customer(tests.user_id('b'), 'cus_b'), 'cus_b', 'B gets its own customer');
select throws_ok($$select * from app.billing_customers$$, '42501', null, 'the gateway''s role reads no table');
select throws_ok(
    $$select internal.apply_stripe_subscription(null, 'cus_a', '{}')$$, '42501', null,
    'nor writes subscriptions'
);
reset session authorization;

select tests.act_as(tests.user_id('a'));
select results_eq(
    'select tenant_id, stripe_customer_id from app.billing_customers',
    $$values (tests.user_id('a'), 'cus_a')$$,
    'A reads its own customer and no other'
);
select throws_ok(
    $$insert into app.billing_customers (tenant_id, stripe_customer_id) values (auth.uid(), 'cus_evil')$$,
    '42501', null, 'A cannot bind itself to a customer'
);
select throws_ok(
    $$update app.billing_customers set stripe_customer_id = 'cus_b'$$, '42501', null, 'nor take B''s customer'
);
select throws_ok($$delete from app.billing_customers$$, '42501', null, 'nor drop its customer');
select throws_ok(
    $$select internal.record_billing_customer(auth.uid(), 'cus_evil')$$, '42501', null,
    'nor call the gateway''s function'
);
select throws_ok($$select * from internal.stripe_events$$, '42501', null, 'A cannot read the event table');
select throws_ok(
    $$insert into internal.stripe_events (id, event_type) values ('evt_forged', 'invoice.paid')$$,
    '42501', null, 'nor write it'
);
select throws_ok(
    $$select internal.claim_stripe_event('evt_x', 'invoice.paid', 'cus_a', null, null)$$, '42501', null,
    'nor claim an event'
);
select throws_ok(
    $$select internal.apply_stripe_subscription(null, 'cus_a', pg_temp.sub('sub_x', 'cus_a', 'active', 'price_ent'))$$,
    '42501', null, 'nor apply a subscription'
);
select throws_ok(
    $$select internal.set_stripe_prices('{"price_free_lunch": "enterprise"}')$$, '42501', null,
    'nor change the price map'
);
select throws_ok($$select * from internal.stripe_prices$$, '42501', null, 'nor read it');
select is(internal.begin_checkout(), 'cus_a', 'A may check out: no live subscription yet');
select throws_ok(
    $$insert into app.subscriptions (tenant_id, plan_id, status, stripe_subscription_id)
      values (auth.uid(), 'enterprise', 'active', 'sub_free_lunch')$$,
    '42501', null, 'A cannot write its own subscription'
);
select throws_ok(
    $$update app.subscription_entitlements set entitlement = 'paid' where status = 'canceled'$$,
    '42501', null, 'nor change the entitlement rule'
);

select tests.act_as(tests.user_id('b'));
select results_eq(
    'select stripe_customer_id from app.billing_customers', $$values ('cus_b')$$, 'B sees only its own customer'
);
select throws_ok(
    $$update app.billing_customers set tenant_id = auth.uid() where stripe_customer_id = 'cus_a'$$,
    '42501', null, 'B cannot take A''s customer'
);

select tests.act_as(tests.user_id('c'));
select is(internal.begin_checkout(), null, 'C has no customer yet');

select tests.act_as_anon();
select throws_ok($$select * from app.billing_customers$$, '42501', null, 'anon reads no customer');
select throws_ok($$select internal.begin_checkout()$$, '42501', null, 'anon cannot check out');

select tests.act_as_service_role();
select is((select count(*) from app.billing_customers), 2::bigint, 'the service role reads every customer');
select throws_ok(
    $$insert into app.billing_customers (tenant_id, stripe_customer_id) values (tests.user_id('c'), 'cus_c')$$,
    '42501', null, 'but writes none (only the gateway records customers)'
);
select throws_ok(
    $$insert into internal.stripe_events (id, event_type) values ('evt_forged', 'invoice.paid')$$,
    '42501', null, 'nor events'
);
select tests.reset_actor();

-- the webhook's role: claim, apply, nothing else

set local session authorization quarry_webhook;
select is(
    internal.claim_stripe_event('evt_1', 'customer.subscription.created', 'cus_a', 'sub_a1', now()), 'new',
    'a first delivery is new'
);
select is(
    internal.apply_stripe_subscription('evt_1', 'cus_a', pg_temp.sub('sub_a1', 'cus_a', 'active', 'price_pro')),
    'applied', 'the webhook applies A''s Pro subscription'
);
select is(
    internal.claim_stripe_event('evt_1', 'customer.subscription.created', 'cus_a', 'sub_a1', now()), 'duplicate',
    'a redelivery is a duplicate'
);
select is(
    internal.claim_stripe_event('evt_2', 'charge.refunded', 'cus_a', 'ch_1', now()), 'ignored',
    'a type we do not handle is acknowledged and ignored'
);
select throws_ok($$select * from app.subscriptions$$, '42501', null, 'the webhook''s role reads no table');
select throws_ok(
    $$update app.subscriptions set plan_id = 'enterprise'$$, '42501', null, 'nor writes one directly'
);
select throws_ok(
    $$select internal.record_billing_customer(tests.user_id('c'), 'cus_c')$$, '42501', null, 'nor binds customers'
);
select throws_ok(
    $$select internal.set_stripe_prices('{"price_x": "enterprise"}')$$, '42501', null, 'nor changes prices'
);
select throws_ok($$set role authenticated$$, '42501', null, 'nor becomes a tenant');
reset session authorization;

select is(pg_temp.plan_of('a'), 'pro', 'A is on Pro');
select results_eq(
    $$select raw_app_meta_data ->> 'plan', raw_app_meta_data ->> 'subscription_status', raw_user_meta_data
      from auth.users where id = tests.user_id('a')$$,
    $$values ('pro', 'active', '{}'::jsonb)$$,
    'plan and status are mirrored into app_metadata, never user_metadata'
);
select results_eq(
    $$select outcome, tenant_id from internal.stripe_events where id in ('evt_1', 'evt_2') order by id$$,
    $$values ('applied', tests.user_id('a')), ('ignored', null)$$,
    'the events are recorded with their outcome'
);

select tests.act_as(tests.user_id('a'));
select is(
    (tests.refusal('select internal.begin_checkout()') ->> 'code'), 'subscription-exists',
    'a second checkout is refused in SQL while the subscription is live'
);
select tests.reset_actor();

-- what the apply function refuses or ignores

select is(
    internal.claim_stripe_event('evt_3', 'checkout.session.completed', 'cus_unknown', 'cs_1', now()), 'new',
    'an event for a customer that is not ours is claimed'
);
select is(
    internal.apply_stripe_subscription('evt_3', 'cus_unknown', pg_temp.sub('sub_u', 'cus_unknown', 'active', 'price_ent')),
    'failed', 'a customer that is not ours is refused'
);
select is(
    internal.apply_stripe_subscription(
        null, 'cus_b', pg_temp.sub('sub_b1', 'cus_b', 'active', 'price_ent', tests.user_id('a'))
    ),
    'failed', 'metadata naming another tenant than the customer''s is refused'
);
select is_empty('select * from app.subscriptions where tenant_id = tests.user_id(''b'')', 'B got nothing from it');
select is(
    internal.apply_stripe_subscription(null, 'cus_a', pg_temp.sub('sub_a2', 'cus_a', 'active', 'price_ent')),
    'failed', 'a second live subscription is refused'
);
select is(
    internal.apply_stripe_subscription(null, 'cus_a', pg_temp.sub('sub_a0', 'cus_a', 'canceled', 'price_ent')),
    'stale', 'an older subscription''s cancellation leaves the live one alone'
);
select results_eq(
    $$select stripe_subscription_id, plan_id, status::text from app.subscriptions where tenant_id = tests.user_id('a')$$,
    $$values ('sub_a1', 'pro', 'active')$$,
    'A is still on its Pro subscription'
);
select results_eq(
    $$select error from ops.stripe_event_failures where id = 'evt_3'$$,
    $$values ('The customer is not one of ours (app.billing_customers).')$$,
    'a refused event is visible with its error'
);

-- past due, cancellation at the period's end, cancellation

select internal.apply_stripe_subscription(null, 'cus_a', pg_temp.sub('sub_a1', 'cus_a', 'past_due', 'price_ent'));
select is(pg_temp.plan_of('a'), 'enterprise', 'past_due keeps Enterprise during the grace period');
select tests.set_clock('2026-03-22 12:00:01+00');
select is(pg_temp.plan_of('a'), 'free', '... and falls to Free after it');
select tests.set_clock('2026-03-15 12:00:00+00');
select internal.apply_stripe_subscription(
    null, 'cus_a', pg_temp.sub('sub_a1', 'cus_a', 'active', 'price_ent', cancel_at_period_end => true)
);
select is(pg_temp.plan_of('a'), 'enterprise', 'cancelled at the period''s end keeps the plan until then');
select tests.set_clock('2026-04-15 12:00:00+00');
select is(pg_temp.plan_of('a'), 'free', '... and not after');
select tests.set_clock('2026-03-15 12:00:00+00');
select internal.apply_stripe_subscription(null, 'cus_a', pg_temp.sub('sub_a1', 'cus_a', 'canceled', 'price_ent'));
select is(pg_temp.plan_of('a'), 'free', 'canceled is Free');
select is(
    internal.apply_stripe_subscription(null, 'cus_a', pg_temp.sub('sub_a1', 'cus_a', 'active', 'price_ent')),
    'stale', 'a late update after the deletion leaves it canceled'
);
select is(
    (select raw_app_meta_data ->> 'plan' from auth.users where id = tests.user_id('a')), 'free',
    'app_metadata follows the downgrade'
);

-- the price map

select internal.apply_stripe_subscription(null, 'cus_b', pg_temp.sub('sub_b2', 'cus_b', 'active', 'price_new'));
select is(pg_temp.plan_of('b'), 'free', 'an unknown price gives Free');
select results_eq(
    'select stripe_subscription_id, stripe_price_id from ops.unknown_stripe_prices',
    $$values ('sub_b2', 'price_new')$$,
    'and shows up in ops.unknown_stripe_prices'
);
select is(internal.set_stripe_prices('{"price_new": "enterprise"}'), 1, 'the operator adds the price');
select is(pg_temp.plan_of('b'), 'enterprise', 'which applies to the subscription at once');
select is_empty('select * from ops.unknown_stripe_prices', 'and no price is unknown any more');

-- the statuses that are Free

select internal.apply_stripe_subscription(null, 'cus_b', pg_temp.sub('sub_b2', 'cus_b', 'unpaid', 'price_new'));
select is(pg_temp.plan_of('b'), 'free', 'unpaid is Free');
select internal.apply_stripe_subscription(null, 'cus_b', pg_temp.sub('sub_b2', 'cus_b', 'paused', 'price_new'));
select is(pg_temp.plan_of('b'), 'free', 'paused is Free');
select internal.apply_stripe_subscription(null, 'cus_b', pg_temp.sub('sub_b2', 'cus_b', 'trialing', 'price_new'));
select is(pg_temp.plan_of('b'), 'enterprise', 'trialing is paid');

select * from finish();
rollback;
