-- The export and account jobs' base queues, and what operators see of them.
--
-- Their jobs are deferred through internal.defer_job like every task, so the
-- plan's job pool and priority apply (an Enterprise tenant's export builds in
-- `enterprise.exports`, its deletion in `enterprise.account`), and they show
-- in the ops views of every job (20261206004100_ops_views): ops.job_queues
-- (waiting and running, per queue and plan) and ops.failed_jobs (failed for
-- good, with the reason).  Added here: ops.job_durations (how long each
-- task's finished runs took, from procrastinate's own events; the worker's
-- /metrics has the same as a histogram), exports by status and the accounts
-- being erased.

-- function: internal.job_queue (004500's body, with the export and account jobs' queues)

create or replace function internal.job_queue(task_name text)
returns text
language sql
immutable
set search_path = ''
as $$
    select case task_name
        when 'documents:ingest' then 'ingest'
        when 'maintenance:purge_idempotency_keys' then 'maintenance'
        when 'maintenance:purge_revoked_api_keys' then 'maintenance'
        when 'maintenance:purge_blobs' then 'maintenance'
        when 'billing:reconcile' then 'maintenance'
        when 'drive:sync' then 'drive'
        when 'drive:schedule' then 'maintenance'
        when 'exports:build' then 'exports'
        when 'exports:expire' then 'maintenance'
        when 'account:delete' then 'account'
        when 'account:resume' then 'maintenance'
    end
$$;

-- operator views (Supabase Studio)

create view ops.account_deletions as
select
    d.tenant_id,
    d.state,
    (select array_agg(s.key order by s.value) from jsonb_each_text(d.steps) as s) as steps_done,
    d.attempts,
    d.last_error,
    d.requested_at,
    d.started_at,
    d.updated_at
from app.account_deletions as d;

comment on view ops.account_deletions is 'Accounts being erased: steps done, attempts, the last error (no email).';

create view ops.exports as
select
    status,  -- noqa: RF04
    count(*) as exports,
    coalesce(sum(size_bytes), 0) as bytes,
    max(created_at) as last_requested_at
from app.export_requests
group by status;

comment on view ops.exports is 'Exports by status, with the bytes their archives hold.';

create view ops.job_durations as
with runs as (
    select
        j.task_name,
        j.status,
        (
            select max(e.at) from procrastinate.procrastinate_events as e
            where e.job_id = j.id and e.type = 'started'
        ) as started_at,
        (
            select max(e.at) from procrastinate.procrastinate_events as e
            where e.job_id = j.id and e.type in ('succeeded', 'failed')
        ) as ended_at
    from procrastinate.procrastinate_jobs as j
    where j.status in ('succeeded', 'failed')
)

select
    task_name,
    count(*) as runs,
    count(*) filter (where status = 'failed') as failed,
    percentile_cont(0.5) within group (order by extract(epoch from ended_at - started_at)) as p50_seconds,
    percentile_cont(0.95) within group (order by extract(epoch from ended_at - started_at)) as p95_seconds,
    max(extract(epoch from ended_at - started_at)) as max_seconds
from runs
where started_at is not null and ended_at is not null
group by task_name;

comment on view ops.job_durations is 'How long each task''s finished runs took (their last attempt), p50/p95/max.';
