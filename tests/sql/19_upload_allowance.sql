-- Upload limits before expensive work: the storage an upload may still use
-- and the plan's formats, asked before the file is read and stored; both
-- count nothing, and the insert's triggers still refuse alike.
begin;
set local search_path = tests, public;
select plan(12);

select tests.create_users('free', 'pro');
select tests.set_clock('2026-03-15 12:00:00+00');
insert into app.subscriptions (tenant_id, plan_id, status) values (tests.user_id('pro'), 'pro', 'active');

-- a Free user with 400 MB of its 500 MB in use

select internal.consume_quota(tests.user_id('free'), 'storage_bytes', 400000000, null);
select tests.act_as(tests.user_id('free'));
select is(internal.upload_allowance(0), 100000000::bigint, 'the allowance is the storage the plan has left');
select is(
    (tests.refusal('select internal.upload_allowance(100000001)') -> 'status'), '402'::jsonb,
    'a declared size over the allowance is refused with 402'
);
select lives_ok('select internal.precheck_format(''application/pdf'')', 'a format in the plan passes');
select is(
    tests.refusal($$select internal.precheck_format(
        'application/vnd.openxmlformats-officedocument.wordprocessingml.document')$$) #>> '{status}',
    '415', 'a format outside the plan is refused with 415...'
);
select is(
    tests.refusal('select internal.precheck_format(null)') #>> '{code}',
    'format-not-in-plan', '... and so is a file of no known type'
);
select is(
    tests.refusal($$insert into app.documents (title, mime_type) values ('x.docx',
        'application/vnd.openxmlformats-officedocument.wordprocessingml.document')$$) #>> '{code}',
    'format-not-in-plan', 'the insert still refuses it the same way'
);
select tests.reset_actor();
select is(
    (select used from app.usage_counters where tenant_id = tests.user_id('free') and quota = 'storage_bytes'),
    400000000::bigint, 'asking counted nothing'
);

-- the month used up

select internal.consume_quota(tests.user_id('free'), 'documents_per_month', 50, null);
select tests.act_as(tests.user_id('free'));
select is(
    tests.refusal('select internal.upload_allowance(0)') #>> '{details,limit}',
    'documents_per_month', 'with the month used up there is no allowance at all'
);

-- a Pro user takes every format

select tests.act_as(tests.user_id('pro'));
select lives_ok(
    $$select internal.precheck_format('application/vnd.openxmlformats-officedocument.wordprocessingml.document')$$,
    'Pro takes DOCX'
);
select cmp_ok(internal.upload_allowance(0), '>', 500000000::bigint, 'Pro has Pro''s storage');

-- anon

select tests.act_as_anon();
select throws_ok('select internal.upload_allowance(0)', '42501', null, 'anon has no allowance');
select throws_ok('select internal.precheck_format(''text/plain'')', '42501', null, 'nor a format check');

select * from finish();
rollback;
