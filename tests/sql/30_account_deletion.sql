-- Account deletion: requested by the gateway's login for a confirmed user
-- (keys revoked, job deferred, in one transaction); the gateway's and
-- PostgREST's refusals; the erasure functions, which act only on a tenant
-- being deleted and leave every other tenant's rows alone; each with its
-- allowed and denied callers.
begin;
set local search_path = tests, public;
select plan(48);

select tests.create_users('a', 'b');
insert into app.subscriptions (tenant_id, plan_id, status)
select tests.user_id(n), 'pro', 'active' from (values ('a'), ('b')) as v (n);
create temporary table k (name text primary key, id uuid) on commit drop;
grant select, insert on k to public;
select tests.act_as(tests.user_id('a'));
insert into k select 'a_key', (api.create_api_key('a key')).id;
insert into app.documents (title, mime_type, size_bytes) values ('a doc', 'text/plain', 10);
select tests.act_as(tests.user_id('b'));
insert into app.documents (title, mime_type, size_bytes) values ('b doc', 'text/plain', 10);
select tests.reset_actor();

-- requesting: the gateway's login only

select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$select * from internal.request_account_deletion(tests.user_id('a'), 'a@example.com')$$, '42501', null,
    'a tenant cannot request a deletion directly (only through the gateway, with a JWT)'
);
select tests.act_as_anon();
select throws_ok(
    $$select * from internal.request_account_deletion(tests.user_id('a'), 'a@example.com')$$, '42501', null,
    'nor can anon'
);
select tests.act_as_service_role();
select throws_ok(
    $$select * from internal.request_account_deletion(tests.user_id('a'), 'a@example.com')$$, '42501', null,
    'nor the service role'
);
select tests.reset_actor();
set local role quarry_gateway;
select is(
    (
        select r -> 'status' || (r -> 'details')
        from (select tests.refusal($$select internal.request_account_deletion(tests.user_id('a'), 'b@example.com')$$) as r) as x
    ),
    '[422, {"field": "confirm"}]'::jsonb,
    'another address does not confirm it'
);
select is(
    (select state from internal.request_account_deletion(tests.user_id('a'), ' A@Example.com ')), 'queued',
    'the account''s own address (any case) does'
);
select is(
    (select requested_at from internal.request_account_deletion(tests.user_id('a'), 'anything')),
    (select requested_at from internal.account_deletion(tests.user_id('a'))),
    'asking again answers the same deletion'
);
select is(
    (select r -> 'status' from (select tests.refusal($$select internal.request_account_deletion(gen_random_uuid(), 'x')$$) as r) as x),
    '401'::jsonb, 'a user that no longer exists is 401'
);
select tests.reset_actor();
select is(
    (select revoked_at is not null from app.api_keys where id = (select id from k where name = 'a_key')), true,
    'every API key of the account is revoked at once'
);
select is(
    (select count(*)::integer from procrastinate.procrastinate_jobs where task_name = 'account:delete'
        and args ->> 'tenant_id' = tests.user_id('a')::text and lock = 'account:' || tests.user_id('a')::text),
    1, 'the deletion job is deferred with it'
);

-- operators see the job, why it failed and how long a run took (procrastinate's events)

select ok(
    exists (
        select from ops.job_queues
        where queue_name = 'account' and plan = 'pro' and status = 'todo' and jobs >= 1
    ),
    'ops.job_queues shows the deletion job waiting in its queue (Pro: the shared one)'
);
select ok(
    exists (select from ops.account_deletions where tenant_id = tests.user_id('a') and state = 'queued'),
    'ops.account_deletions shows the deletion (no email)'
);
update procrastinate.procrastinate_jobs set status = 'doing'
where task_name = 'account:delete' and args ->> 'tenant_id' = tests.user_id('a')::text;
update procrastinate.procrastinate_jobs set status = 'failed'
where task_name = 'account:delete' and args ->> 'tenant_id' = tests.user_id('a')::text;
select internal.record_job_failure(j.id, 1, j.task_name, j.queue_name, 'DeletionWaiting: 1 job(s) still running', true)
from procrastinate.procrastinate_jobs as j
where j.task_name = 'account:delete' and j.args ->> 'tenant_id' = tests.user_id('a')::text;
select ok(
    exists (
        select from ops.failed_jobs
        where task_name = 'account:delete' and tenant_id = tests.user_id('a') and reason like 'DeletionWaiting:%'
    )
    and exists (select from ops.job_durations where task_name = 'account:delete' and failed >= 1),
    'a failed run is in ops.failed_jobs with its reason and counted in ops.job_durations'
);

-- who reads the deletion record

select tests.act_as(tests.user_id('a'));
select is((select count(*)::integer from app.account_deletions), 1, 'A reads its own deletion record');
select throws_ok('delete from app.account_deletions', '42501', null, 'A cannot cancel it');
select throws_ok($$update app.account_deletions set state = 'running'$$, '42501', null, 'nor change it');
select tests.act_as(tests.user_id('b'));
select is_empty('select * from app.account_deletions', 'B reads no other tenant''s deletion');
select tests.act_as_anon();
select throws_ok('select * from app.account_deletions', '42501', null, 'anon reads none');
select tests.act_as_service_role();
select is((select count(*)::integer from app.account_deletions), 1, 'the service role reads them all');

-- admitting requests (the gateway) and PostgREST's pre-request

select tests.reset_actor();
set local role quarry_gateway;
select results_eq(
    $$select deleting, request_limit from internal.admit_request(tests.user_id('a'), null, true)$$,
    $$values (true, null::integer)$$, 'the gateway learns that A is being deleted (and counts nothing)'
);
select results_eq(
    $$select deleting, request_limit from internal.admit_request(tests.user_id('b'), null, true)$$,
    $$values (false, 500)$$, 'B is admitted and counted against its rate limit'
);
select results_eq(
    $$select deleting, request_limit from internal.admit_request(tests.user_id('b'), null, false)$$,
    $$values (false, null::integer)$$, 'with rate limits off, only admitted'
);
select is_empty(
    $$select * from internal.admit_request(gen_random_uuid(), null, true)$$, 'a user that is gone: no row (401)'
);
select tests.act_as(tests.user_id('b'));
select throws_ok(
    $$select * from internal.admit_request(tests.user_id('b'), null, true)$$, '42501', null,
    'a tenant cannot call the gateway''s admission'
);
select lives_ok('select internal.check_request()', 'PostgREST admits B');
select tests.act_as(tests.user_id('b'), null, 'GET', '/rest/v1/exports', '{"x-request-id": "r-2"}');
create temporary table before_check on commit drop as
select
    current_setting('request.jwt.claims') as claims,
    current_setting('request.headers') as headers,
    current_setting('request.path') as path;
select internal.check_request();
select results_eq(
    $$select current_setting('request.jwt.claims'), current_setting('request.headers'), current_setting('request.path')$$,
    $$select claims, headers, path from before_check$$,
    'the one pre-request re-issues the request''s settings first (SET LOCAL, which reaches the Citus workers)'
);
select is(
    (select provolatile from pg_proc where oid = 'internal.check_request()'::regprocedure), 'v',
    '(volatile: a stable function may not SET)'
);
select tests.act_as_service_role();
select lives_ok('select internal.check_request()', 'the service role''s requests pass it');
select tests.act_as_anon();
select throws_ok('select internal.check_request()', '42501', null, 'anon''s are refused (as everywhere)');
select tests.act_as(tests.user_id('a'));
select is(
    (select r ->> 'code' from (select tests.refusal('select internal.check_request()') as r) as x),
    'account-deleting', 'and refuses A (403) while it is deleted'
);
select tests.act_as(gen_random_uuid());
select is(
    (select r -> 'status' from (select tests.refusal('select internal.check_request()') as r) as x),
    '401'::jsonb, 'and a user that is gone (401)'
);
select tests.reset_actor();
select ok(
    exists (
        select from pg_db_role_setting as s inner join pg_roles as r on s.setrole = r.oid
        where r.rolname = 'authenticator' and 'pgrst.db_pre_request=internal.check_request' = any(s.setconfig)
    ),
    'PostgREST calls it before every request to this database'
);

-- erasing: the worker's login, only a tenant being deleted

select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$select internal.erase_tenant_rows(tests.user_id('a'), null)$$, '42501', null, 'a tenant cannot erase rows'
);
select tests.act_as_service_role();
select throws_ok(
    $$select internal.erase_tenant_rows(tests.user_id('a'), null)$$, '42501', null, 'nor can the service role'
);
select tests.reset_actor();
set local role quarry_worker;
select throws_ok(
    $$select internal.erase_tenant_rows(tests.user_id('b'), null)$$, '55000', null,
    'the worker cannot erase a tenant that is not being deleted'
);
select throws_ok(
    $$select internal.erase_tenant_documents(tests.user_id('b'), 10)$$, '55000', null, '... nor its documents'
);
select is(
    (internal.tenant_row_counts(tests.user_id('a')) ->> 'app.documents')::integer, 1, 'the inventory finds A''s rows'
);
select is(
    (select state from internal.begin_account_deletion(tests.user_id('a'))), 'running', 'the job starts the deletion'
);
select is(
    internal.finish_deletion_step(tests.user_id('a'), 'inventory', '{"rows_found": {}}'), true, 'and records a step'
);
select is(internal.quiesce_tenant_jobs(tests.user_id('a'), null), 0, 'A''s jobs that are not running are gone');
select tests.reset_actor();
select is_empty(
    $$select from internal.job_failures where error like 'DeletionWaiting:%'$$,
    '... with the reasons their attempts failed'
);
set local role quarry_worker;
select is(internal.erase_tenant_documents(tests.user_id('a'), 10), 1, 'A''s documents go');
select ok(
    (internal.erase_tenant_rows(tests.user_id('a'), null) ? 'app.api_keys'), 'then every row of A, keys included'
);
select is(internal.tenant_row_counts(tests.user_id('a')), '{}'::jsonb, 'no table holds a row of A');
select is(
    (internal.tenant_row_counts(tests.user_id('b')) ->> 'app.documents')::integer, 1, 'B''s rows are all still there'
);
select is(internal.deletions_to_resume(), 1, 'a deletion whose job is gone (it gave up) is deferred again');
create temporary table own_job on commit drop as
select j.id from procrastinate.procrastinate_jobs as j
where j.task_name = 'account:delete' and j.args ->> 'tenant_id' = tests.user_id('a')::text;
select internal.record_job_failure(id, 1, 'account:delete', 'account', 'an error naming ' || tests.user_id('a'), false)
from own_job;
select is(
    internal.forget_account_deletion(tests.user_id('a'), (select id from own_job)), true, 'the record goes last'
);
select is(internal.deletions_to_resume(), 0, 'and there is nothing to resume');
select tests.reset_actor();
select results_eq(
    $$select j.args, (select count(*)::integer from internal.job_failures as f where f.job_id = j.id)
      from procrastinate.procrastinate_jobs as j where j.id = (select id from own_job)$$,
    $$values ('{"erased": true}'::jsonb, 0)$$,
    'the job''s own row is left anonymous, without the reasons its attempts failed'
);

select * from finish();
rollback;
