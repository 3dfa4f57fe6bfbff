-- Jobs: internal.defer_job is the one way into the queue.  It knows every
-- task's queue, gives the job its tenant's plan priority, refuses a task no
-- worker runs, and no API role can call it.
begin;
set local search_path = tests, public;
select plan(12);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values ('free', tests.create_user('free@example.com')), ('pro', tests.create_user('pro@example.com'));
insert into app.subscriptions (tenant_id, plan_id, status) select id, 'pro', 'active' from ids where name = 'pro';

select is(internal.job_queue('documents:ingest'), 'ingest', 'every task has its queue');
select is(internal.job_queue('documents:no_such_task'), null, 'a task nobody runs has none');

create temporary table deferred on commit drop as
select
    internal.defer_job('documents:ingest', (select id from ids where name = 'free'), '{"document_id": "d1"}') as free_job,
    internal.defer_job(
        'documents:ingest', (select id from ids where name = 'pro'), '{"document_id": "d2"}', 'lock:d2', 'queue:d2'
    ) as pro_job;
select results_eq(
    $$select queue_name::text, task_name::text, priority, args, lock, queueing_lock
      from procrastinate.procrastinate_jobs where id = (select free_job from deferred)$$,
    $$select 'ingest', 'documents:ingest', 0,
        jsonb_build_object('document_id', 'd1', 'tenant_id', (select id from ids where name = 'free')),
        null::text, null::text$$,
    'defer_job queues the task in its queue, with the tenant in its arguments'
);
select results_eq(
    $$select priority, lock, queueing_lock from procrastinate.procrastinate_jobs where id = (select pro_job from deferred)$$,
    $$values (10, 'lock:d2', 'queue:d2')$$,
    'a Pro tenant''s job gets Pro priority, and the locks asked for'
);
select throws_ok(
    $$select internal.defer_job('documents:no_such_task', (select id from ids where name = 'free'), '{}')$$,
    'XX000', 'no worker task is named documents:no_such_task', 'a task no worker runs is refused'
);
select throws_ok(
    $$select internal.defer_job('documents:ingest', (select id from ids where name = 'pro'), '{}', null, 'queue:d2')$$,
    '23505', null, 'the queueing lock keeps one waiting job'
);

-- denied: no API role and no login role defers jobs directly
select tests.act_as((select id from ids where name = 'free'));
select throws_ok(
    $$select internal.defer_job('documents:ingest', auth.uid(), '{}')$$, '42501', null, 'a tenant cannot defer jobs'
);
select throws_ok($$select internal.job_queue('documents:ingest')$$, '42501', null, 'nor read the task map');
select tests.act_as_anon();
select throws_ok(
    $$select internal.defer_job('documents:ingest', gen_random_uuid(), '{}')$$, '42501', null, 'anon cannot defer jobs'
);
select tests.act_as_service_role();
select throws_ok(
    $$select internal.defer_job('documents:ingest', gen_random_uuid(), '{}')$$,
    '42501', null, 'the service role cannot defer jobs'
);
select tests.reset_actor();
set local role quarry_gateway;
select throws_ok(
    $$select internal.defer_job('documents:ingest', gen_random_uuid(), '{}')$$,
    '42501', null, 'the gateway''s login role cannot defer jobs'
);
reset role;
set local role quarry_worker;
select throws_ok(
    $$select internal.defer_job('documents:ingest', gen_random_uuid(), '{}')$$,
    '42501', null, 'the worker''s login role cannot defer jobs (it runs them)'
);
reset role;

select * from finish();
rollback;
