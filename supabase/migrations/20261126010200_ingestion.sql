-- Ingestion: what the worker records about a document, its chunks and their
-- vectors (Postgres is the source of truth; the vector index is rebuilt from
-- here), the job deferred with every new document, and the outbox that keeps
-- the vector index in step with any change, whichever path made it.

-- tables

alter table app.documents
add column blob_key text,
add column sha256 text,
add column page_count integer,
add column chunk_count integer,
add column char_count integer,
add column ready_at timestamptz,
add constraint documents_sha256_format check (sha256 ~ '^[0-9a-f]{64}$'),
-- The stored file is named by the row's own tenant and id, never by anything a
-- client chose, so no row can point the worker at another tenant's file.
add constraint documents_blob_key_is_own check (blob_key = 'documents/' || tenant_id || '/' || id),
add constraint documents_counts_not_negative check (
    coalesce(page_count, 0) >= 0 and coalesce(chunk_count, 0) >= 0 and coalesce(char_count, 0) >= 0
);

create table app.chunks (
    tenant_id uuid not null default auth.uid(),
    id uuid not null,
    document_id uuid not null,
    ordinal integer not null,
    text text not null,  -- noqa: RF04
    token_count integer not null,
    position jsonb not null default '{}',  -- noqa: RF04
    embedding_model text not null,
    dense real[] not null,
    sparse_indices integer[] not null,
    sparse_values real[] not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, id),
    constraint chunks_document_ordinal_key unique (tenant_id, document_id, ordinal),
    constraint chunks_document_fkey foreign key (tenant_id, document_id)
    references app.documents (tenant_id, id) on delete cascade,
    constraint chunks_ordinal_not_negative check (ordinal >= 0),
    constraint chunks_sparse_aligned check (
        cardinality(sparse_indices) = cardinality(sparse_values)
    ),
    constraint chunks_dense_not_empty check (cardinality(dense) > 0)
);

comment on table app.chunks is 'A token-bounded passage of a document with its dense and BM25 vectors.';

create table app.document_texts (
    tenant_id uuid not null default auth.uid(),
    document_id uuid not null,
    text text not null,  -- noqa: RF04
    primary key (tenant_id, document_id),
    constraint document_texts_document_fkey foreign key (tenant_id, document_id)
    references app.documents (tenant_id, id) on delete cascade
);

comment on table app.document_texts is 'The cleaned text extracted from a document (GET /api/documents/{id}/content).';

create table app.outbox (
    tenant_id uuid not null,
    id bigint generated always as identity,
    document_id uuid not null,
    kind text not null,
    created_at timestamptz not null default now(),
    attempts integer not null default 0,
    available_at timestamptz not null default now(),
    lease uuid,
    last_error text,
    primary key (tenant_id, id),
    constraint outbox_kind_known check (kind in ('indexed', 'deleted'))
);

comment on table app.outbox is
'Document changes not yet applied to the vector index; the relay applies and deletes them.';

-- grants

grant insert (blob_key, sha256) on app.documents to authenticated;
grant update (page_count, chunk_count, char_count) on app.documents to authenticated;
grant select, insert, delete on app.chunks to authenticated;
grant select, insert, update, delete on app.chunks to service_role;
grant select, insert, delete on app.document_texts to authenticated;
grant update (text) on app.document_texts to authenticated;
grant select, insert, update, delete on app.document_texts to service_role;
grant select on app.outbox to authenticated;
grant select on app.outbox to service_role;

-- RLS

alter table app.chunks enable row level security;
alter table app.chunks force row level security;
alter table app.document_texts enable row level security;
alter table app.document_texts force row level security;
alter table app.outbox enable row level security;
alter table app.outbox force row level security;

-- indexes

create index outbox_tenant_document_idx on app.outbox (tenant_id, document_id, id);
create index documents_unfinished_idx on app.documents (tenant_id, updated_at)
where status in ('queued', 'processing');

-- helpers

-- Defer the ingest job in the transaction that creates (or re-queues) the
-- document, so there is never a row without a job or a job without a row.
-- Paid plans get a higher priority; the job's lock keeps one run per document.
create function internal.enqueue_document_ingest()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    plan text := app.effective_plan(new.tenant_id);
begin
    perform procrastinate.procrastinate_defer_jobs_v1(array[
        row(
            'ingest',
            'ingest_document',
            case plan when 'enterprise' then 20 when 'pro' then 10 else 0 end,
            'document:' || new.id::text,
            'ingest:' || new.id::text,
            jsonb_build_object('tenant_id', new.tenant_id, 'document_id', new.id),
            null
        )::procrastinate.procrastinate_job_to_defer_v1
    ]);
    return null;
end
$$;

-- Record that the index must follow a document: its chunks are ready to be
-- indexed, or it is gone (its points and blob must go too).
create function internal.record_document_change()
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
    perform pg_notify('quarry_outbox', '');
    return null;
end
$$;

revoke execute on function internal.enqueue_document_ingest() from public;
revoke execute on function internal.record_document_change() from public;

create trigger documents_enqueue_ingest
after insert or update of status on app.documents
for each row
when (new.status = 'queued')
execute function internal.enqueue_document_ingest();

create trigger documents_record_indexing
after update of status on app.documents
for each row
when (new.status = 'indexing' and old.status is distinct from 'indexing')
execute function internal.record_document_change();

create trigger documents_record_delete
after delete on app.documents
for each row
execute function internal.record_document_change();

-- policies

create policy chunks_select_own on app.chunks
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy chunks_insert_own on app.chunks
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy chunks_delete_own on app.chunks
for delete to authenticated
using (tenant_id = (select auth.uid()));

create policy document_texts_select_own on app.document_texts
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy document_texts_insert_own on app.document_texts
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy document_texts_update_own on app.document_texts
for update to authenticated
using (tenant_id = (select auth.uid()))
with check (tenant_id = (select auth.uid()));

create policy document_texts_delete_own on app.document_texts
for delete to authenticated
using (tenant_id = (select auth.uid()));

create policy outbox_select_own on app.outbox
for select to authenticated
using (tenant_id = (select auth.uid()));

-- relay functions (callable by the processes that host the relay only)

-- Lease the oldest pending change of up to `batch` documents.  Only the
-- oldest entry of a document can be leased, so two relays never work on the
-- same document at once; `up_to_id` covers the entries already waiting; the
-- returned lease token proves, at completion, that nobody took over meanwhile.
create function internal.outbox_claim(batch integer, lease_seconds integer)
returns table (tenant_id uuid, document_id uuid, up_to_id bigint, attempts integer, lease uuid)
language plpgsql
security definer
set search_path = ''
as $$
begin
    return query
    with heads as (
        select distinct on (o.tenant_id, o.document_id) o.tenant_id, o.id
        from app.outbox as o
        order by o.tenant_id, o.document_id, o.id
    ),

    due as (
        select o.tenant_id, o.id
        from app.outbox as o
        inner join heads as h on o.tenant_id = h.tenant_id and o.id = h.id
        where o.available_at <= now()
        order by o.id
        limit batch
        for update of o skip locked
    )

    update app.outbox as o
    set
        available_at = now() + make_interval(secs => lease_seconds),
        attempts = o.attempts + 1,
        lease = gen_random_uuid()
    from due
    where o.tenant_id = due.tenant_id and o.id = due.id
    returning
        o.tenant_id,
        o.document_id,
        (
            select max(x.id) from app.outbox as x
            where x.tenant_id = o.tenant_id and x.document_id = o.document_id
        ),
        o.attempts,
        o.lease;
end
$$;

-- The index now matches the document: drop its applied entries and, if it
-- was waiting for the index, it is ready.  If the lease was lost (it expired
-- and another relay took the document over), what this relay wrote may be
-- stale: nothing is completed and a new change is recorded, so the document
-- is synced once more.  Returns whether the change was completed.
create function internal.outbox_complete(tenant uuid, document uuid, up_to_id bigint, held_lease uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform from app.outbox as o
    where o.tenant_id = tenant and o.document_id = document and o.lease = held_lease
    for update;
    if not found then
        insert into app.outbox (tenant_id, document_id, kind) values (tenant, document, 'indexed');
        perform pg_notify('quarry_outbox', '');
        return false;
    end if;
    delete from app.outbox as o
    where o.tenant_id = tenant and o.document_id = document and o.id <= up_to_id;
    update app.documents as d
    set status = 'ready', ready_at = now()
    where d.tenant_id = tenant and d.id = document and d.status = 'indexing';
    return true;
end
$$;

-- Applying failed (index down, storage down): try again after a delay.
create function internal.outbox_retry_later(
    tenant uuid, document uuid, held_lease uuid, error text, delay_seconds integer
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
    update app.outbox as o
    set available_at = now() + make_interval(secs => delay_seconds), last_error = left(error, 2000)
    where o.tenant_id = tenant and o.document_id = document and o.lease = held_lease;
end
$$;

-- Documents left queued or processing with no job that will ever run them
-- (a job that failed outright, or was lost) fail with a reason instead of
-- hanging.  The worker calls this periodically.
create function internal.fail_abandoned_documents(grace_seconds integer)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
    abandoned integer;
begin
    update app.documents as d
    set status = 'failed', error_reason = 'Processing stopped unexpectedly; upload the file again.'
    where d.status in ('queued', 'processing')
        and d.updated_at <= now() - make_interval(secs => grace_seconds)
        and not exists (
            select from procrastinate.procrastinate_jobs as j
            where j.lock = 'document:' || d.id::text and j.status in ('todo', 'doing')
        );
    get diagnostics abandoned = row_count;
    return abandoned;
end
$$;

revoke execute on function internal.fail_abandoned_documents(integer) from public;
grant execute on function internal.fail_abandoned_documents(integer) to quarry_worker;

revoke execute on function internal.outbox_claim(integer, integer) from public;
revoke execute on function internal.outbox_complete(uuid, uuid, bigint, uuid) from public;
revoke execute on function internal.outbox_retry_later(uuid, uuid, uuid, text, integer) from public;
grant execute on function internal.outbox_claim(integer, integer) to quarry_gateway, quarry_worker;
grant execute on function internal.outbox_complete(uuid, uuid, bigint, uuid) to quarry_gateway, quarry_worker;
grant execute on function internal.outbox_retry_later(uuid, uuid, uuid, text, integer) to quarry_gateway, quarry_worker;

-- operator views (Supabase Studio)

create view ops.outbox_status as
select
    count(*) as pending,
    min(created_at) as oldest_change_at,
    coalesce(extract(epoch from now() - min(created_at)), 0) as lag_seconds,
    count(*) filter (where last_error is not null) as failing,
    coalesce(max(attempts), 0) as max_attempts
from app.outbox;

create view ops.outbox_failures as
select
    tenant_id,
    document_id,
    id,
    kind,
    attempts,
    available_at as next_attempt_at,
    last_error,
    created_at
from app.outbox
where last_error is not null;

create view ops.documents_by_status as
select
    status,
    count(*) as documents,
    coalesce(sum(chunk_count), 0) as chunks
from app.documents
group by status;

-- API (exposed to supabase-js)

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
    ready_at
from app.documents;
