-- Google Drive folder syncs (DESIGN §5): the folders a tenant syncs, their
-- sync runs and the map from Drive files to documents.
--
-- The rules kept here: a folder syncs one run at a time; a Drive file maps to
-- at most one document per (tenant, folder, file id); a sync's state, counts,
-- checkpoint and map change only through the functions below (acting on the
-- caller's own folder); what leaves a folder's tree takes its document along.

-- table: app.drive_folders (the stub gains its sync state)

alter table app.drive_folders
add column state app.drive_folder_state not null default 'idle',
add column page_token text,
add column last_synced_at timestamptz,
add column files_seen integer not null default 0,
add column files_indexed integer not null default 0,
add column files_skipped integer not null default 0,
add column files_failed integer not null default 0,
add column last_error text,
add column checkpoint jsonb,
add column updated_at timestamptz not null default now();

-- table: app.drive_sync_runs

create table app.drive_sync_runs (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    folder_id uuid not null,
    state app.drive_run_state not null default 'queued',
    full_crawl boolean,
    files_seen integer not null default 0,
    files_indexed integer not null default 0,
    files_skipped integer not null default 0,
    files_failed integer not null default 0,
    files_removed integer not null default 0,
    error text,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    primary key (tenant_id, id),
    foreign key (tenant_id, folder_id) references app.drive_folders (tenant_id, id) on delete cascade
);

comment on table app.drive_sync_runs is 'One sync of one Drive folder: its state and what it saw, indexed, skipped.';

grant select on app.drive_sync_runs to authenticated;
grant select on app.drive_sync_runs to service_role;

alter table app.drive_sync_runs enable row level security;
alter table app.drive_sync_runs force row level security;

create policy drive_sync_runs_select_own on app.drive_sync_runs
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_sync_runs_service on app.drive_sync_runs
for select to service_role
using (true);

create index drive_sync_runs_tenant_folder_idx on app.drive_sync_runs (tenant_id, folder_id, created_at desc);
-- One queued or running run per folder.
create unique index drive_sync_runs_one_active_idx on app.drive_sync_runs (tenant_id, folder_id)
where state in ('queued', 'running');

-- table: app.drive_files

create table app.drive_files (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    folder_id uuid not null,
    file_id text not null,
    state app.drive_file_state not null,
    name text not null,  -- noqa: RF04
    mime_type text not null,
    parents text[] not null default '{}',
    version text,  -- noqa: RF04
    document_id uuid,
    reason text,
    seen_in uuid,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, folder_id, file_id),
    foreign key (tenant_id, folder_id) references app.drive_folders (tenant_id, id) on delete cascade,
    foreign key (tenant_id, document_id) references app.documents (tenant_id, id) on delete set null (document_id),
    constraint drive_files_file_id_length check (char_length(file_id) between 1 and 256),
    constraint drive_files_skipped_has_reason check ((state in ('skipped', 'failed')) = (reason is not null))
);

comment on table app.drive_files is
'What a sync saw in a folder''s tree: its subfolders, and each file''s document or the reason it has none.';

grant select on app.drive_files to authenticated;
grant select on app.drive_files to service_role;

alter table app.drive_files enable row level security;
alter table app.drive_files force row level security;

create policy drive_files_select_own on app.drive_files
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_files_service on app.drive_files
for select to service_role
using (true);

create index drive_files_tenant_document_idx on app.drive_files (tenant_id, document_id);
create index drive_files_tenant_folder_state_idx on app.drive_files (tenant_id, folder_id, state);

-- function: internal.trigger_drive_sync

-- One run per folder at a time: a second trigger answers the queued or running one.
create function internal.trigger_drive_sync(folder uuid)
returns setof app.drive_sync_runs
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    connection_status app.drive_connection_status;
    run app.drive_sync_runs;
begin
    perform from app.drive_folders as f where f.tenant_id = tenant and f.id = folder for update;
    if not found then
        perform internal.raise_http(404, 'not-found', 'No such Drive folder.', '{}');
    end if;
    select c.status into connection_status from app.drive_connections as c where c.tenant_id = tenant;
    if connection_status is distinct from 'active' then
        perform internal.raise_http(
            409, 'drive-needs-reauth', 'Google Drive is not connected (or needs a new consent); connect it again.', '{}'
        );
    end if;
    select r.* into run from app.drive_sync_runs as r
    where r.tenant_id = tenant and r.folder_id = folder and r.state in ('queued', 'running');
    if found then
        return next run;
        return;
    end if;
    insert into app.drive_sync_runs (tenant_id, folder_id) values (tenant, folder) returning * into run;
    perform internal.defer_job(
        'drive:sync', tenant, jsonb_build_object('folder_id', folder, 'run_id', run.id),
        'drive-folder:' || folder::text, 'drive-sync:' || folder::text
    );
    return next run;
end
$$;

comment on function internal.trigger_drive_sync(uuid) is
'Queue a sync of one of the caller''s Drive folders, or answer the run already queued or running.';

revoke execute on function internal.trigger_drive_sync(uuid) from public;
grant execute on function internal.trigger_drive_sync(uuid) to authenticated;

-- function: internal.schedule_drive_syncs

-- The periodic sync: folders not synced for `every` (and those stopped by the
-- quota, retried as often) get a run, unless one is queued or running.
create function internal.schedule_drive_syncs(every interval)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    due record;
    run_id uuid;
    queued integer := 0;
begin
    for due in
        select f.tenant_id, f.id from app.drive_folders as f
        inner join app.drive_connections as c on c.tenant_id = f.tenant_id and c.status = 'active'
        where
            f.state in ('idle', 'ready', 'quota_reached', 'error')
            and coalesce(f.last_synced_at, f.created_at) < now() - every
            and f.updated_at < now() - every
            and not exists (
                select from app.drive_sync_runs as r
                where r.tenant_id = f.tenant_id and r.folder_id = f.id and r.state in ('queued', 'running')
            )
        limit 1000
    loop
        insert into app.drive_sync_runs (tenant_id, folder_id) values (due.tenant_id, due.id)
        returning id into run_id;
        perform internal.defer_job(
            'drive:sync', due.tenant_id, jsonb_build_object('folder_id', due.id, 'run_id', run_id),
            'drive-folder:' || due.id::text, 'drive-sync:' || due.id::text
        );
        queued := queued + 1;
    end loop;
    return queued;
end
$$;

comment on function internal.schedule_drive_syncs(interval) is
'Queue a sync run for every Drive folder not synced within the interval (the worker''s periodic task).';

revoke execute on function internal.schedule_drive_syncs(interval) from public;
grant execute on function internal.schedule_drive_syncs(interval) to quarry_worker;

-- function: internal.drive_run_progress

-- The worker reports a run's state and counts; a finished run also sets its folder's.
create function internal.drive_run_progress(
    run uuid, run_state app.drive_run_state, counts integer[], message text, crawl_full boolean
)
returns app.drive_folder_state
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    folder uuid;
    new_folder_state app.drive_folder_state;
begin
    update app.drive_sync_runs as r
    set
        state = run_state,
        full_crawl = coalesce(crawl_full, r.full_crawl),
        files_seen = counts[1], files_indexed = counts[2], files_skipped = counts[3],
        files_failed = counts[4], files_removed = counts[5],
        error = message,
        started_at = coalesce(r.started_at, now()),
        finished_at = case when run_state in ('queued', 'running') then null else now() end
    where r.tenant_id = tenant and r.id = run and r.state in ('queued', 'running')
    returning r.folder_id into folder;
    if folder is null then
        return null;
    end if;
    new_folder_state := (case run_state
        when 'running' then 'syncing'
        when 'succeeded' then 'ready'
        when 'quota_reached' then 'quota_reached'
        when 'paused' then 'paused'
        when 'failed' then 'error'
        else 'idle'
    end)::app.drive_folder_state;
    update app.drive_folders as f
    set
        state = new_folder_state,
        last_error = case when run_state in ('running', 'queued') then f.last_error else message end,
        last_synced_at = case when run_state = 'succeeded' then now() else f.last_synced_at end,
        files_seen = s.seen, files_indexed = s.indexed, files_skipped = s.skipped, files_failed = s.failed,
        updated_at = now()
    from (
        select
            count(*) filter (where d.state <> 'folder')::integer as seen,
            count(*) filter (where d.state = 'indexed')::integer as indexed,
            count(*) filter (where d.state = 'skipped')::integer as skipped,
            count(*) filter (where d.state = 'failed')::integer as failed
        from app.drive_files as d where d.tenant_id = tenant and d.folder_id = folder
    ) as s
    where f.tenant_id = tenant and f.id = folder;
    return new_folder_state;
end
$$;

comment on function internal.drive_run_progress(uuid, app.drive_run_state, integer[], text, boolean) is
'Record a sync run''s state and counts (seen, indexed, skipped, failed, removed) and its folder''s.';

revoke execute on function internal.drive_run_progress(uuid, app.drive_run_state, integer[], text, boolean)
from public;
grant execute on function internal.drive_run_progress(uuid, app.drive_run_state, integer[], text, boolean)
to authenticated;

-- function: internal.drive_checkpoint

-- The crawl's position (committed per page) and, once a crawl or a changes page is applied, the page token.
create function internal.drive_checkpoint(folder uuid, crawl_position jsonb, token text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.drive_folders as f
    set checkpoint = crawl_position, page_token = coalesce(token, f.page_token), updated_at = now()
    where f.tenant_id = auth.uid() and f.id = folder;
    return found;
end
$$;

comment on function internal.drive_checkpoint(uuid, jsonb, text) is
'Save a Drive folder''s crawl position and (when given) its Changes page token.';

revoke execute on function internal.drive_checkpoint(uuid, jsonb, text) from public;
grant execute on function internal.drive_checkpoint(uuid, jsonb, text) to authenticated;

-- function: internal.put_drive_file

create function internal.put_drive_file(
    folder uuid, drive_file text, file_state app.drive_file_state, file_name text, file_mime text,
    file_parents text[], file_version text, doc_id uuid, skip_reason text, crawl uuid
)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    if doc_id is not null and not exists (
        select from app.documents as d where d.tenant_id = tenant and d.id = doc_id and d.source = 'drive'
    ) then
        perform internal.raise_http(404, 'not-found', 'No such Drive document.', '{}');
    end if;
    insert into app.drive_files as m (
        tenant_id, folder_id, file_id, state, name, mime_type, parents, version, document_id, reason, seen_in
    )
    values (
        tenant, folder, drive_file, file_state, left(file_name, 1024), file_mime, file_parents, file_version,
        doc_id, skip_reason, crawl
    )
    on conflict (tenant_id, folder_id, file_id) do update
    set
        state = excluded.state, name = excluded.name, mime_type = excluded.mime_type, parents = excluded.parents,
        version = excluded.version, document_id = excluded.document_id, reason = excluded.reason,
        seen_in = coalesce(excluded.seen_in, m.seen_in), updated_at = now();
end
$$;

comment on function internal.put_drive_file(
    uuid, text, app.drive_file_state, text, text, text[], text, uuid, text, uuid
) is 'Record what a sync made of one Drive file (or subfolder) of one of the caller''s folders.';

revoke execute on function internal.put_drive_file(
    uuid, text, app.drive_file_state, text, text, text[], text, uuid, text, uuid
) from public;
grant execute on function internal.put_drive_file(
    uuid, text, app.drive_file_state, text, text, text[], text, uuid, text, uuid
) to authenticated;

-- function: internal.remove_drive_files

-- Files gone from the folder's tree: their map rows and their documents.
create function internal.remove_drive_files(folder uuid, drive_files text[])
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
    return removed;
end
$$;

comment on function internal.remove_drive_files(uuid, text[]) is
'Forget Drive files that left one of the caller''s folders, deleting their documents.';

revoke execute on function internal.remove_drive_files(uuid, text[]) from public;
grant execute on function internal.remove_drive_files(uuid, text[]) to authenticated;

-- function: internal.sweep_drive_files

-- After a complete crawl (a listing that hit an error never gets here): what it did not see is gone.
create function internal.sweep_drive_files(folder uuid, crawl uuid)
returns integer
language sql
volatile
security definer
set search_path = ''
as $$
    select internal.remove_drive_files(
        folder,
        coalesce((
            select array_agg(m.file_id) from app.drive_files as m
            where m.tenant_id = auth.uid() and m.folder_id = folder and m.seen_in is distinct from crawl
        ), '{}')
    )
$$;

comment on function internal.sweep_drive_files(uuid, uuid) is
'Forget the Drive files of one of the caller''s folders that a complete crawl did not see, deleting their documents.';

revoke execute on function internal.sweep_drive_files(uuid, uuid) from public;
grant execute on function internal.sweep_drive_files(uuid, uuid) to authenticated;

-- function: internal.remove_drive_folder

create function internal.remove_drive_folder(folder uuid, keep_documents boolean)
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
    end if;
    delete from app.drive_folders as f where f.tenant_id = tenant and f.id = folder;
    return true;
end
$$;

comment on function internal.remove_drive_folder(uuid, boolean) is
'Stop syncing one of the caller''s Drive folders, deleting its documents unless asked to keep them.';

revoke execute on function internal.remove_drive_folder(uuid, boolean) from public;
grant execute on function internal.remove_drive_folder(uuid, boolean) to authenticated;

-- function: internal.job_queue (the Drive sync's queue)

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
        when 'billing:reconcile' then 'maintenance'
        when 'drive:sync' then 'drive'
        when 'drive:schedule' then 'maintenance'
    end
$$;

-- API (exposed to supabase-js; the caller's privileges and RLS)

create view api.drive_configs with (security_invoker = true) as
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
    updated_at
from app.drive_folders;

comment on view api.drive_configs is 'The caller''s synced Drive folders: state, last sync, counts, last error.';

grant select on api.drive_configs to authenticated, service_role;

create view api.drive_sync_runs with (security_invoker = true) as
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
    finished_at
from app.drive_sync_runs;

comment on view api.drive_sync_runs is 'The caller''s Drive sync runs.';

grant select on api.drive_sync_runs to authenticated, service_role;

create view api.drive_files with (security_invoker = true) as
select
    folder_id,
    file_id,
    state,  -- noqa: RF04
    name,  -- noqa: RF04
    mime_type,
    document_id,
    reason,
    updated_at
from app.drive_files
where state <> 'folder';

comment on view api.drive_files is 'Each Drive file of the caller''s folders: its document, or why it has none.';

grant select on api.drive_files to authenticated, service_role;

-- function: api.trigger_drive_sync

create function api.trigger_drive_sync(folder_id uuid)
returns setof app.drive_sync_runs
language sql
volatile
set search_path = ''
as $$
    select * from internal.trigger_drive_sync(folder_id)
$$;

comment on function api.trigger_drive_sync(uuid) is 'supabase-js: queue a sync of one of your Drive folders.';

revoke execute on function api.trigger_drive_sync(uuid) from public;
grant execute on function api.trigger_drive_sync(uuid) to authenticated;
