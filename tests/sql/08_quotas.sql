-- Quotas: one counter per tenant and limit, changed only by the quota
-- functions; uploads (format, monthly count, storage), storage
-- reconciliation and daily queries refuse with the status PostgREST and the
-- gateway answer with.
begin;
set local search_path = tests, public;
select plan(35);

select tests.create_users('a', 'b', 'c');
select tests.set_clock('2026-03-15 12:00:00+00');

-- users read, never write

select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$insert into app.usage_counters (tenant_id, quota, used) values (auth.uid(), 'storage_bytes', 0)$$,
    '42501', null, 'nor insert a counter'
);
select throws_ok($$update app.usage_counters set used = 0$$, '42501', null, 'nor reset a counter');
select throws_ok($$delete from app.usage_counters$$, '42501', null, 'nor delete a counter');
select throws_ok(
    $$select internal.consume_quota(auth.uid(), 'storage_bytes', -1000000, null)$$,
    '42501', null, 'nor call the counting functions'
);
select throws_ok(
    $$select * from internal.reconcile_storage()$$, '42501', null, 'nor the ops reconciliation'
);


-- uploads: format, monthly count, storage (C is on Free)

select tests.act_as(tests.user_id('c'));
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
select tests.set_clock('2026-04-01 00:00:00+00');
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
select tests.act_as(tests.user_id('b'));
select throws_ok(
    $$insert into app.documents (tenant_id, title, mime_type, size_bytes)
      values (tests.user_id('c'), 'forged', 'text/plain', 1)$$,
    '42501', 'new row violates row-level security policy for table "documents"',
    'a row claiming another tenant is refused as RLS would, not with that tenant''s quota'
);
select tests.act_as(tests.user_id('c'));

-- storage reconciliation (ops) and the floor at zero

select tests.reset_actor();
select internal.release_quota(tests.user_id('c'), 'storage_bytes', 10000000000);
select is(
    (select used from app.usage_counters where tenant_id = tests.user_id('c') and quota = 'storage_bytes'),
    0::bigint, 'releasing more than was reserved stops at zero'
);
select results_eq(
    'select tenant_id, counted, actual from internal.reconcile_storage()',
    $$select tests.user_id('c'), 0::bigint, 500000000::bigint$$,
    'reconcile_storage reports the drift...'
);
select is_empty('select * from internal.reconcile_storage()', '... and repairs it');

-- queries: 100 a day on Free, through the query-log function

select tests.act_as(tests.user_id('c'));
select lives_ok($$select app.record_query('q' || n, 'hybrid') from generate_series(1, 100) as n$$, '100 queries a day');
truncate refused;
insert into refused select tests.refusal($$select app.record_query('one more', 'hybrid')$$);
select is(
    (select r -> 'status' || (r -> 'details') from refused),
    '[402, {"limit": "queries_per_day", "used": 100, "limit_value": 100, "plan": "free",
            "resets_at": "2026-04-02T00:00:00Z"}]'::jsonb,
    'the 101st is refused until the next UTC day'
);
select tests.set_clock('2026-04-02 00:00:00+00');
select lives_ok($$select app.record_query('next day', 'hybrid')$$, 'the daily count resets at UTC midnight');

-- isolation and anon

select tests.act_as(tests.user_id('b'));
select is_empty(
    $$select * from app.usage_counters where tenant_id <> auth.uid()$$, 'B reads no counter of another tenant'
);
select is(
    (select used from api.usage where limit_name = 'documents_per_month'), 0::bigint,
    'B''s usage is its own'
);
select tests.act_as_service_role();
select isnt_empty(
    $$select * from app.usage_counters where tenant_id = tests.user_id('c')$$, 'the service role reads every counter'
);
select tests.act_as_anon();
select throws_ok('select * from api.usage', '42501', null, 'anon cannot read usage');

select * from finish();
rollback;
