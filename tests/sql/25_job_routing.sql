-- Job routing: the plan chooses a job's queue (Enterprise: its own pool) and
-- priority (Pro over Free) for every task alike; the request id travels into
-- the job; workers fetch the highest priority first, but one fetch in
-- job_settings.oldest_job_every takes the oldest job, so Free is never
-- starved however many Pro jobs keep coming.  Only the worker fetches.
begin;
set local search_path = tests, public;
select plan(22);

select tests.create_users('free', 'pro', 'ent');
insert into app.subscriptions (tenant_id, plan_id, status) values
(tests.user_id('pro'), 'pro', 'active'),
(tests.user_id('ent'), 'enterprise', 'active');
-- this transaction's queue holds only this test's jobs
delete from procrastinate.procrastinate_jobs;
create temporary table worker (id bigint) on commit drop;
with registered as (insert into procrastinate.procrastinate_workers default values returning id)
insert into worker select id from registered;

-- the rule is data, the same for every task

select is(internal.job_pools(), array['enterprise'], 'Enterprise is the one plan with a job pool');
create temporary table jobs on commit drop as
select
    internal.defer_job('documents:ingest', tests.user_id('free'), '{"document_id": "f"}') as free_ingest,
    internal.defer_job('documents:ingest', tests.user_id('pro'), '{"document_id": "p"}') as pro_ingest,
    internal.defer_job('documents:ingest', tests.user_id('ent'), '{"document_id": "e"}') as ent_ingest,
    internal.defer_job('drive:sync', tests.user_id('ent'), '{"folder_id": "x", "run_id": "y"}') as ent_sync,
    internal.defer_job('drive:sync', tests.user_id('pro'), '{"folder_id": "x", "run_id": "y"}') as pro_sync;
select results_eq(
    $$select j.queue_name::text, j.priority from procrastinate.procrastinate_jobs as j, jobs
      where j.id in (jobs.free_ingest, jobs.pro_ingest, jobs.ent_ingest, jobs.ent_sync, jobs.pro_sync) order by j.id$$,
    $$values ('ingest', 0), ('ingest', 10), ('enterprise.ingest', 20), ('enterprise.drive', 20), ('drive', 10)$$,
    'Free and Pro share the task''s queue with their plan''s priority; Enterprise jobs go to its own pool, any task'
);
select is(
    (select args ? 'request_id' from procrastinate.procrastinate_jobs where id = (select free_ingest from jobs)),
    false, 'a job deferred outside a request carries no request id'
);

-- the request id of the deferring transaction travels with the job

select set_config('request.headers', '{"x-request-id": "req-123", "user-agent": "x"}', true);
create temporary table in_request on commit drop as
select internal.defer_job('documents:ingest', tests.user_id('pro'), '{"document_id": "r"}') as id;
select is(
    (select args ->> 'request_id' from procrastinate.procrastinate_jobs where id = (select id from in_request)),
    'req-123', 'a job deferred in a request carries its request id (x-request-id)'
);
select set_config('request.headers', 'not json', true);
select isnt(
    internal.defer_job('documents:ingest', tests.user_id('pro'), '{"document_id": "s"}'), null,
    'headers that are not JSON defer the job without a request id'
);
select set_config('request.headers', '', true);

-- fetching: priority first, the oldest on every Nth fetch

delete from procrastinate.procrastinate_jobs;
update internal.job_settings set oldest_job_every = 3;
select setval('internal.job_fetch_turns', 1, false);
create temporary table queued on commit drop as
select
    internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 1}') as free_1,
    internal.defer_job('documents:ingest', tests.user_id('pro'), '{"n": 2}') as pro_1,
    internal.defer_job('documents:ingest', tests.user_id('pro'), '{"n": 3}') as pro_2,
    internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 4}') as free_2,
    internal.defer_job('documents:ingest', tests.user_id('pro'), '{"n": 5}') as pro_3,
    internal.defer_job('documents:ingest', tests.user_id('ent'), '{"n": 6}') as ent_1;
create temporary table fetched (turn serial, id bigint) on commit drop;
insert into fetched (id) select (internal.fetch_job(array['ingest'], (select id from worker))).id;
insert into fetched (id) select (internal.fetch_job(array['ingest'], (select id from worker))).id;
insert into fetched (id) select (internal.fetch_job(array['ingest'], (select id from worker))).id;
insert into fetched (id) select (internal.fetch_job(array['ingest'], (select id from worker))).id;
insert into fetched (id) select (internal.fetch_job(array['ingest'], (select id from worker))).id;
insert into fetched (id) select (internal.fetch_job(array['ingest'], (select id from worker))).id;
select results_eq(
    'select id from fetched order by turn',
    $$select x from queued, unnest(array[pro_1, pro_2, free_1, pro_3, free_2, null]) with ordinality as t (x, n) order by n$$,
    'Pro before Free, but every 3rd fetch takes the oldest job; the ingest queue never hands out the Enterprise job'
);
select is(
    (select status::text from procrastinate.procrastinate_jobs where id = (select free_1 from queued)),
    'doing', 'a fetched job is the worker''s'
);
select is(
    (internal.fetch_job(array['enterprise.ingest'], (select id from worker))).id,
    (select ent_1 from queued), 'the Enterprise pool''s queue hands out the Enterprise job'
);

-- a lock is honoured on the oldest turn as well: a job waits while another with its lock runs

delete from procrastinate.procrastinate_jobs;
update internal.job_settings set oldest_job_every = 2;
select internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 1}', 'doc:a');
update procrastinate.procrastinate_jobs set status = 'doing', worker_id = (select id from worker);
create temporary table locked on commit drop as
select
    internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 2}', 'doc:a') as waits,
    internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 3}', 'doc:b') as runs;
select setval('internal.job_fetch_turns', 2, false);
select is(
    (internal.fetch_job(array['ingest'], (select id from worker))).id, (select runs from locked),
    'the oldest turn skips a job whose lock another job holds'
);

-- nothing starves: under a steady flood of Pro jobs a Free job is fetched within N fetches

delete from procrastinate.procrastinate_jobs;
update internal.job_settings set oldest_job_every = 5;
create temporary table starving on commit drop as
select internal.defer_job('documents:ingest', tests.user_id('free'), '{"waiting": true}') as id;
create temporary table flood (turn integer, id bigint) on commit drop;
do $flood$
begin
    for turn in 1..20 loop
        perform internal.defer_job('documents:ingest', tests.user_id('pro'), jsonb_build_object('n', turn));
        perform internal.defer_job('documents:ingest', tests.user_id('pro'), jsonb_build_object('m', turn));
        insert into flood values (turn, (internal.fetch_job(array['ingest'], (select id from worker))).id);
    end loop;
end
$flood$;
select cmp_ok(
    (select min(turn) from flood where id = (select id from starving)), '<=', 5,
    'with two Pro jobs arriving per fetch, the waiting Free job is still fetched within 5 fetches'
);
select is(
    (select count(*)::integer from flood where id is not null), 20, 'and every fetch found a job'
);
update internal.job_settings set oldest_job_every = 1;
delete from procrastinate.procrastinate_jobs where status = 'todo';
select internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 1}');
select internal.defer_job('documents:ingest', tests.user_id('pro'), '{"n": 2}');
select is(
    (internal.fetch_job(array['ingest'], (select id from worker))).priority, 10,
    'oldest_job_every = 1 turns the oldest turns off: priority order alone'
);

-- failures are recorded with their reason

select internal.record_job_failure(42, 0, 'documents:ingest', 'ingest', 'StorageUnavailable: the bucket is away', false);
select internal.record_job_failure(42, 1, 'documents:ingest', 'ingest', repeat('x', 5000), true);
select results_eq(
    'select attempt, char_length(error), final from internal.job_failures where job_id = 42 order by attempt',
    $$values (0, 38, false), (1, 1000, true)$$,
    'each failed attempt is recorded, its reason cut to 1000 characters'
);

-- the gauges the worker exports

select set_eq(
    'select metric from internal.queue_gauges()',
    $$values ('jobs'), ('oldest_waiting_seconds'), ('outbox_pending'), ('outbox_lag_seconds'), ('outbox_failing')$$,
    'queue_gauges reports depth, oldest wait and the outbox (webhook events once there are some)'
);

-- who may: the worker's login role only

set local role quarry_worker;
select lives_ok(
    $$select internal.fetch_job(array['ingest'], null), internal.job_pools(), internal.queue_gauges()$$,
    'the worker fetches jobs, reads the pools and the gauges'
);
select lives_ok(
    $$select internal.record_job_failure(43, 0, 'documents:ingest', 'ingest', 'boom', true)$$,
    'and records failures'
);
select throws_ok('select * from internal.job_failures', '42501', null, 'but cannot read or rewrite them directly');
reset role;
set local role quarry_gateway;
select throws_ok(
    $$select internal.fetch_job(array['ingest'], null)$$, '42501', null, 'the gateway''s login role cannot fetch jobs'
);
reset role;
select tests.act_as(tests.user_id('free'));
select throws_ok(
    $$select internal.fetch_job(null, null)$$, '42501', null, 'a tenant cannot fetch jobs'
);
select throws_ok(
    $$select internal.record_job_failure(1, 0, 't', 'q', 'e', true)$$, '42501', null, 'nor record failures'
);
select tests.act_as_service_role();
select throws_ok(
    'select * from internal.job_settings', '42501', null, 'the service role cannot read the fetch settings'
);
select tests.act_as_anon();
select throws_ok('select internal.job_pools()', '42501', null, 'anon cannot read the pools');
select tests.reset_actor();

select * from finish();
rollback;
