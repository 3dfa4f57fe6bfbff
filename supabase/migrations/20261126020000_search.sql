-- Search: the query log, written by one SQL function for every query (the
-- hook the quotas issue uses for the daily limit), readable by its owner.

-- tables

create table app.query_log (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    api_key_id uuid,
    query text not null,
    mode text not null,  -- noqa: RF04
    result_count integer,
    latency_ms real,
    created_at timestamptz not null default now(),
    primary key (tenant_id, id),
    constraint query_log_query_length check (char_length(query) between 1 and 2000),
    constraint query_log_mode_known check (mode in ('hybrid', 'dense', 'sparse')),
    constraint query_log_counts_not_negative check (coalesce(result_count, 0) >= 0 and coalesce(latency_ms, 0) >= 0)
);

comment on table app.query_log is 'Every search: who asked what, how many results, how fast.';

-- grants

grant select on app.query_log to authenticated;
grant insert (query, mode, api_key_id) on app.query_log to authenticated;
grant update (result_count, latency_ms) on app.query_log to authenticated;
grant select, delete on app.query_log to service_role;

-- RLS

alter table app.query_log enable row level security;
alter table app.query_log force row level security;

-- indexes

create index query_log_tenant_created_idx on app.query_log (tenant_id, created_at desc);

-- policies

create policy query_log_select_own on app.query_log
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy query_log_insert_own on app.query_log
for insert to authenticated
with check (tenant_id = (select auth.uid()));

create policy query_log_update_own on app.query_log
for update to authenticated
using (tenant_id = (select auth.uid()))
with check (tenant_id = (select auth.uid()));

-- functions (gateway only: app is not exposed)

-- Record a query before it runs.  The quotas issue adds the daily-limit check
-- here, so that it happens in the same statement that counts the query.
create function app.record_query(query_text text, search_mode text, key_id uuid default null)
returns uuid
language sql
volatile
set search_path = ''
as $$
    insert into app.query_log (query, mode, api_key_id)
    values (query_text, search_mode, key_id)
    returning id
$$;

-- Its outcome, once the results are known.
create function app.complete_query(log_id uuid, results integer, elapsed_ms real)
returns void
language sql
volatile
set search_path = ''
as $$
    update app.query_log set result_count = results, latency_ms = elapsed_ms where id = log_id
$$;

grant execute on function app.record_query(text, text, uuid) to authenticated;
grant execute on function app.complete_query(uuid, integer, real) to authenticated;

-- API (exposed to supabase-js)

create view api.query_log with (security_invoker = true) as
select
    id,
    api_key_id,
    query,
    mode,
    result_count,
    latency_ms,
    created_at
from app.query_log;

grant select on api.query_log to authenticated;
