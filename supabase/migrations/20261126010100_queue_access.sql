-- Who may use the job queue: the worker's role (procrastinate's own
-- connection) and the SECURITY DEFINER functions that defer jobs from SQL.
-- Users never see the queue: no grant to anon/authenticated/service_role.

do $worker_role$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'quarry_worker') then
        create role quarry_worker nologin noinherit;
    end if;
    -- tenant work through act_as, like the gateway
    grant authenticated to quarry_worker;
end
$worker_role$;

-- grants

grant usage on schema procrastinate to quarry_worker;
grant select, insert, update, delete on all tables in schema procrastinate to quarry_worker;
grant usage, select on all sequences in schema procrastinate to quarry_worker;
grant execute on all functions in schema procrastinate to quarry_worker;
grant usage on schema internal to quarry_worker;

-- RLS: enabled and forced like every table; the queue is not tenant data, so
-- the worker and the definer functions' owner see all of it.

alter table procrastinate.procrastinate_jobs enable row level security;
alter table procrastinate.procrastinate_jobs force row level security;
alter table procrastinate.procrastinate_events enable row level security;
alter table procrastinate.procrastinate_events force row level security;
alter table procrastinate.procrastinate_periodic_defers enable row level security;
alter table procrastinate.procrastinate_periodic_defers force row level security;
alter table procrastinate.procrastinate_workers enable row level security;
alter table procrastinate.procrastinate_workers force row level security;

-- policies

create policy jobs_queue_roles on procrastinate.procrastinate_jobs
for all to quarry_worker, postgres using (true) with check (true);

create policy events_queue_roles on procrastinate.procrastinate_events
for all to quarry_worker, postgres using (true) with check (true);

create policy periodic_defers_queue_roles on procrastinate.procrastinate_periodic_defers
for all to quarry_worker, postgres using (true) with check (true);

create policy workers_queue_roles on procrastinate.procrastinate_workers
for all to quarry_worker, postgres using (true) with check (true);
