-- Plans and subscriptions: the limits as data, readable by everyone signed in;
-- subscriptions written by the service role only and read by their owner;
-- effective_plan()'s status rules and grace period; the plan sets the ingest
-- priority.
begin;
set local search_path = tests, public;
select plan(26);

select tests.create_users('a', 'b', 'c');
select tests.set_clock('2026-03-15 12:00:00+00');

-- reference data

select results_eq(
    $$select id, documents_per_month, storage_bytes, drive_folders, queries_per_day, requests_per_hour,
        export_interval, formats is null, queue_priority from app.plans order by tier$$,
    $$values
    ('free', 50, 500000000::bigint, 1, 100, 50, interval '1 month', false, 0),
    ('pro', 1000, 10000000000, 10, null, 500, interval '7 days', true, 10),
    ('enterprise', null, 100000000000, null, null, 5000, null, true, 20)$$,
    'the plans carry every limit of DESIGN §6'
);


-- users read, never write

select tests.act_as(tests.user_id('a'));
select is(app.effective_plan(auth.uid()), 'free', 'no subscription means Free');
select is((select plan from api.me()), 'free', 'api.me reports the effective plan');
select is((select count(*) from api.plans), 3::bigint, 'users read the plans');
select throws_ok(
    $$insert into app.subscriptions (tenant_id, plan_id, status) values (auth.uid(), 'enterprise', 'active')$$,
    '42501', null, 'a user cannot give itself a subscription'
);
select throws_ok($$update app.plans set documents_per_month = null$$, '42501', null, 'nor change a plan');
select throws_ok(
    $$update internal.billing_settings set past_due_grace = interval '100 years'$$,
    '42501', null, 'nor lengthen the grace period'
);

-- subscriptions: written by the service role, read by their owner only

select tests.act_as_service_role();
select lives_ok(
    $$insert into app.subscriptions (tenant_id, plan_id, status, stripe_customer_id, stripe_subscription_id)
      values (tests.user_id('a'), 'pro', 'active', 'cus_a', 'sub_a')$$,
    'the service role writes a subscription'
);
select tests.act_as(tests.user_id('a'));
select results_eq(
    'select plan_id, status::text from api.subscription', $$values ('pro', 'active')$$,
    'A reads its subscription'
);
select is(app.effective_plan(auth.uid()), 'pro', 'an active Pro subscription lifts the Free limits at once');
select throws_ok(
    $$update app.subscriptions set plan_id = 'enterprise'$$, '42501', null, 'A cannot upgrade itself'
);
select tests.act_as(tests.user_id('b'));
select is_empty('select * from api.subscription', 'B sees no subscription of A''s');
select is(app.effective_plan(tests.user_id('a')), 'free', 'B cannot learn A''s plan');

-- status rules (the grace period runs on the quota clock)

select tests.reset_actor();
update app.subscriptions set status = 'canceled' where tenant_id = tests.user_id('a');
select is(app.effective_plan(tests.user_id('a')), 'free', 'canceled falls back to Free');
update app.subscriptions set status = 'trialing' where tenant_id = tests.user_id('a');
select is(app.effective_plan(tests.user_id('a')), 'pro', 'trialing gets the plan');
update app.subscriptions set status = 'past_due' where tenant_id = tests.user_id('a');
select is(
    (select past_due_since from app.subscriptions where tenant_id = tests.user_id('a')),
    '2026-03-15 12:00:00+00'::timestamptz,
    'falling past due starts the grace period'
);
select tests.set_clock('2026-03-22 11:59:59+00');
select is(app.effective_plan(tests.user_id('a')), 'pro', 'past_due keeps Pro during the grace period');
update app.subscriptions set status = 'past_due', current_period_end = now() where tenant_id = tests.user_id('a');
select is(
    (select past_due_since from app.subscriptions where tenant_id = tests.user_id('a')),
    '2026-03-15 12:00:00+00'::timestamptz,
    'another past_due update does not restart the grace period'
);
insert into app.subscriptions (tenant_id, plan_id, status, past_due_since)
values (tests.user_id('a'), 'pro', 'past_due', '2026-03-22 11:59:59+00')
on conflict (tenant_id) do update set status = excluded.status, past_due_since = excluded.past_due_since;
select is(
    (select past_due_since from app.subscriptions where tenant_id = tests.user_id('a')),
    '2026-03-15 12:00:00+00'::timestamptz,
    'nor does a replayed webhook upsert that carries a fresh past_due_since'
);
select tests.set_clock('2026-03-22 12:00:00+00');
select is(app.effective_plan(tests.user_id('a')), 'free', '... and falls to Free when it ends (7 days)');
update internal.billing_settings set past_due_grace = interval '10 days';
select is(app.effective_plan(tests.user_id('a')), 'pro', 'the grace period is configurable');
update internal.billing_settings set past_due_grace = interval '7 days';
update app.subscriptions set status = 'unpaid' where tenant_id = tests.user_id('a');
select is(app.effective_plan(tests.user_id('a')), 'free', 'unpaid falls back to Free');
update app.subscriptions set status = 'incomplete_expired' where tenant_id = tests.user_id('a');
select is(app.effective_plan(tests.user_id('a')), 'free', 'incomplete_expired falls back to Free');
update app.subscriptions set status = 'active' where tenant_id = tests.user_id('a');
select tests.set_clock('2026-03-15 12:00:00+00');

-- the plan sets the ingest priority

select tests.act_as(tests.user_id('a'));
insert into app.documents (title, mime_type) values ('priority', 'application/pdf');
select internal.queue_document_ingest((select d.id from app.documents as d where d.title = 'priority'));
select tests.reset_actor();
select is(
    (select j.priority from procrastinate.procrastinate_jobs as j
     inner join app.documents as d on j.lock = 'document:' || d.tenant_id::text || ':' || d.id::text where d.title = 'priority'),
    10, 'a Pro document is ingested at Pro priority'
);

-- anon

select tests.act_as_anon();
select throws_ok('select * from api.plans', '42501', null, 'anon cannot read plans');
select throws_ok('select * from api.subscription', '42501', null, 'anon cannot read subscriptions');

select * from finish();
rollback;
