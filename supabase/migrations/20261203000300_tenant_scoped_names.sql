-- Tenant-scoped names: whatever lives in a namespace that tenants share is
-- named from (tenant, document), never from a document id alone.
--
-- Document ids are unique per tenant only (the key is (tenant_id, id)), so a
-- tenant may hold a document whose id another tenant also uses.  Two shared
-- namespaces used that id bare: procrastinate's job locks (`document:<id>`,
-- `ingest:<id>`), where the second tenant's job waited on, or was refused
-- because of, the first's; and chunk ids, which are the index's point ids.
-- Locks now carry the tenant; a chunk id must be the UUIDv5 of
-- (tenant, document, ordinal), so no row can take a point id another tenant
-- holds, whatever id a caller offers.

create extension if not exists "uuid-ossp" with schema extensions;

-- function: internal.chunk_id

-- Definer so that the check below works for roles without access to the
-- extensions schema; it reads nothing.
create function internal.chunk_id(tenant uuid, document uuid, ordinal integer)
returns uuid
language sql
immutable
security definer
set search_path = ''
as $$
    select extensions.uuid_generate_v5(tenant, document::text || ':' || ordinal::text)
$$;

comment on function internal.chunk_id(uuid, uuid, integer) is
'A chunk''s id (and index point id): UUIDv5 of its document and ordinal in the tenant''s namespace.';

revoke execute on function internal.chunk_id(uuid, uuid, integer) from public;
grant execute on function internal.chunk_id(uuid, uuid, integer) to authenticated, service_role;

-- table: app.chunks (constraint)

-- NOT VALID: chunks written before this migration keep their ids until their
-- document is ingested again; every new row is checked.
alter table app.chunks
add constraint chunks_id_derived check (id = internal.chunk_id(tenant_id, document_id, ordinal)) not valid;

-- function: internal.document_job_lock

create function internal.document_job_lock(tenant uuid, document uuid)
returns text
language sql
immutable
set search_path = ''
as $$
    select 'document:' || tenant::text || ':' || document::text
$$;

comment on function internal.document_job_lock(uuid, uuid) is
'The queue lock every job on one document shares: one job on it runs at a time.';

revoke execute on function internal.document_job_lock(uuid, uuid) from public;

-- function: internal.enqueue_document_ingest (trigger on app.documents)

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
        internal.document_job_lock(new.tenant_id, new.id),
        'ingest:' || new.tenant_id::text || ':' || new.id::text
    );
    return null;
end
$$;

-- function: internal.fail_abandoned_documents

-- As before, with the tenant in the lock; a job queued before this migration
-- still carries the bare `document:<id>` lock and still counts.
create or replace function internal.fail_abandoned_documents(grace_seconds integer)
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
            where j.lock in (internal.document_job_lock(d.tenant_id, d.id), 'document:' || d.id::text)
                and j.status in ('todo', 'doing')
        );
    get diagnostics abandoned = row_count;
    return abandoned;
end
$$;
