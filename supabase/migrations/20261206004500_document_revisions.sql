-- Document revisions: a document whose source changed (a Drive file modified
-- in Drive) is ingested again in place.  It keeps its id; the new content has
-- passed the upload's checks (sniffed type, the plan's format, storage); its
-- old chunks stay searchable until the new ones are stored, which replaces
-- them in one transaction with the outbox entry (internal.store_document_text
-- … internal.finish_processing, as for any ingestion: the index follows
-- through the outbox); the file it replaces is deleted once nothing refers to
-- it.  A new version that cannot be processed fails the document: its old
-- chunks and text go in the transaction that fails it, and the index follows
-- through the outbox, so search never answers with what the source no longer
-- says (the error is the document's `error_reason`).
--
-- Each revision's file has its own key (documents/<tenant>/<id>-r<n>): a
-- worker still reading the old file never gets the new bytes under the old
-- type, and the old file is never overwritten.  app.blob_deletions lists the
-- files to delete: the ones replaced or left by deleted revised documents, and
-- a revision's file from the moment its number is drawn until its revision
-- commits (so a crash in between leaves no orphan).  The worker's periodic
-- maintenance:purge_blobs deletes them.
--
-- A revision is not a new document of the month; its size moves the storage
-- reservation like any size change (internal.meter_document_resize).  Only
-- importers revise (documents whose source is `drive`): an upload's new
-- version is a new upload.
--
-- Status: the ingest job fails a document through internal.fail_revision,
-- naming the revision it started: a job that started on an older revision
-- and fails after a newer one was put in place fails nothing (the newer one's
-- job runs next, under the same lock).  The new version's ingest job is
-- deferred by internal.queue_document_ingest, in the revising transaction.

-- table: app.documents (revision)

alter table app.documents
add column revision integer not null default 0,
add constraint documents_revision_not_negative check (revision >= 0),
drop constraint documents_blob_key_is_own,
add constraint documents_blob_key_is_own check (
    blob_key = 'documents/' || tenant_id || '/' || id || case when revision = 0 then '' else '-r' || revision end
);

comment on column app.documents.revision is
'How many times the document was ingested again in place (its source changed); names its stored file.';

-- table: app.blob_deletions

-- No foreign key to auth.users: files of an erased account are still deleted.
create table app.blob_deletions (
    tenant_id uuid not null,
    blob_key text not null,
    document_id uuid not null,
    revision integer not null,
    delete_after timestamptz not null default now(),
    created_at timestamptz not null default now(),
    primary key (tenant_id, blob_key),
    constraint blob_deletions_revision_not_negative check (revision >= 0),
    constraint blob_deletions_key_is_own check (
        blob_key
        = 'documents/' || tenant_id || '/' || document_id || case when revision = 0 then '' else '-r' || revision end
    )
);

comment on table app.blob_deletions is
'Stored files to delete once due and no document refers to them (replaced revisions, revisions never committed).';

grant select on app.blob_deletions to service_role;

alter table app.blob_deletions enable row level security;
alter table app.blob_deletions force row level security;

create policy blob_deletions_service on app.blob_deletions
for select to service_role
using (true);

create index blob_deletions_tenant_document_idx on app.blob_deletions (tenant_id, document_id, revision);

-- function: internal.revision_allowance

-- The storage a new version of the caller's document may take: what the plan
-- has left plus what the document holds now (the new version replaces it);
-- the storage 402 if `expected_bytes` cannot fit.  Advisory, like
-- internal.upload_allowance: the size update's trigger decides.
create function internal.revision_allowance(document uuid, expected_bytes bigint)
returns bigint
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    current_size bigint;
    tenant_plan app.plans;
    room bigint;
begin
    if tenant is null then
        raise sqlstate '42501' using message = 'revisions need a signed-in user';
    end if;
    select d.size_bytes into current_size from app.documents as d
    where d.tenant_id = tenant and d.id = document and d.source = 'drive';
    if not found then
        perform internal.raise_http(404, 'not-found', 'No such document.', '{}');
    end if;
    tenant_plan := internal.tenant_plan(tenant);
    room := tenant_plan.storage_bytes - internal.quota_used(tenant, 'storage_bytes') + current_size;
    if greatest(expected_bytes, 0) > room then
        perform internal.refuse_quota(tenant, tenant_plan, 'storage_bytes', greatest(expected_bytes, 0) - current_size);
    end if;
    return greatest(room, 0);
end
$$;

comment on function internal.revision_allowance(uuid, bigint) is
'Before a new version of a document is received: the storage 402 if it cannot fit, else the bytes it may take.';

revoke execute on function internal.revision_allowance(uuid, bigint) from public;
grant execute on function internal.revision_allowance(uuid, bigint) to authenticated;

-- function: internal.begin_document_revision

-- Draw the next revision of the caller's document (the document is locked
-- meanwhile, so two revisers never draw the same number) and list its file
-- for deletion in an hour, unless its revision commits first.  Answers the
-- revision, the bytes it may take, and the current content's SHA-256 and
-- type (a caller that receives the same content stores nothing).
create function internal.begin_document_revision(document uuid, expected_bytes bigint)
returns table (revision integer, allowance bigint, sha256 text, mime_type text)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    current app.documents;
    next_revision integer;
    room bigint;
begin
    room := internal.revision_allowance(document, expected_bytes);
    select d.* into current from app.documents as d
    where d.tenant_id = tenant and d.id = document
    for no key update;
    select greatest(current.revision, coalesce(max(b.revision), 0)) + 1 into next_revision
    from app.blob_deletions as b
    where b.tenant_id = tenant and b.document_id = document;
    insert into app.blob_deletions (tenant_id, blob_key, document_id, revision, delete_after)
    values (
        tenant, 'documents/' || tenant || '/' || document || '-r' || next_revision, document, next_revision,
        now() + interval '1 hour'
    );
    return query select next_revision, room, current.sha256, current.mime_type;
end
$$;

comment on function internal.begin_document_revision(uuid, bigint) is
'Draw the next revision of the caller''s Drive document: its number, the bytes it may take, the current content.';

revoke execute on function internal.begin_document_revision(uuid, bigint) from public;
grant execute on function internal.begin_document_revision(uuid, bigint) to authenticated;

-- function: internal.revise_document

-- The new version's file is stored under the drawn revision's key: the
-- document now names it (the plan's format is checked here, the storage by
-- the size update's trigger) and is queued for ingestion, its old chunks
-- untouched until the new ones are stored; the old file is listed for
-- deletion.  The same content (hash, type and size) only renames the
-- document.  A newer revision already in place: 409.
create function internal.revise_document(
    document uuid, new_revision integer, new_mime_type text, new_size bigint, new_sha256 text, new_title text
)
returns setof app.documents
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    current app.documents;
    new_key text := 'documents/' || tenant || '/' || document || '-r' || new_revision;
begin
    select d.* into current from app.documents as d
    where d.tenant_id = tenant and d.id = document and d.source = 'drive'
    for update;
    if not found then
        perform internal.raise_http(404, 'not-found', 'No such document.', '{}');
    end if;
    if current.revision >= new_revision then
        perform internal.raise_http(
            409, 'conflict', 'A newer version of this document is already in place.',
            jsonb_build_object('revision', current.revision)
        );
    end if;
    if current.sha256 = new_sha256 and current.mime_type = new_mime_type and current.size_bytes = new_size then
        -- Nothing to ingest: the drawn revision's file (if it was stored after all) is not needed.
        update app.blob_deletions as b set delete_after = now()
        where b.tenant_id = tenant and b.blob_key = new_key;
        return query update app.documents as d set title = new_title
        where d.tenant_id = tenant and d.id = document
        returning d.*;
        return;
    end if;
    perform internal.require_plan_format(internal.tenant_plan(tenant), new_mime_type);
    delete from app.blob_deletions as b where b.tenant_id = tenant and b.blob_key = new_key;
    insert into app.blob_deletions (tenant_id, blob_key, document_id, revision)
    values (tenant, current.blob_key, document, current.revision)
    on conflict on constraint blob_deletions_pkey do update set delete_after = now();
    update app.documents as d
    set
        title = new_title, mime_type = new_mime_type, size_bytes = new_size, sha256 = new_sha256,
        revision = new_revision, blob_key = new_key
    where d.tenant_id = tenant and d.id = document;
    -- Queued unless it still is (its waiting job takes the new revision: one waiting job per
    -- document).  A retry of its job may be waiting (it is `processing`): the job queued with
    -- the new status replaces it.
    if current.status <> 'queued' then
        delete from procrastinate.procrastinate_jobs as j
        where j.queueing_lock = 'ingest:' || tenant::text || ':' || document::text and j.status = 'todo';
        update app.documents as d set status = 'queued', error_reason = null
        where d.tenant_id = tenant and d.id = document;
        perform internal.queue_document_ingest(document);
    end if;
    perform internal.audit(
        tenant, 'document.revised', 'document', document,
        jsonb_build_object(
            'title', new_title, 'revision', new_revision, 'mime_type', new_mime_type, 'size_bytes', new_size
        )
    );
    return query select d.* from app.documents as d where d.tenant_id = tenant and d.id = document;
end
$$;

comment on function internal.revise_document(uuid, integer, text, bigint, text, text) is
'Put a new version (stored under the drawn revision) in place of the caller''s Drive document and queue its ingestion.';

revoke execute on function internal.revise_document(uuid, integer, text, bigint, text, text) from public;
grant execute on function internal.revise_document(uuid, integer, text, bigint, text, text) to authenticated;

-- function: internal.fail_revision

-- processing → failed(reason), if the document is still at the revision the
-- failing job started (a newer one put in place meanwhile is not the job's to fail).
create function internal.fail_revision(document uuid, started_revision integer, reason text)
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
    where d.tenant_id = tenant and d.id = document and d.status = 'processing' and d.revision = started_revision;
    if found and started_revision > 0 then
        perform pg_notify('quarry_outbox', '');  -- its old content leaves the index (internal.drop_failed_content)
    end if;
    return found;
end
$$;

comment on function internal.fail_revision(uuid, integer, text) is
'processing → failed(reason), unless another revision than the one the job started is in place.';

revoke execute on function internal.fail_revision(uuid, integer, text) from public;
grant execute on function internal.fail_revision(uuid, integer, text) to authenticated;

-- function: internal.drop_failed_content (trigger on app.documents)

-- A document that fails keeps no content: a revision's old chunks and text go
-- with the failure, and the index follows (an `indexed` change with no chunks
-- removes its points).  A first version has none to drop.
create function internal.drop_failed_content()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    dropped integer;
begin
    delete from app.chunks as c where c.tenant_id = new.tenant_id and c.document_id = new.id;
    get diagnostics dropped = row_count;
    delete from app.document_texts as t where t.tenant_id = new.tenant_id and t.document_id = new.id;
    new.page_count := null;
    new.chunk_count := null;
    new.char_count := null;
    if dropped > 0 then
        -- The relay is woken by the failing function, or finds it at its sweep (a trigger notifies nobody
        -- under Citus: the rows' shard is not where the relay listens).
        insert into app.outbox (tenant_id, document_id, kind) values (new.tenant_id, new.id, 'indexed');
    end if;
    return new;
end
$$;

revoke execute on function internal.drop_failed_content() from public;

create trigger documents_drop_failed_content
before update of status on app.documents
for each row
when (new.status = 'failed' and old.status <> 'failed' and new.revision > 0)
execute function internal.drop_failed_content();

-- function: internal.list_deleted_document_blob (trigger on app.documents)

-- A deleted revised document's file is deleted by the purge (the outbox
-- relay deletes the first revision's key, as before).
create function internal.list_deleted_document_blob()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into app.blob_deletions (tenant_id, blob_key, document_id, revision)
    values (old.tenant_id, old.blob_key, old.id, old.revision)
    on conflict on constraint blob_deletions_pkey do update set delete_after = now();
    return null;
end
$$;

revoke execute on function internal.list_deleted_document_blob() from public;

create trigger documents_list_deleted_blob
after delete on app.documents
for each row
when (old.revision > 0)
execute function internal.list_deleted_document_blob();

-- function: internal.due_blob_deletions

-- Files due for deletion that no document refers to (a row naming a current
-- file is dropped instead: it can never be due).
create function internal.due_blob_deletions(batch integer)
returns table (tenant_id uuid, blob_key text)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    delete from app.blob_deletions as b
    using app.documents as d
    where d.tenant_id = b.tenant_id and d.id = b.document_id and d.revision = b.revision;
    return query
    select b.tenant_id, b.blob_key from app.blob_deletions as b
    where b.delete_after <= now()
    order by b.delete_after
    limit batch;
end
$$;

comment on function internal.due_blob_deletions(integer) is
'Stored files due for deletion that no document refers to (the worker''s maintenance:purge_blobs).';

revoke execute on function internal.due_blob_deletions(integer) from public;
grant execute on function internal.due_blob_deletions(integer) to quarry_worker;

-- function: internal.blob_deletions_done

create function internal.blob_deletions_done(tenants uuid[], blob_keys text[])
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    done integer;
begin
    delete from app.blob_deletions as b
    using unnest(tenants, blob_keys) as k (tenant_id, blob_key)
    where b.tenant_id = k.tenant_id and b.blob_key = k.blob_key and b.delete_after <= now();
    get diagnostics done = row_count;
    return done;
end
$$;

comment on function internal.blob_deletions_done(uuid[], text[]) is 'Forget stored files that were deleted.';

revoke execute on function internal.blob_deletions_done(uuid[], text[]) from public;
grant execute on function internal.blob_deletions_done(uuid[], text[]) to quarry_worker;

-- function: internal.job_queue (the blob purge joins the maintenance queue)

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
    end
$$;
