-- The operator views (Supabase Studio): what waits in which queue for which
-- plan, failed jobs with reasons, per-tenant usage, Drive sync errors, the
-- slowest searches of the last hour.  No API role reads any of them.
begin;
set local search_path = tests, public;
select plan(12);

select tests.create_users('free', 'pro', 'ent');
insert into app.subscriptions (tenant_id, plan_id, status) values
(tests.user_id('pro'), 'pro', 'active'),
(tests.user_id('ent'), 'enterprise', 'active');
delete from procrastinate.procrastinate_jobs;

-- ops.job_queues

select internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 1}');
select internal.defer_job('documents:ingest', tests.user_id('free'), '{"n": 2}');
select internal.defer_job('documents:ingest', tests.user_id('pro'), '{"n": 3}');
select internal.defer_job('drive:sync', tests.user_id('ent'), '{"n": 4}');
select results_eq(
    'select queue_name::text, plan, priority, status::text, jobs from ops.job_queues order by queue_name, priority',
    $$values
        ('enterprise.drive', 'enterprise', 20, 'todo', 1::bigint),
        ('ingest', 'free', 0, 'todo', 2::bigint),
        ('ingest', 'pro', 10, 'todo', 1::bigint)$$,
    'ops.job_queues counts the waiting jobs per queue, plan and priority'
);
select ok(
    (select bool_and(oldest_queued_at is not null and oldest_wait_seconds >= 0) from ops.job_queues),
    'with the oldest job''s wait'
);

-- ops.failed_jobs

select set_config('request.headers', '{"x-request-id": "req-failed"}', true);
create temporary table failing on commit drop as
select internal.defer_job('documents:ingest', tests.user_id('pro'), '{"n": 5}') as id;
select set_config('request.headers', '', true);
update procrastinate.procrastinate_jobs set status = 'failed', attempts = 5 where id = (select id from failing);
select internal.record_job_failure((select id from failing), 4, 'documents:ingest', 'ingest', 'StorageUnavailable: away', true);
select results_eq(
    'select task_name::text, tenant_id, request_id, attempts, reason from ops.failed_jobs',
    $$values ('documents:ingest', tests.user_id('pro'), 'req-failed', 5, 'StorageUnavailable: away')$$,
    'ops.failed_jobs names the task, the tenant, the request that deferred it and why it failed'
);

-- ops.tenant_usage

insert into app.usage_counters (tenant_id, quota, period_start, used) values
(tests.user_id('pro'), 'queries_per_day', app.quota_period_start('queries_per_day', app.clock()), 7),
(tests.user_id('pro'), 'storage_bytes', app.quota_period_start('storage_bytes', app.clock()), 1234);
insert into app.rate_limit_windows (tenant_id, subject_id, window_start, requests)
values (tests.user_id('pro'), tests.user_id('pro'), date_trunc('hour', app.clock(), 'UTC'), 12);
select results_eq(
    $$select plan, storage_bytes, queries_today, requests_this_hour, jobs_in_queue
      from ops.tenant_usage where tenant_id = tests.user_id('pro')$$,
    $$values ('pro', 1234::bigint, 7::bigint, 12, 1::bigint)$$,
    'ops.tenant_usage shows a tenant''s plan, storage, queries today, requests this hour and queued jobs'
);
select results_eq(
    $$select plan, documents, queries_today from ops.tenant_usage where tenant_id = tests.user_id('free')$$,
    $$values ('free', 0::bigint, 0::bigint)$$,
    'and a tenant that used nothing'
);

-- ops.drive_sync_errors

insert into app.drive_folders (tenant_id, google_folder_id, name, state, last_error) values
(tests.user_id('ent'), 'g-broken', 'Broken', 'error', 'Google answered 500 six times'),
(tests.user_id('ent'), 'g-fine', 'Fine', 'ready', null);
select results_eq(
    'select folder_state, last_error from ops.drive_sync_errors',
    $$values ('error', 'Google answered 500 six times')$$,
    'ops.drive_sync_errors lists the failing folder, not the healthy one'
);

-- ops.slow_queries

insert into app.query_log (tenant_id, query, mode, result_count, latency_ms, created_at) values
(tests.user_id('ent'), 'fast one', 'hybrid', 3, 4.5, now()),
(tests.user_id('ent'), 'slow one', 'dense', 10, 180, now()),
(tests.user_id('ent'), 'old and slow', 'hybrid', 1, 900, now() - interval '2 hours');
select results_eq(
    'select mode, latency_ms, query_chars from ops.slow_queries',
    $$values ('dense', 180::real, 8), ('hybrid', 4.5::real, 8)$$,
    'ops.slow_queries: the last hour''s searches, slowest first, without their text'
);

-- nobody but the operator

select tests.act_as(tests.user_id('ent'));
select throws_ok('select * from ops.tenant_usage', '42501', null, 'a tenant cannot read the operator views');
select throws_ok('select * from ops.job_queues', '42501', null, 'nor the queues');
select tests.act_as_anon();
select throws_ok('select * from ops.failed_jobs', '42501', null, 'anon cannot read the operator views');
select tests.act_as_service_role();
select throws_ok('select * from ops.slow_queries', '42501', null, 'nor can the service role');
select tests.reset_actor();
set local role quarry_worker;
select throws_ok('select * from ops.drive_sync_errors', '42501', null, 'nor the worker''s login role');
reset role;

select * from finish();
rollback;
