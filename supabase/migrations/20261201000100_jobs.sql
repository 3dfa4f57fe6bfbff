-- Jobs: one way to defer a job from SQL.
--
-- internal.job_queue() names the queue of every task, once; internal.defer_job()
-- is the only place that inserts a job.  tests/py/worker/test_jobs.py checks
-- that every task deferred in SQL is registered by the worker with the same
-- queue.  Tasks are namespaced by domain (`documents:ingest`).

-- function: internal.job_queue

create function internal.job_queue(task_name text)
returns text
language sql
immutable
set search_path = ''
as $$
    select case task_name
        when 'documents:ingest' then 'ingest'
    end
$$;

comment on function internal.job_queue(text) is 'The queue of a worker task; null for a task that does not exist.';

revoke execute on function internal.job_queue(text) from public;

-- function: internal.defer_job

-- In the caller's transaction, so the job exists exactly when the change that
-- needs it commits.  The tenant's plan sets the priority; `lock_key` keeps one
-- run at a time, `queueing_lock_key` one waiting job.
create function internal.defer_job(
    task_name text, tenant uuid, args jsonb, lock_key text default null, queueing_lock_key text default null
)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    queue text := internal.job_queue(task_name);
    job_ids bigint[];
begin
    if queue is null then
        raise exception 'no worker task is named %', task_name using errcode = 'XX000';
    end if;
    job_ids := procrastinate.procrastinate_defer_jobs_v1(array[
        row(
            queue,
            task_name,
            (internal.tenant_plan(tenant)).queue_priority,
            lock_key,
            queueing_lock_key,
            args || jsonb_build_object('tenant_id', tenant),
            null
        )::procrastinate.procrastinate_job_to_defer_v1
    ]);
    return job_ids[1];
end
$$;

comment on function internal.defer_job(text, uuid, jsonb, text, text) is
'Defer a worker task for a tenant (its plan sets the priority); the one way jobs enter the queue.';

revoke execute on function internal.defer_job(text, uuid, jsonb, text, text) from public;

-- function: internal.enqueue_document_ingest (trigger on app.documents, as before)

create or replace function internal.enqueue_document_ingest()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform internal.defer_job(
        'documents:ingest',
        new.tenant_id,
        jsonb_build_object('document_id', new.id),
        'document:' || new.id::text,
        'ingest:' || new.id::text
    );
    return null;
end
$$;

-- data: jobs queued under the task's name from before namespaces

update procrastinate.procrastinate_jobs
set task_name = 'documents:ingest'
where task_name = 'ingest_document' and status in ('todo', 'doing');
