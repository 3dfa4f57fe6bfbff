-- Documents: the first tenant table; proves the tenancy pattern every later
-- table follows (tenant_id first, composite key, RLS enabled and forced,
-- policies to authenticated using (select auth.uid())).

-- types

create type app.document_status as enum ('queued', 'processing', 'indexing', 'ready', 'failed');
create type app.document_source as enum ('upload', 'drive');

-- tables

create table app.documents (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    title text not null,
    source app.document_source not null default 'upload',  -- noqa: RF04
    mime_type text,
    size_bytes bigint not null default 0,
    status app.document_status not null default 'queued',
    error_reason text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, id),
    constraint documents_title_length check (char_length(title) between 1 and 1024),
    constraint documents_size_not_negative check (size_bytes >= 0),
    constraint documents_failed_has_reason check ((status = 'failed') = (error_reason is not null))
);

comment on table app.documents is 'One uploaded or Drive-synced file of a tenant.';

-- grants

grant usage on type app.document_status, app.document_source to authenticated, service_role;
-- Column grants: created_at, updated_at and the lifecycle (status, error_reason)
-- are never supplied by an insert; tenant_id stays insertable so that RLS,
-- not a missing grant, is what stops a forged tenant.
grant select, delete on app.documents to authenticated;
grant insert (tenant_id, id, title, source, mime_type, size_bytes) on app.documents to authenticated;
grant update (title, mime_type, size_bytes, status, error_reason) on app.documents to authenticated;
grant select, insert, update, delete on app.documents to service_role;

-- RLS

alter table app.documents enable row level security;
alter table app.documents force row level security;

-- indexes

create index documents_tenant_created_idx on app.documents (tenant_id, created_at desc, id desc);

-- helpers

create function app.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end
$$;

create trigger documents_touch_updated_at
before update on app.documents
for each row execute function app.touch_updated_at();

-- policies

create policy documents_select_own on app.documents
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy documents_insert_own on app.documents
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy documents_update_own on app.documents
for update to authenticated
using (tenant_id = (select auth.uid()))
with check (tenant_id = (select auth.uid()));

create policy documents_delete_own on app.documents
for delete to authenticated
using (tenant_id = (select auth.uid()));

-- API (exposed to supabase-js; runs with the caller's privileges and RLS)

create view api.documents with (security_invoker = true) as
select
    id,
    title,
    source,  -- noqa: RF04
    mime_type,
    size_bytes,
    status,
    error_reason,
    created_at,
    updated_at
from app.documents;

grant select, delete on api.documents to authenticated;
grant select, delete on api.documents to service_role;
