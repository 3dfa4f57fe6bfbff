-- Drive folders and export requests: stubs until their issues, here so that
-- their plan limits are enforced from the start (a folder count, one export
-- per interval), by triggers on the tables like every other quota.

-- tables

create table app.drive_folders (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    google_folder_id text not null,
    name text not null,  -- noqa: RF04
    created_at timestamptz not null default now(),
    primary key (tenant_id, id),
    constraint drive_folders_folder_key unique (tenant_id, google_folder_id),
    constraint drive_folders_name_length check (char_length(name) between 1 and 1024),
    constraint drive_folders_folder_id_length check (char_length(google_folder_id) between 1 and 256)
);

comment on table app.drive_folders is 'A Google Drive folder a tenant syncs (metered by the plan).';

create table app.export_requests (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    created_at timestamptz not null default now(),
    primary key (tenant_id, id)
);

comment on table app.export_requests is 'A request to export all of a tenant''s data (metered by the plan).';

-- grants

grant select, delete on app.drive_folders to authenticated;
grant insert (tenant_id, id, google_folder_id, name) on app.drive_folders to authenticated;
grant select, insert, update, delete on app.drive_folders to service_role;
grant select on app.export_requests to authenticated;
grant insert (tenant_id, id) on app.export_requests to authenticated;
grant select, insert, delete on app.export_requests to service_role;

-- RLS

alter table app.drive_folders enable row level security;
alter table app.drive_folders force row level security;
alter table app.export_requests enable row level security;
alter table app.export_requests force row level security;

-- indexes

create index export_requests_tenant_created_idx on app.export_requests (tenant_id, created_at desc);

-- helpers

create function internal.meter_drive_folder()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op = 'DELETE' then
        perform internal.release_quota(old.tenant_id, 'drive_folders', 1);
        return null;
    end if;
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
    perform internal.require_quota(new.tenant_id, internal.tenant_plan(new.tenant_id), 'drive_folders', 1);
    return new;
end
$$;

-- One export per the plan's interval: the counter's period_start is the time
-- of the last accepted request; the upsert only moves it once the interval
-- has passed.
create function internal.meter_export()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    tenant_plan app.plans;
    now_at timestamptz := app.clock();
    last_at timestamptz;
begin
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
    tenant_plan := internal.tenant_plan(new.tenant_id);
    insert into app.usage_counters as c (tenant_id, quota, period_start, used)
    values (new.tenant_id, 'exports', now_at, 1)
    on conflict (tenant_id, quota) do update
    set period_start = excluded.period_start, used = c.used + 1
    where
        tenant_plan.export_interval is null
        or app.utc_add(c.period_start, tenant_plan.export_interval) <= excluded.period_start;
    if found then
        return new;
    end if;
    select c.period_start into last_at from app.usage_counters as c
    where c.tenant_id = new.tenant_id and c.quota = 'exports';
    perform internal.raise_quota_exceeded(
        tenant_plan.id, 'exports', 1, 1, app.utc_add(last_at, tenant_plan.export_interval),
        format(
            'The %s plan allows one export per %s; the last one was requested at %s.',
            tenant_plan.display_name, tenant_plan.export_interval, internal.iso_utc(last_at)
        )
    );
    return null;
end
$$;

revoke execute on function internal.meter_drive_folder() from public;
revoke execute on function internal.meter_export() from public;

create trigger drive_folders_meter
before insert on app.drive_folders
for each row execute function internal.meter_drive_folder();

create trigger drive_folders_meter_delete
after delete on app.drive_folders
for each row execute function internal.meter_drive_folder();

create trigger export_requests_meter
before insert on app.export_requests
for each row execute function internal.meter_export();

-- policies

create policy drive_folders_select_own on app.drive_folders
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_folders_insert_own on app.drive_folders
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy drive_folders_delete_own on app.drive_folders
for delete to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_folders_service on app.drive_folders
for all to service_role
using (true)
with check (true);

create policy export_requests_select_own on app.export_requests
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy export_requests_insert_own on app.export_requests
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy export_requests_service on app.export_requests
for all to service_role
using (true)
with check (true);
