-- Side effects that leave the tenant's rows happen outside triggers, and every
-- tenant statement in a SQL function names its tenant as a value (DESIGN §8).
--
-- Under Citus a trigger runs on the node that holds the row's shard, where
-- only the same tenant's rows (co-located) and reference tables are at hand:
-- it cannot defer a job (the queue lives on the coordinator) and its NOTIFY
-- reaches nobody (listeners are connected to the coordinator).  So:
--   * the ingest job of a new document is deferred by
--     internal.queue_document_ingest, which the creating transaction calls
--     right after its insert (the document flow does; a row left queued
--     without a job is failed by the abandoned-documents sweep, as before);
--   * the outbox row is still written by the trigger (same tenant, same
--     shard), but the relay is woken by the functions and services that make
--     the change (finish_processing, the Drive removals, the document
--     service's delete); any other path is picked up by the relay's sweep
--     (at most 5 s later);
--   * a revoked API key is announced by internal.revoke_api_key itself.
-- Statements on tenant tables compare tenant_id with a variable holding
-- auth.uid(), never with the call: a value is what routes a statement to one
-- shard (the call would be evaluated on every shard).

-- function: internal.queue_document_ingest

create function internal.queue_document_ingest(document uuid)
returns bigint
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    if tenant is null then
        raise sqlstate '42501' using message = 'documents are queued by a signed-in user';
    end if;
    if not exists (
        select from app.documents as d where d.tenant_id = tenant and d.id = document and d.status = 'queued'
    ) then
        perform internal.raise_http(
            409, 'conflict', 'Only a queued document of the caller can be queued for ingestion.',
            jsonb_build_object('document_id', document)
        );
    end if;
    return internal.defer_job(
        'documents:ingest',
        tenant,
        jsonb_build_object('document_id', document),
        internal.document_job_lock(tenant, document),
        'ingest:' || tenant::text || ':' || document::text
    );
end
$$;

comment on function internal.queue_document_ingest(uuid) is
'Defer the ingest job of the caller''s new (queued) document, in the transaction that created it.';

revoke execute on function internal.queue_document_ingest(uuid) from public;
grant execute on function internal.queue_document_ingest(uuid) to authenticated;

-- trigger: documents_enqueue_ingest (replaced by internal.queue_document_ingest)

drop trigger documents_enqueue_ingest on app.documents;
drop function internal.enqueue_document_ingest();

-- function: internal.record_document_change (trigger on app.documents: the outbox row only)

create or replace function internal.record_document_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op = 'DELETE' then
        insert into app.outbox (tenant_id, document_id, kind) values (old.tenant_id, old.id, 'deleted');
    else
        insert into app.outbox (tenant_id, document_id, kind) values (new.tenant_id, new.id, 'indexed');
    end if;
    return null;
end
$$;

-- triggers: api_keys_notify_revoke, api_keys_notify_delete (announced by revoke_api_key instead)

drop trigger api_keys_notify_revoke on app.api_keys;
drop trigger api_keys_notify_delete on app.api_keys;
drop function internal.notify_api_key_change();

-- function: internal.revoke_api_key (as before; announces the revocation to every gateway)

create or replace function internal.revoke_api_key(key_id uuid)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    was_revoked timestamptz;
begin
    select k.revoked_at into was_revoked from app.api_keys as k
    where k.tenant_id = tenant and k.id = key_id
    for update;
    if not found then
        perform internal.raise_http(404, 'not-found', 'No such API key.', '{}');
    end if;
    if was_revoked is null then
        update app.api_keys as k set revoked_at = now() where k.tenant_id = tenant and k.id = key_id;
        perform pg_notify('quarry_api_keys', key_id::text);
    end if;
end
$$;

-- function: internal.start_processing (as before, the tenant as a value)

create or replace function internal.start_processing(document uuid)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    started_type text;
begin
    update app.documents as d
    set status = 'processing', error_reason = null
    where d.tenant_id = tenant and d.id = document and d.status in ('queued', 'processing')
    returning coalesce(d.mime_type, '') into started_type;
    return started_type;
end
$$;

-- function: internal.finish_processing (as before; wakes the relay)

create or replace function internal.finish_processing(document uuid, pages integer, chunks integer, chars integer)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    stored_chunks integer;
    stored_chars integer;
begin
    select count(*) into stored_chunks from app.chunks as c where c.tenant_id = tenant and c.document_id = document;
    select char_length(t.text) into stored_chars
    from app.document_texts as t where t.tenant_id = tenant and t.document_id = document;
    update app.documents as d
    set status = 'indexing', page_count = pages, chunk_count = stored_chunks, char_count = stored_chars
    where d.tenant_id = tenant and d.id = document and d.status = 'processing';
    if not found then
        return false;
    end if;
    if stored_chunks is distinct from chunks or stored_chars is distinct from chars then
        raise warning 'document %: % chunk(s) and % character(s) stored, % and % reported',
            document, stored_chunks, stored_chars, chunks, chars;
    end if;
    perform pg_notify('quarry_outbox', '');
    return true;
end
$$;

-- function: internal.fail_processing (as before, the tenant as a value)

create or replace function internal.fail_processing(document uuid, reason text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.documents as d
    set status = 'failed', error_reason = left(coalesce(nullif(reason, ''), 'Processing failed.'), 500)
    where d.tenant_id = tenant and d.id = document and d.status in ('queued', 'processing');
    return found;
end
$$;

-- function: internal.fail_indexing (as before, the tenant as a value)

create or replace function internal.fail_indexing(document uuid, reason text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.documents as d
    set status = 'failed', error_reason = left(coalesce(nullif(reason, ''), 'Indexing failed.'), 500)
    where d.tenant_id = tenant and d.id = document and d.status = 'indexing';
    return found;
end
$$;

-- function: internal.complete_idempotency_key (as before, the tenant as a value)

create or replace function internal.complete_idempotency_key(
    key_hash text, response_status integer, response_body bytea, target_id uuid
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.idempotency_keys as k
    set
        response_status = complete_idempotency_key.response_status,
        response_body = complete_idempotency_key.response_body,
        target_id = complete_idempotency_key.target_id
    where
        k.tenant_id = tenant
        and k.key_hash = complete_idempotency_key.key_hash
        and k.response_status is null;
    return found;
end
$$;

-- function: internal.complete_query (as before, the tenant as a value)

create or replace function internal.complete_query(log_id uuid, results integer, elapsed_ms real)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.query_log as q set result_count = results, latency_ms = elapsed_ms
    where q.tenant_id = tenant and q.id = log_id and q.result_count is null;
end
$$;

-- function: internal.drive_checkpoint (as before, the tenant as a value)

create or replace function internal.drive_checkpoint(folder uuid, crawl_position jsonb, token text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    update app.drive_folders as f
    set checkpoint = crawl_position, page_token = coalesce(token, f.page_token), updated_at = now()
    where f.tenant_id = tenant and f.id = folder;
    return found;
end
$$;

-- function: internal.remove_drive_files (as before; wakes the relay for the deleted documents)

create or replace function internal.remove_drive_files(folder uuid, drive_files text[])
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    removed integer;
begin
    with gone as (
        delete from app.drive_files as m
        where m.tenant_id = tenant and m.folder_id = folder and m.file_id = any(drive_files)
        returning m.document_id, m.state
    ),

    documents as (
        delete from app.documents as d using gone as g
        where d.tenant_id = tenant and d.id = g.document_id
    )

    select count(*) filter (where g.state <> 'folder')::integer into removed from gone as g;
    if removed > 0 then
        perform pg_notify('quarry_outbox', '');
    end if;
    return removed;
end
$$;

-- function: internal.sweep_drive_files (as before, the tenant as a value)

create or replace function internal.sweep_drive_files(folder uuid, crawl uuid)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    return internal.remove_drive_files(
        folder,
        coalesce((
            select array_agg(m.file_id) from app.drive_files as m
            where m.tenant_id = tenant and m.folder_id = folder and m.seen_in is distinct from crawl
        ), '{}')
    );
end
$$;

-- function: internal.remove_drive_folder (as before; wakes the relay when documents go)

create or replace function internal.remove_drive_folder(folder uuid, keep_documents boolean)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    perform from app.drive_folders as f where f.tenant_id = tenant and f.id = folder for update;
    if not found then
        return false;
    end if;
    if not keep_documents then
        delete from app.documents as d using app.drive_files as m
        where d.tenant_id = tenant and m.tenant_id = tenant and m.folder_id = folder and d.id = m.document_id;
        if found then
            perform pg_notify('quarry_outbox', '');
        end if;
    end if;
    delete from app.drive_folders as f where f.tenant_id = tenant and f.id = folder;
    return true;
end
$$;

-- function: internal.fail_abandoned_documents (as before; the queue is read first, on its own)

-- The queue lives on the coordinator under Citus: the active locks are read
-- into a value, then the documents are updated without joining the queue.
create or replace function internal.fail_abandoned_documents(grace_seconds integer)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
    active_locks text[];
    abandoned integer;
begin
    select coalesce(array_agg(j.lock), '{}') into active_locks
    from procrastinate.procrastinate_jobs as j
    where j.lock like 'document:%' and j.status in ('todo', 'doing');
    update app.documents as d
    set status = 'failed', error_reason = 'Processing stopped unexpectedly; upload the file again.'
    where d.status in ('queued', 'processing')
        and d.updated_at <= now() - make_interval(secs => grace_seconds)
        and internal.document_job_lock(d.tenant_id, d.id) <> all(active_locks)
        and 'document:' || d.id::text <> all(active_locks);
    get diagnostics abandoned = row_count;
    return abandoned;
end
$$;

-- views: the API views the gateway and worker read carry tenant_id, so that
-- their statements can name the tenant as a value (appended: supabase-js
-- callers see one more column, their own id).

create or replace view api.documents with (security_invoker = true) as
select
    id,
    title,
    source,  -- noqa: RF04
    mime_type,
    size_bytes,
    status,
    error_reason,
    created_at,
    updated_at,
    page_count,
    chunk_count,
    ready_at,
    tenant_id
from app.documents;

create or replace view api.api_keys with (security_invoker = true) as
select
    k.id,
    k.name,
    'sk_live_' || k.lookup_id as prefix,  -- noqa: RF04
    k.last4,
    case
        when k.revoked_at is not null then 'revoked'
        when k.expires_at <= now() then 'expired'
        else 'active'
    end as status,
    k.created_at,
    k.expires_at,
    k.revoked_at,
    k.last_used_at,
    coalesce(w.requests, 0) as requests_this_hour,
    k.tenant_id
from app.api_keys as k
left join app.rate_limit_windows as w
    on
        k.tenant_id = w.tenant_id
        and k.id = w.subject_id
        and w.window_start = date_trunc('hour', app.clock(), 'UTC');

create or replace view api.drive_connection with (security_invoker = true) as
select
    id,
    status,  -- noqa: RF04
    scopes,
    created_at,
    updated_at,
    tenant_id
from app.drive_connections;

create or replace view api.drive_configs with (security_invoker = true) as
select
    id,
    google_folder_id,
    name,  -- noqa: RF04
    state,  -- noqa: RF04
    last_synced_at,
    files_seen,
    files_indexed,
    files_skipped,
    files_failed,
    last_error,
    created_at,
    updated_at,
    tenant_id
from app.drive_folders;

create or replace view api.drive_sync_runs with (security_invoker = true) as
select
    id,
    folder_id,
    state,  -- noqa: RF04
    full_crawl,
    files_seen,
    files_indexed,
    files_skipped,
    files_failed,
    files_removed,
    error,
    created_at,
    started_at,
    finished_at,
    tenant_id
from app.drive_sync_runs;

create or replace view api.drive_files with (security_invoker = true) as
select
    folder_id,
    file_id,
    state,  -- noqa: RF04
    name,  -- noqa: RF04
    mime_type,
    document_id,
    reason,
    updated_at,
    tenant_id
from app.drive_files
where state <> 'folder';

-- function: app.usage_of (api.usage's body, for a tenant given as a value)

-- Runs with the caller's privileges: RLS shows only the caller's own rows,
-- so for another tenant this answers Free with nothing used.
create function app.usage_of(tenant uuid)
returns table (
    limit_name text,
    used bigint,
    limit_value bigint,
    resets_at timestamptz,
    plan text,
    subscription_status app.subscription_status
)
language sql
stable
set search_path = ''
as $$
    with caller as (
        select
            p.*,
            app.clock() as now_at,
            (
                select s.status from app.subscriptions as s
                where s.tenant_id = tenant
            ) as subscription_status
        from app.plans as p
        where p.id = app.effective_plan(tenant)
    ),

    metered as (
        select
            q.quota,
            q.quota_limit,
            app.quota_period_start(q.quota, c.now_at) as current_period
        from caller as c
        cross join lateral (
            values
            ('documents_per_month'::app.quota, c.documents_per_month::bigint),
            ('storage_bytes', c.storage_bytes),
            ('drive_folders', c.drive_folders::bigint),
            ('queries_per_day', c.queries_per_day::bigint)
        ) as q (quota, quota_limit)
    )

    select
        m.quota::text as limit_name,
        coalesce(
            (
                select u.used from app.usage_counters as u
                where u.tenant_id = tenant and u.quota = m.quota and u.period_start = m.current_period
            ),
            0
        ) as used,
        m.quota_limit as limit_value,
        app.quota_resets_at(m.quota, m.current_period) as resets_at,
        c.id as plan,
        c.subscription_status
    from metered as m cross join caller as c
    union all
    select
        'exports' as limit_name,
        case when app.utc_add(e.period_start, c.export_interval) > c.now_at then 1 else 0 end as used,
        case when c.export_interval is not null then 1 end as limit_value,
        case
            when app.utc_add(e.period_start, c.export_interval) > c.now_at
                then app.utc_add(e.period_start, c.export_interval)
        end as resets_at,
        c.id as plan,
        c.subscription_status
    from caller as c
    left join app.usage_counters as e on e.tenant_id = tenant and e.quota = 'exports'
    union all
    select
        'requests_per_hour' as limit_name,
        coalesce(
            (
                select w.requests from app.rate_limit_windows as w
                where
                    w.tenant_id = tenant and w.subject_id = tenant
                    and w.window_start = date_trunc('hour', c.now_at, 'UTC')
            ),
            0
        ) as used,
        c.requests_per_hour as limit_value,
        date_trunc('hour', c.now_at, 'UTC') + interval '1 hour' as resets_at,
        c.id as plan,
        c.subscription_status
    from caller as c
$$;

comment on function app.usage_of(uuid) is
'Each limit of the tenant''s plan with its usage (api.usage for the caller; the gateway passes its tenant).';

revoke execute on function app.usage_of(uuid) from public;
grant execute on function app.usage_of(uuid) to authenticated;

-- view: api.usage (as before, through app.usage_of)

create or replace view api.usage with (security_invoker = true) as
select
    limit_name,
    used,
    limit_value,
    resets_at,
    plan,
    subscription_status
from app.usage_of(auth.uid());
