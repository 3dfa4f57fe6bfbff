-- Plans, subscriptions, quotas and rate limits: readable by their owner,
-- writable by nobody but the quota functions and the service role; every
-- limit refuses with the status PostgREST and the gateway answer with.
begin;
set local search_path = tests, public;
select plan(80);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values
('a', tests.create_user('a@example.com')),
('b', tests.create_user('b@example.com')),
('c', tests.create_user('c@example.com'));
create function pg_temp.user_id(user_name text) returns uuid language sql as $$
    select id from ids where name = user_name
$$;
grant execute on function pg_temp.user_id(text) to public;
-- Moves the quota clock for whoever is acting (tests only).
create function pg_temp.set_clock(at_time timestamptz) returns void language sql security definer as $$
    update internal.billing_settings set clock_override = at_time
$$;
grant execute on function pg_temp.set_clock(timestamptz) to public;
-- How many of `requests` calls to the rate limit, one statement each, get through.
create function pg_temp.allowed_of(tenant uuid, requests integer) returns integer language plpgsql as $$
declare
    allowed_count integer := 0;
begin
    for i in 1..requests loop
        allowed_count := allowed_count + (select allowed::integer from internal.hit_rate_limit(tenant));
    end loop;
    return allowed_count;
end
$$;
grant execute on function pg_temp.allowed_of(uuid, integer) to public;
update internal.billing_settings set clock_override = '2026-03-15 12:00:00+00';

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

select tests.act_as(pg_temp.user_id('a'));
select is(app.effective_plan(auth.uid()), 'free', 'no subscription means Free');
select is((select plan from api.me()), 'free', 'api.me reports the effective plan');
select is((select count(*) from api.plans), 3::bigint, 'users read the plans');
select throws_ok(
    $$insert into app.subscriptions (tenant_id, plan_id, status) values (auth.uid(), 'enterprise', 'active')$$,
    '42501', null, 'a user cannot give itself a subscription'
);
select throws_ok($$update app.plans set documents_per_month = null$$, '42501', null, 'nor change a plan');
select throws_ok(
    $$insert into app.usage_counters (tenant_id, quota, used) values (auth.uid(), 'storage_bytes', 0)$$,
    '42501', null, 'nor insert a counter'
);
select throws_ok($$update app.usage_counters set used = 0$$, '42501', null, 'nor reset a counter');
select throws_ok($$delete from app.usage_counters$$, '42501', null, 'nor delete a counter');
select throws_ok(
    $$update app.rate_limit_windows set requests = 0$$, '42501', null, 'nor reset its rate limit'
);
select throws_ok(
    $$update internal.billing_settings set past_due_grace = interval '100 years'$$,
    '42501', null, 'nor lengthen the grace period'
);
select throws_ok(
    $$select internal.consume_quota(auth.uid(), 'storage_bytes', -1000000, null)$$,
    '42501', null, 'nor call the counting functions'
);
select throws_ok(
    $$select * from internal.hit_rate_limit(auth.uid())$$, '42501', null, 'nor the gateway''s rate limit'
);
select throws_ok(
    $$select * from internal.reconcile_storage()$$, '42501', null, 'nor the ops reconciliation'
);

-- subscriptions: written by the service role, read by their owner only

select tests.act_as_service_role();
select lives_ok(
    $$insert into app.subscriptions (tenant_id, plan_id, status, stripe_customer_id, stripe_subscription_id)
      values (pg_temp.user_id('a'), 'pro', 'active', 'cus_a', 'sub_a')$$,
    'the service role writes a subscription'
);
select tests.act_as(pg_temp.user_id('a'));
select results_eq(
    'select plan_id, status::text from api.subscription', $$values ('pro', 'active')$$,
    'A reads its subscription'
);
select is(app.effective_plan(auth.uid()), 'pro', 'an active Pro subscription lifts the Free limits at once');
select throws_ok(
    $$update app.subscriptions set plan_id = 'enterprise'$$, '42501', null, 'A cannot upgrade itself'
);
select tests.act_as(pg_temp.user_id('b'));
select is_empty('select * from api.subscription', 'B sees no subscription of A''s');
select is(app.effective_plan(pg_temp.user_id('a')), 'free', 'B cannot learn A''s plan');

-- status rules (the grace period runs on the quota clock)

select tests.reset_actor();
update app.subscriptions set status = 'canceled' where tenant_id = pg_temp.user_id('a');
select is(app.effective_plan(pg_temp.user_id('a')), 'free', 'canceled falls back to Free');
update app.subscriptions set status = 'trialing' where tenant_id = pg_temp.user_id('a');
select is(app.effective_plan(pg_temp.user_id('a')), 'pro', 'trialing gets the plan');
update app.subscriptions set status = 'past_due' where tenant_id = pg_temp.user_id('a');
select is(
    (select past_due_since from app.subscriptions where tenant_id = pg_temp.user_id('a')),
    '2026-03-15 12:00:00+00'::timestamptz,
    'falling past due starts the grace period'
);
select pg_temp.set_clock('2026-03-22 11:59:59+00');
select is(app.effective_plan(pg_temp.user_id('a')), 'pro', 'past_due keeps Pro during the grace period');
update app.subscriptions set status = 'past_due', current_period_end = now() where tenant_id = pg_temp.user_id('a');
select is(
    (select past_due_since from app.subscriptions where tenant_id = pg_temp.user_id('a')),
    '2026-03-15 12:00:00+00'::timestamptz,
    'another past_due update does not restart the grace period'
);
insert into app.subscriptions (tenant_id, plan_id, status, past_due_since)
values (pg_temp.user_id('a'), 'pro', 'past_due', '2026-03-22 11:59:59+00')
on conflict (tenant_id) do update set status = excluded.status, past_due_since = excluded.past_due_since;
select is(
    (select past_due_since from app.subscriptions where tenant_id = pg_temp.user_id('a')),
    '2026-03-15 12:00:00+00'::timestamptz,
    'nor does a replayed webhook upsert that carries a fresh past_due_since'
);
select pg_temp.set_clock('2026-03-22 12:00:00+00');
select is(app.effective_plan(pg_temp.user_id('a')), 'free', '... and falls to Free when it ends (7 days)');
update internal.billing_settings set past_due_grace = interval '10 days';
select is(app.effective_plan(pg_temp.user_id('a')), 'pro', 'the grace period is configurable');
update internal.billing_settings set past_due_grace = interval '7 days';
update app.subscriptions set status = 'unpaid' where tenant_id = pg_temp.user_id('a');
select is(app.effective_plan(pg_temp.user_id('a')), 'free', 'unpaid falls back to Free');
update app.subscriptions set status = 'incomplete_expired' where tenant_id = pg_temp.user_id('a');
select is(app.effective_plan(pg_temp.user_id('a')), 'free', 'incomplete_expired falls back to Free');
update app.subscriptions set status = 'active' where tenant_id = pg_temp.user_id('a');
select pg_temp.set_clock('2026-03-15 12:00:00+00');

-- uploads: format, monthly count, storage (C is on Free)

select tests.act_as(pg_temp.user_id('c'));
create temporary table refused on commit drop as
select tests.refusal($$
    insert into app.documents (title, mime_type)
    values ('deck.docx', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document')
$$) as r;
select is((select r -> 'status' from refused), '415'::jsonb, 'a format outside the plan is refused with 415');
select is(
    (select r #> '{details,plans_allowing}' from refused), '["pro", "enterprise"]'::jsonb,
    '... naming the plans that allow it'
);
select lives_ok(
    $$insert into app.documents (title, mime_type, size_bytes)
      select 'note ' || n, 'text/plain', 1000 from generate_series(1, 50) as n$$,
    'Free accepts 50 documents in a month'
);
truncate refused;
insert into refused select tests.refusal($$insert into app.documents (title, mime_type) values ('51', 'text/plain')$$);
select is((select r -> 'status' from refused), '402'::jsonb, 'the 51st is refused with 402');
select is(
    (select r -> 'details' from refused),
    '{"limit": "documents_per_month", "used": 50, "limit_value": 50, "plan": "free",
      "resets_at": "2026-04-01T00:00:00Z"}'::jsonb,
    '... naming the limit, the usage, the limit value and when it resets'
);
select is((select r ->> 'code' from refused), 'quota-exceeded', '... with a stable code');
select is((select count(*) from app.documents), 50::bigint, 'nothing of the refused insert was written');
select is(
    tests.refusal('select internal.precheck_upload(0)') -> 'details' ->> 'limit', 'documents_per_month',
    'the upload precheck refuses the same way before a file is sent'
);
select results_eq(
    $$select limit_name, used, limit_value, resets_at from api.usage
      where limit_name in ('documents_per_month', 'storage_bytes') order by limit_name$$,
    $$values ('documents_per_month', 50::bigint, 50::bigint, '2026-04-01 00:00:00+00'::timestamptz),
             ('storage_bytes', 50000, 500000000, null)$$,
    'api.usage shows used / limit / resets-at'
);
delete from app.documents where title in ('note 1', 'note 2');
select results_eq(
    $$select used from api.usage where limit_name in ('documents_per_month', 'storage_bytes') order by limit_name$$,
    $$values (50::bigint), (48000)$$,
    'deleting frees storage but not the monthly count'
);
select isnt(
    tests.refusal($$insert into app.documents (title, mime_type) values ('again', 'text/plain')$$),
    null, '... so the month stays used up'
);
select pg_temp.set_clock('2026-04-01 00:00:00+00');
select lives_ok(
    $$insert into app.documents (title, mime_type, size_bytes) values ('april', 'text/plain', 2000)$$,
    'the monthly count resets at the UTC month boundary'
);
select is(
    (select used from api.usage where limit_name = 'documents_per_month'), 1::bigint, '... and counts afresh'
);
select lives_ok('select internal.precheck_upload(1000)', 'the precheck lets a fitting upload through...');
select is(
    (select used from api.usage where limit_name = 'documents_per_month'), 1::bigint, '... and counts nothing'
);
truncate refused;
insert into refused select tests.refusal($$
    insert into app.documents (title, mime_type, size_bytes) values ('big', 'application/pdf', 499950001)
$$);
select is(
    (select r -> 'status' || (r -> 'details' -> 'limit') || (r -> 'details' -> 'used') from refused),
    '[402, "storage_bytes", 50000]'::jsonb,
    'storage over the limit is refused with 402 and the usage'
);
select lives_ok(
    $$insert into app.documents (title, mime_type, size_bytes) values ('fits', 'application/pdf', 499950000)$$,
    'storage up to the limit exactly is accepted'
);
select throws_ok(
    $$update app.documents set size_bytes = 1 where title = 'fits'$$,
    '42501', null, 'a user cannot shrink a document''s size to free storage'
);
select tests.reset_actor();
select throws_ok(
    $$update app.documents set size_bytes = size_bytes + 1 where title = 'april'$$,
    'PGRST', null, 'growing a document past the storage limit is refused (any role)'
);
select tests.act_as(pg_temp.user_id('b'));
select throws_ok(
    $$insert into app.documents (tenant_id, title, mime_type, size_bytes)
      values (pg_temp.user_id('c'), 'forged', 'text/plain', 1)$$,
    '42501', 'new row violates row-level security policy for table "documents"',
    'a row claiming another tenant is refused as RLS would, not with that tenant''s quota'
);
select tests.act_as(pg_temp.user_id('c'));

-- storage reconciliation (ops) and the floor at zero

select tests.reset_actor();
select internal.release_quota(pg_temp.user_id('c'), 'storage_bytes', 10000000000);
select is(
    (select used from app.usage_counters where tenant_id = pg_temp.user_id('c') and quota = 'storage_bytes'),
    0::bigint, 'releasing more than was reserved stops at zero'
);
select results_eq(
    'select tenant_id, counted, actual from internal.reconcile_storage()',
    $$select pg_temp.user_id('c'), 0::bigint, 500000000::bigint$$,
    'reconcile_storage reports the drift...'
);
select is_empty('select * from internal.reconcile_storage()', '... and repairs it');

-- queries: 100 a day on Free, through the query-log function

select tests.act_as(pg_temp.user_id('c'));
select lives_ok($$select app.record_query('q' || n, 'hybrid') from generate_series(1, 100) as n$$, '100 queries a day');
truncate refused;
insert into refused select tests.refusal($$select app.record_query('one more', 'hybrid')$$);
select is(
    (select r -> 'status' || (r -> 'details') from refused),
    '[402, {"limit": "queries_per_day", "used": 100, "limit_value": 100, "plan": "free",
            "resets_at": "2026-04-02T00:00:00Z"}]'::jsonb,
    'the 101st is refused until the next UTC day'
);
select pg_temp.set_clock('2026-04-02 00:00:00+00');
select lives_ok($$select app.record_query('next day', 'hybrid')$$, 'the daily count resets at UTC midnight');

-- Drive folders (count) and exports (one per interval)

select lives_ok(
    $$insert into app.drive_folders (google_folder_id, name) values ('f1', 'Specs')$$, 'Free connects one folder'
);
select is(
    (select r -> 'details' ->> 'limit' from (select tests.refusal($$
        insert into app.drive_folders (google_folder_id, name) values ('f2', 'More')
    $$) as r) as x),
    'drive_folders', 'a second folder is refused'
);
delete from app.drive_folders;
select lives_ok(
    $$insert into app.drive_folders (google_folder_id, name) values ('f2', 'More')$$,
    'removing a folder frees its place'
);
select lives_ok($$insert into app.export_requests default values$$, 'Free requests an export');
truncate refused;
insert into refused select tests.refusal($$insert into app.export_requests default values$$);
select is(
    (select r -> 'status' || (r -> 'details') from refused),
    '[402, {"limit": "exports", "used": 1, "limit_value": 1, "plan": "free",
            "resets_at": "2026-05-02T00:00:00Z"}]'::jsonb,
    'a second export within the month is refused, saying when the next is allowed'
);
select pg_temp.set_clock('2026-05-02 00:00:00+00');
select lives_ok($$insert into app.export_requests default values$$, 'one month later it is allowed');

-- isolation and anon

select tests.act_as(pg_temp.user_id('b'));
select is_empty(
    $$select * from app.usage_counters where tenant_id <> auth.uid()$$, 'B reads no counter of another tenant'
);
select is(
    (select used from api.usage where limit_name = 'documents_per_month'), 0::bigint,
    'B''s usage is its own'
);
select is_empty(
    $$select * from app.drive_folders where tenant_id <> auth.uid()$$, 'B reads no Drive folder of another tenant'
);
select is_empty(
    $$select * from app.export_requests where tenant_id <> auth.uid()$$, 'B reads no export request of another tenant'
);
select throws_ok(
    $$insert into app.drive_folders (tenant_id, google_folder_id, name) values (pg_temp.user_id('c'), 'x', 'Forged')$$,
    '42501', null, 'B cannot connect a folder for C'
);
select throws_ok(
    $$insert into app.export_requests (tenant_id) values (pg_temp.user_id('c'))$$,
    '42501', null, 'B cannot request C''s export'
);
select tests.act_as_service_role();
select isnt_empty(
    $$select * from app.usage_counters where tenant_id = pg_temp.user_id('c')$$, 'the service role reads every counter'
);
select tests.act_as_anon();
select throws_ok('select * from api.usage', '42501', null, 'anon cannot read usage');
select throws_ok('select * from api.plans', '42501', null, 'anon cannot read plans');
select throws_ok('select * from api.subscription', '42501', null, 'anon cannot read subscriptions');

-- the gateway's rate limit: one statement per request, per caller and hour

select tests.reset_actor();
set local role quarry_gateway;
select results_eq(
    $$select request_limit, remaining, resets_at, allowed from internal.hit_rate_limit(pg_temp.user_id('c'))$$,
    $$values (50, 49, '2026-05-02 01:00:00+00'::timestamptz, true)$$,
    'the first request of the hour leaves 49 of 50 on Free'
);
select is(
    pg_temp.allowed_of(pg_temp.user_id('c'), 59),
    49, 'exactly 50 requests an hour get through'
);
select results_eq(
    $$select remaining, allowed from internal.hit_rate_limit(pg_temp.user_id('c'))$$,
    $$values (0, false)$$, 'the next is refused'
);
select is(
    (select allowed from internal.hit_rate_limit(pg_temp.user_id('c'), pg_temp.user_id('b'))),
    false, 'an API key draws on the account''s allowance: minting keys cannot multiply it'
);
reset role;
select is(
    (select requests from app.rate_limit_windows where subject_id = pg_temp.user_id('c')), 51,
    'refused requests do not run the counter past the limit'
);
select is(
    (select count(*) from app.rate_limit_windows where subject_id = pg_temp.user_id('b')), 0::bigint,
    'a refused key request is not counted on the key'
);
select pg_temp.set_clock('2026-05-02 01:00:00+00');
set local role quarry_gateway;
select is(
    (select allowed from internal.hit_rate_limit(pg_temp.user_id('c'))), true, 'a new hour, a new window'
);
reset role;

-- the plan sets the ingest priority

select tests.act_as(pg_temp.user_id('a'));
insert into app.documents (title, mime_type) values ('priority', 'application/pdf');
select tests.reset_actor();
select is(
    (select j.priority from procrastinate.procrastinate_jobs as j
     inner join app.documents as d on j.lock = 'document:' || d.id::text where d.title = 'priority'),
    10, 'a Pro document is ingested at Pro priority'
);

select * from finish();
rollback;
