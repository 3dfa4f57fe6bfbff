-- Exports: a request is an insert, whose build job internal.queue_export
-- defers in the same transaction (the plan's job pool and priority; a request
-- without its job is queued by the expiry job's sweep), one queued or running
-- per tenant, status and expiry move only through the functions, a failure
-- gives the plan's allowance back; each with allowed and denied callers.
begin;
set local search_path = tests, public;
select plan(43);

select tests.create_users('a', 'b', 'free');
insert into app.subscriptions (tenant_id, plan_id, status)
select tests.user_id(n), 'enterprise', 'active' from (values ('a'), ('b')) as v (n);
create temporary table e (name text primary key, id uuid) on commit drop;
grant select, insert, update on e to public;
create function pg_temp.export_id(item text) returns uuid language sql stable as $$ select id from e where name = item $$;
grant execute on function pg_temp.export_id(text) to public;

-- requesting

select tests.act_as(tests.user_id('a'));
insert into e select 'a1', id from api.request_export();
select is(
    (select status::text from api.exports where id = pg_temp.export_id('a1')), 'queued', 'A requests an export: queued'
);
select is(
    (select r -> 'details' ->> 'export_id' from (select tests.refusal('select * from api.request_export()') as r) as x),
    pg_temp.export_id('a1')::text,
    'a second request while one is queued is refused, naming the one in progress'
);
select is(
    (select r -> 'status' from (select tests.refusal('insert into app.export_requests default values') as r) as x),
    '409'::jsonb,
    '... through the table too (409)'
);
select throws_ok(
    format('update app.export_requests set status = %L where id = %L', 'ready', pg_temp.export_id('a1')),
    '42501', null, 'A cannot set its export''s status'
);
select throws_ok(
    $$insert into app.export_requests (tenant_id) values (tests.user_id('b'))$$, '42501', null,
    'A cannot request B''s export'
);

select tests.reset_actor();
select results_eq(
    $$select task_name::text, queue_name::text, priority, args ->> 'export_id', lock
      from procrastinate.procrastinate_jobs
      where args ->> 'export_id' = pg_temp.export_id('a1')::text$$,
    $$select 'exports:build', 'enterprise.exports', 20, pg_temp.export_id('a1')::text,
        'export:' || tests.user_id('a')::text$$,
    'the build job is deferred with the request, one per tenant at a time (its lock), in Enterprise''s own pool'
);
select is_empty(
    $$select from pg_trigger where tgrelid = 'app.export_requests'::regclass and not tgisinternal
      and tgfoid = 'internal.defer_job(text, uuid, jsonb, text, text)'::regprocedure$$,
    'no trigger defers it (under Citus a trigger runs where the queue is not)'
);
select is(
    (select count(*)::integer from app.audit_log where tenant_id = tests.user_id('a') and action = 'export.requested'),
    1, 'the request is in the audit log'
);

-- queueing: the caller's own queued export only

select tests.act_as(tests.user_id('b'));
select is(
    (
        select r -> 'status' from (
            select tests.refusal(format('select internal.queue_export(%L)', pg_temp.export_id('a1'))) as r
        ) as x
    ),
    '409'::jsonb, 'B cannot queue A''s export'
);
select tests.act_as_anon();
select throws_ok(
    format('select internal.queue_export(%L)', pg_temp.export_id('a1')), '42501', null, 'anon cannot queue one'
);
select tests.act_as_service_role();
select throws_ok(
    format('select internal.queue_export(%L)', pg_temp.export_id('a1')), '42501', null, 'nor the service role'
);

-- building (the worker acts as the tenant)

select tests.act_as(tests.user_id('b'));
select is(internal.start_export(pg_temp.export_id('a1')), false, 'B cannot start A''s export');
select is_empty($$select * from api.exports where id = pg_temp.export_id('a1')$$, 'B does not see A''s export');
select tests.act_as(tests.user_id('a'));
select is(internal.start_export(pg_temp.export_id('a1')), true, 'A''s export starts');
select is(internal.export_progress(pg_temp.export_id('a1'), '{"file": "chunks.json", "rows": 10}'), true, 'progress');
select is(
    (select status::text || ' ' || (progress ->> 'rows') from api.exports where id = pg_temp.export_id('a1')),
    'running 10', 'running, with progress'
);
select throws_ok(
    format('select internal.finish_export(%L, 100, %L, 8)', pg_temp.export_id('a1'), '{}'),
    '22023', null, 'a link of more than 7 days is refused'
);
select tests.set_clock('2026-06-01 00:00:00+00');
select is(
    internal.finish_export(pg_temp.export_id('a1'), 1234, '{"documents.json": 3}', 7),
    '2026-06-08 00:00:00+00'::timestamptz,
    'ready: the link expires 7 days after now (the test clock)'
);
select is(internal.start_export(pg_temp.export_id('a1')), false, 'a ready export does not start again');
select results_eq(
    $$select status::text, size_bytes, counts from api.exports where id = pg_temp.export_id('a1')$$,
    $$values ('ready', 1234::bigint, '{"documents.json": 3}'::jsonb)$$,
    'A reads its ready export, its size and counts'
);
insert into e select 'a2', id from api.request_export();
select isnt(pg_temp.export_id('a2'), null, 'Enterprise asks again at once: no frequency limit');

-- expiry

select tests.set_clock('2026-06-08 00:00:01+00');
select is(
    (select status::text from api.exports where id = pg_temp.export_id('a1')), 'expired',
    'past its expiry it reads as expired at once'
);
select throws_ok('select * from internal.exports_to_expire(10)', '42501', null, 'a tenant cannot list expiring exports');
select tests.reset_actor();
set local role quarry_worker;
select results_eq(
    'select tenant_id, id from internal.exports_to_expire(10)',
    $$select tests.user_id('a'), pg_temp.export_id('a1')$$,
    'the worker lists the exports whose link expired'
);
select is(internal.expire_export(tests.user_id('a'), pg_temp.export_id('a1')), true, 'and marks one expired');
select is_empty('select * from internal.exports_to_expire(10)', 'nothing left to expire');
select tests.reset_actor();
select tests.set_clock(null);

-- a failure gives the allowance back (Free: one a month)

select tests.act_as(tests.user_id('free'));
insert into e select 'f1', id from api.request_export();
select tests.reset_actor();
select is(
    (
        select queue_name::text || ' ' || priority from procrastinate.procrastinate_jobs
        where args ->> 'export_id' = pg_temp.export_id('f1')::text
    ),
    'exports 0', 'Free''s build job waits in the shared queue at Free''s priority'
);
select tests.act_as(tests.user_id('free'));
select is(internal.fail_export(pg_temp.export_id('f1'), 'storage down'), true, 'Free''s export fails');
select results_eq(
    $$select status::text, error from api.exports where id = pg_temp.export_id('f1')$$,
    $$values ('failed', 'storage down')$$, 'failed, saying why'
);
insert into e select 'f2', id from api.request_export();
select isnt(pg_temp.export_id('f2'), null, 'a failed export does not count: Free may ask again');

-- a request whose job is lost gets one from the sweep (the expiry job calls it)

select tests.reset_actor();
delete from procrastinate.procrastinate_jobs where args ->> 'export_id' = pg_temp.export_id('f2')::text;
select tests.act_as(tests.user_id('free'));
select throws_ok('select internal.requeue_exports(0)', '42501', null, 'a tenant cannot run the sweep');
select tests.reset_actor();
set local role quarry_worker;
select is(internal.requeue_exports(3600), 0, 'a request younger than the grace period is left alone');
select is(internal.requeue_exports(0), 1, 'a queued export without a build job gets one');
select is(internal.requeue_exports(0), 0, 'and only one');
select tests.reset_actor();
select is(
    (
        select lock from procrastinate.procrastinate_jobs
        where task_name = 'exports:build' and args ->> 'export_id' = pg_temp.export_id('f2')::text
    ),
    'export:' || tests.user_id('free')::text, 'with the tenant''s lock, as a request''s own'
);

-- an account being deleted cannot start one

select tests.act_as(tests.user_id('b'));
insert into e select 'b1', id from api.request_export();
select tests.reset_actor();
insert into app.account_deletions (tenant_id, email) values (tests.user_id('b'), 'b@example.com');
select tests.act_as(tests.user_id('b'));
select is(internal.start_export(pg_temp.export_id('b1')), false, 'an export of an account being deleted does not start');
select is(
    internal.export_progress(pg_temp.export_id('a2'), '{}'), null, 'another tenant''s export cannot be moved on'
);
select tests.reset_actor();
update app.export_requests set status = 'running' where id = pg_temp.export_id('b1');
select tests.act_as(tests.user_id('b'));
select is(internal.export_progress(pg_temp.export_id('b1'), '{}'), null, 'one already running is told to stop');
select is(
    internal.finish_export(pg_temp.export_id('b1'), 1, '{}', 7), null, 'and cannot turn ready (no link is mailed)'
);

-- anon, the service role

select tests.act_as_anon();
select throws_ok('select * from api.exports', '42501', null, 'anon reads no export');
select throws_ok('select * from api.request_export()', '42501', null, 'anon requests no export');
select tests.act_as_service_role();
select is(
    (select count(*)::integer from app.export_requests where tenant_id in (tests.user_id('a'), tests.user_id('b'))),
    3, 'the service role reads every tenant''s exports'
);
select throws_ok(
    format('select internal.start_export(%L)', pg_temp.export_id('b1')), '42501', null,
    'the service role cannot build one'
);

select * from finish();
rollback;
