-- Job routing: which queue and which priority a tenant's job gets, and the
-- order in which workers take them (DESIGN §6, §8: "Pro jobs outrank Free in
-- the shared queue, Enterprise gets its own queue and workers; nothing
-- starves").
--
-- The rule is data, applied in internal.defer_job to every task alike, so a
-- new task (export, account deletion) follows it by being deferred there:
--   queue    = the task's base queue (internal.job_queue), prefixed with the
--              plan's job pool when the plan has one: an Enterprise tenant's
--              `documents:ingest` goes to `enterprise.ingest`, which a
--              dedicated worker pool serves (`python -m worker --queues enterprise`);
--   priority = the plan's queue_priority (Free 0, Pro 10, Enterprise 20).
-- Workers fetch through internal.fetch_job: the highest priority first
-- (procrastinate's own order), except that one fetch in
-- internal.job_settings.oldest_job_every takes the oldest waiting job
-- whatever its priority, so a flood of Pro jobs leaves Free a share of the
-- pool (at least 1 in N fetches) and every job's wait is bounded.
-- defer_job also carries the request id of the transaction that defers the
-- job (request.headers' x-request-id, which the gateway and PostgREST set)
-- into the job's arguments, so a job's log lines name the request that
-- caused it.

-- table: app.plans (the job pool of a plan)

alter table app.plans add column job_pool text;

alter table app.plans
add constraint plans_job_pool_name check (job_pool ~ '^[a-z][a-z0-9_]{0,30}$');

comment on column app.plans.job_pool is
'Jobs of this plan''s tenants go to `<job_pool>.<queue>` (a dedicated worker pool); null = the shared queues.';

update app.plans set job_pool = 'enterprise'
where id = 'enterprise';

-- table: internal.job_settings

create table internal.job_settings (
    singleton boolean primary key default true,
    oldest_job_every integer not null default 5,
    constraint job_settings_singleton check (singleton),
    constraint job_settings_oldest_job_every_positive check (oldest_job_every >= 1)
);

insert into internal.job_settings default values;

comment on table internal.job_settings is
'How workers take jobs: one fetch in oldest_job_every takes the oldest waiting job whatever its priority (1 = FIFO).';

alter table internal.job_settings enable row level security;
alter table internal.job_settings force row level security;

create policy job_settings_postgres on internal.job_settings
for all to postgres
using (true)
with check (true);

-- sequence: internal.job_fetch_turns (whose turn a fetch is)

create sequence internal.job_fetch_turns as bigint cycle;

comment on sequence internal.job_fetch_turns is 'Counts fetches: every oldest_job_every-th takes the oldest job.';

-- table: internal.job_failures

-- Why a job attempt failed (procrastinate keeps only that it did): the
-- exception's type and message, as the worker's log has them, never a
-- secret.  Kept 30 days; read in ops.failed_jobs.
create table internal.job_failures (
    job_id bigint not null,
    attempt integer not null,
    task_name text not null,
    queue_name text not null,
    error text not null,
    final boolean not null,
    failed_at timestamptz not null default now(),
    primary key (job_id, attempt),
    constraint job_failures_error_length check (char_length(error) between 1 and 1000)
);

comment on table internal.job_failures is
'Why each failed job attempt failed (final: no retry follows); written by the worker, kept 30 days.';

alter table internal.job_failures enable row level security;
alter table internal.job_failures force row level security;

create policy job_failures_postgres on internal.job_failures
for all to postgres
using (true)
with check (true);

create index job_failures_failed_at_idx on internal.job_failures (failed_at);

-- function: internal.job_pools

create function internal.job_pools()
returns text[]
language sql
stable
security definer
set search_path = ''
as $$
    select coalesce(array_agg(distinct p.job_pool order by p.job_pool), '{}')
    from app.plans as p
    where p.job_pool is not null
$$;

comment on function internal.job_pools() is
'The dedicated job pools of the plans: a worker started with `--queues <pool>` serves `<pool>.<queue>`.';

revoke execute on function internal.job_pools() from public;
grant execute on function internal.job_pools() to quarry_worker;

-- function: internal.defer_job

-- As before (the one way jobs enter the queue), with the queue and priority
-- from the tenant's plan and the request id of the transaction.
create or replace function internal.defer_job(
    task_name text, tenant uuid, args jsonb, lock_key text default null, queueing_lock_key text default null
)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    base_queue text := internal.job_queue(task_name);
    tenant_plan app.plans;
    request_id text;
    job_ids bigint[];
begin
    if base_queue is null then
        raise exception 'no worker task is named %', task_name using errcode = 'XX000';
    end if;
    tenant_plan := internal.tenant_plan(tenant);
    begin
        request_id := left(nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-request-id', 128);
    exception when invalid_text_representation then
        request_id := null;  -- headers that are not JSON name no request
    end;
    job_ids := procrastinate.procrastinate_defer_jobs_v1(array[
        row(
            coalesce(tenant_plan.job_pool || '.', '') || base_queue,
            task_name,
            tenant_plan.queue_priority,
            lock_key,
            queueing_lock_key,
            args || jsonb_build_object('tenant_id', tenant)
            || case when request_id is null then '{}' else jsonb_build_object('request_id', request_id) end,
            null
        )::procrastinate.procrastinate_job_to_defer_v1
    ]);
    return job_ids[1];
end
$$;

comment on function internal.defer_job(text, uuid, jsonb, text, text) is
'Defer a worker task for a tenant: its plan sets the queue (job pool) and priority; the one way jobs enter the queue.';

revoke execute on function internal.defer_job(text, uuid, jsonb, text, text) from public;

-- function: internal.fetch_job

-- What a worker runs next: procrastinate's own choice (highest priority,
-- then oldest), except on every oldest_job_every-th fetch, which takes the
-- oldest waiting job of the worker's queues.  Locks are honoured exactly as
-- procrastinate_fetch_job_v2 honours them (a job waits while another with
-- its lock runs, or waits ahead of it).
create function internal.fetch_job(target_queue_names character varying[], p_worker_id bigint)
returns procrastinate.procrastinate_jobs
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    every integer;
    found_job procrastinate.procrastinate_jobs;
begin
    select s.oldest_job_every into every from internal.job_settings as s;
    if coalesce(every, 1) > 1 and nextval('internal.job_fetch_turns') % every = 0 then
        with candidate as (
            select jobs.id
            from procrastinate.procrastinate_jobs as jobs
            where
                jobs.status = 'todo'
                and (target_queue_names is null or jobs.queue_name = any(target_queue_names))
                and (jobs.scheduled_at is null or jobs.scheduled_at <= now())
                and not exists (
                    select from procrastinate.procrastinate_jobs as other_jobs
                    where
                        jobs.lock is not null
                        and other_jobs.lock = jobs.lock
                        and (
                            other_jobs.status = 'doing'
                            or (
                                other_jobs.status = 'todo'
                                and (
                                    other_jobs.priority > jobs.priority
                                    or (other_jobs.priority = jobs.priority and other_jobs.id < jobs.id)
                                )
                            )
                        )
                )
            order by jobs.id asc
            limit 1
            for update of jobs skip locked
        )

        update procrastinate.procrastinate_jobs as j
        set status = 'doing', worker_id = p_worker_id
        from candidate
        where j.id = candidate.id
        returning j.* into found_job;
        if found_job.id is not null then
            return found_job;
        end if;
    end if;
    return procrastinate.procrastinate_fetch_job_v2(target_queue_names, p_worker_id);
end
$$;

comment on function internal.fetch_job(character varying[], bigint) is
'The next job for a worker: highest priority first, but one fetch in job_settings.oldest_job_every takes the oldest.';

revoke execute on function internal.fetch_job(character varying[], bigint) from public;
grant execute on function internal.fetch_job(character varying[], bigint) to quarry_worker;

-- function: internal.record_job_failure

create function internal.record_job_failure(
    job bigint, attempt integer, task_name text, queue_name text, error text, final boolean
)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
    delete from internal.job_failures as f where f.failed_at < now() - interval '30 days';
    insert into internal.job_failures (job_id, attempt, task_name, queue_name, error, final)
    values (job, attempt, task_name, queue_name, left(coalesce(nullif(error, ''), 'unknown error'), 1000), final)
    on conflict (job_id, attempt) do update set error = excluded.error, final = excluded.final, failed_at = now();
$$;

comment on function internal.record_job_failure(bigint, integer, text, text, text, boolean) is
'Record why a job attempt failed (the worker calls it; ops.failed_jobs shows it).';

revoke execute on function internal.record_job_failure(bigint, integer, text, text, text, boolean) from public;
grant execute on function internal.record_job_failure(bigint, integer, text, text, text, boolean) to quarry_worker;

-- function: internal.queue_gauges

-- What the worker's /metrics reports from the database, one statement every
-- few seconds: waiting and running jobs per queue, the age of each queue's
-- oldest waiting job, the outbox's backlog and lag, and the Stripe webhook's
-- events by outcome.  Labels are queue names, job statuses and outcomes only.
create function internal.queue_gauges()
returns table (metric text, labels jsonb, value double precision)
language sql
stable
security definer
set search_path = ''
as $$
    select
        'jobs',
        jsonb_build_object('queue', j.queue_name, 'status', j.status),
        count(*)::double precision
    from procrastinate.procrastinate_jobs as j
    where j.status in ('todo', 'doing')
    group by j.queue_name, j.status
    union all
    select
        'oldest_waiting_seconds',
        jsonb_build_object('queue', j.queue_name),
        max(extract(epoch from now() - e.at))::double precision
    from procrastinate.procrastinate_jobs as j
    inner join procrastinate.procrastinate_events as e on j.id = e.job_id and e.type = 'deferred'
    where j.status = 'todo'
    group by j.queue_name
    union all
    select 'outbox_pending', '{}', o.pending::double precision from ops.outbox_status as o
    union all
    select 'outbox_lag_seconds', '{}', o.lag_seconds::double precision from ops.outbox_status as o
    union all
    select 'outbox_failing', '{}', o.failing::double precision from ops.outbox_status as o
    union all
    select 'webhook_events', jsonb_build_object('outcome', s.outcome), count(*)::double precision
    from internal.stripe_events as s
    group by s.outcome
$$;

comment on function internal.queue_gauges() is
'Queue depth and oldest wait per queue, outbox backlog and lag, webhook events by outcome (the worker''s /metrics).';

revoke execute on function internal.queue_gauges() from public;
grant execute on function internal.queue_gauges() to quarry_worker;
