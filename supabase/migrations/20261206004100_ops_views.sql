-- Operator views for Supabase Studio (schema ops: no API role can read it;
-- Studio connects as postgres).  Together with the earlier ones
-- (ops.outbox_status: the outbox lag; ops.outbox_failures;
-- ops.documents_by_status; ops.stripe_event_failures: webhook failures;
-- ops.stripe_events_by_outcome; ops.unknown_stripe_prices) they answer:
-- what waits in which queue for which plan, which jobs failed and why, what
-- each tenant uses, which Drive folders fail to sync, and which searches
-- were slowest in the last hour.  Ids and counts only: no document text, no
-- search text, no token.

-- view: ops.job_queues

create view ops.job_queues as
select
    j.queue_name,
    coalesce(app.effective_plan((j.args ->> 'tenant_id')::uuid), '-') as plan,
    j.priority,
    j.status,
    count(*) as jobs,
    min(e.at) as oldest_queued_at,
    coalesce(extract(epoch from now() - min(e.at)), 0) as oldest_wait_seconds
from procrastinate.procrastinate_jobs as j
left join procrastinate.procrastinate_events as e on j.id = e.job_id and e.type = 'deferred'
where j.status in ('todo', 'doing')
group by j.queue_name, app.effective_plan((j.args ->> 'tenant_id')::uuid), j.priority, j.status;

comment on view ops.job_queues is
'Waiting (todo) and running (doing) jobs per queue, tenant plan and priority, with the oldest''s wait; "-": no tenant.';

-- view: ops.failed_jobs

create view ops.failed_jobs as
select
    j.id as job_id,
    j.task_name,
    j.queue_name,
    (j.args ->> 'tenant_id')::uuid as tenant_id,
    j.args ->> 'request_id' as request_id,
    j.attempts,
    coalesce(f.error, 'no reason recorded (an older job, or its worker was killed)') as reason,
    coalesce(f.failed_at, e.failed_at) as failed_at
from procrastinate.procrastinate_jobs as j
left join lateral (
    select
        x.error,
        x.failed_at
    from internal.job_failures as x
    where x.job_id = j.id
    order by x.attempt desc
    limit 1
) as f on true
left join lateral (
    select max(y.at) as failed_at
    from procrastinate.procrastinate_events as y
    where y.job_id = j.id and y.type = 'failed'
) as e on true
where j.status = 'failed';

comment on view ops.failed_jobs is
'Jobs that failed for good: the last attempt''s reason (internal.job_failures), the request that deferred them.';

-- view: ops.tenant_usage

create view ops.tenant_usage as
select
    u.id as tenant_id,
    app.effective_plan(u.id) as plan,
    (
        select count(*) from app.documents as d
        where d.tenant_id = u.id
    ) as documents,
    internal.quota_used(u.id, 'storage_bytes') as storage_bytes,
    internal.quota_used(u.id, 'documents_per_month') as documents_this_month,
    internal.quota_used(u.id, 'queries_per_day') as queries_today,
    internal.quota_used(u.id, 'drive_folders') as drive_folders,
    coalesce(
        (
            select w.requests from app.rate_limit_windows as w
            where
                w.tenant_id = u.id and w.subject_id = u.id
                and w.window_start = date_trunc('hour', app.clock(), 'UTC')
        ),
        0
    ) as requests_this_hour,
    (
        select count(*) from procrastinate.procrastinate_jobs as j
        where j.status in ('todo', 'doing') and j.args ->> 'tenant_id' = u.id::text
    ) as jobs_in_queue
from auth.users as u;

comment on view ops.tenant_usage is
'Per tenant: plan, documents, storage, uploads this month, queries today, Drive folders, requests this hour, jobs.';

-- view: ops.drive_sync_errors

create view ops.drive_sync_errors as
select
    f.tenant_id,
    f.id as folder_id,
    f.state::text as folder_state,
    c.status::text as connection_status,
    f.last_error,
    f.files_failed,
    r.id as last_failed_run_id,
    r.error as last_failed_run_error,
    r.finished_at as last_failed_run_at,
    f.last_synced_at,
    f.updated_at
from app.drive_folders as f
left join app.drive_connections as c on f.tenant_id = c.tenant_id
left join lateral (
    select
        x.id,
        x.error,
        x.finished_at
    from app.drive_sync_runs as x
    where x.tenant_id = f.tenant_id and x.folder_id = f.id and x.state = 'failed'
    order by x.finished_at desc nulls last
    limit 1
) as r on true
where
    f.state = 'error' or f.last_error is not null or f.files_failed > 0
    or c.status = 'needs_reauth' or r.finished_at > now() - interval '7 days';

comment on view ops.drive_sync_errors is
'Drive folders whose sync fails: state, last error, failed files, the connection (needs_reauth), the last failed run.';

-- view: ops.slow_queries

create view ops.slow_queries as
select
    q.tenant_id,
    q.id as query_id,
    q.mode,
    q.result_count,
    q.latency_ms,
    char_length(q.query) as query_chars,
    q.api_key_id is not null as by_api_key,
    q.created_at
from app.query_log as q
where q.created_at > now() - interval '1 hour' and q.latency_ms is not null
order by q.latency_ms desc
limit 100;

comment on view ops.slow_queries is
'The 100 slowest searches of the last hour (latency as the gateway measured it; not the search text).';
