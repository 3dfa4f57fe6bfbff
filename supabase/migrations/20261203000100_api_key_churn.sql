-- API key churn: creating a key costs a bcrypt hash (~51 ms of database
-- CPU), and revoking one frees a place under the 100-active-key cap, so a
-- create/revoke loop could burn CPU without end and pile up rows.  Creations
-- are counted per account and UTC hour inside internal.issue_api_key, the
-- function the gateway and supabase-js (RPC) both reach, before the hash is
-- computed.  The count is a window row of its own, not a count of
-- app.api_keys, so revoking or deleting keys gives nothing back.  The limit
-- is the plan's (app.plans.api_keys_per_hour), like every other limit, but
-- never unlimited: the hash costs the same shared CPU on every plan.
-- Revoked keys are deleted 30 days after their revocation by a worker job;
-- the audit log keeps the record of each key's life (created, revoked,
-- deleted).

-- table: app.plans (column api_keys_per_hour)

alter table app.plans add column api_keys_per_hour integer not null default 10;

alter table app.plans add constraint plans_api_keys_per_hour_positive check (api_keys_per_hour > 0);

comment on column app.plans.api_keys_per_hour is
'New API keys an account may create per UTC hour (each costs a bcrypt hash); never unlimited.';

update app.plans
set api_keys_per_hour = case id when 'pro' then 50 when 'enterprise' then 200 else 10 end;

-- table: app.api_key_creations

create table app.api_key_creations (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    window_start timestamptz not null,
    created integer not null,
    primary key (tenant_id),
    constraint api_key_creations_created_not_negative check (created >= 0)
);

comment on table app.api_key_creations is
'API keys an account created in the current UTC hour; written only by internal.issue_api_key.';

grant select on app.api_key_creations to authenticated, service_role;

alter table app.api_key_creations enable row level security;
alter table app.api_key_creations force row level security;

create policy api_key_creations_select_own on app.api_key_creations
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy api_key_creations_select_service on app.api_key_creations
for select to service_role
using (true);

-- function: internal.count_api_key_creation

-- One more creation in the account's current UTC hour, or the 429 (with
-- Retry-After: the seconds to the hour's end) if the plan's allowance is
-- used.  One upsert: concurrent creators queue on the row's lock.
create function internal.count_api_key_creation(tenant uuid)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant_plan app.plans := internal.tenant_plan(tenant);
    current_window timestamptz := date_trunc('hour', app.clock(), 'UTC');
    resets_at timestamptz := current_window + interval '1 hour';
    counted integer;
    retry_after integer;
begin
    insert into app.api_key_creations as w (tenant_id, window_start, created)
    values (tenant, current_window, 1)
    on conflict on constraint api_key_creations_pkey do update
    set
        created = case when w.window_start = excluded.window_start then w.created + 1 else 1 end,
        window_start = excluded.window_start
    where w.window_start <> excluded.window_start or w.created < tenant_plan.api_keys_per_hour
    returning w.created into counted;
    if counted is not null then
        return;
    end if;
    retry_after := greatest(1, ceil(extract(epoch from resets_at - app.clock())))::integer;
    raise sqlstate 'PGRST' using
        message = jsonb_build_object(
            'code', 'rate-limited',
            'message', format(
                'The %s plan allows %s new API keys per hour; try again in %s s.',
                tenant_plan.display_name, tenant_plan.api_keys_per_hour, retry_after
            ),
            'details', jsonb_build_object(
                'limit', 'api_keys_per_hour',
                'limit_value', tenant_plan.api_keys_per_hour,
                'used', (select w.created from app.api_key_creations as w where w.tenant_id = tenant),
                'resets_at', internal.iso_utc(resets_at),
                'retry_after', retry_after,
                'plan', tenant_plan.id
            )::text,
            'hint', 'Revoking or deleting keys does not give creations back; wait for the next hour.'
        )::text,
        detail = jsonb_build_object(
            'status', 429, 'headers', jsonb_build_object('Retry-After', retry_after::text)
        )::text;
end
$$;

comment on function internal.count_api_key_creation(uuid) is
'Count one API key creation in the account''s UTC hour, or refuse it (429) over the plan''s api_keys_per_hour.';

revoke execute on function internal.count_api_key_creation(uuid) from public;

-- function: internal.issue_api_key (as before, with the hourly creation limit before the hash)

create or replace function internal.issue_api_key(key_name text, expires timestamptz)
returns app.issued_api_key
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    lookup text := internal.base62_random(12);
    secret text := internal.base62_random(32);
    body text;
    issued app.api_keys;
begin
    if tenant is null then
        perform internal.raise_http(401, 'unauthorized', 'Only a signed-in user can create API keys.', '{}');
    end if;
    -- A key cannot mint keys: a leaked key must not outlive its revocation.
    if auth.jwt() ? 'api_key_id' then
        perform internal.raise_http(
            403, 'forbidden', 'API keys cannot create API keys; sign in to create one.', '{}'
        );
    end if;
    -- One creation at a time per user, so neither the cap nor the hourly count can be raced.
    perform pg_advisory_xact_lock(hashtextextended('api_keys:' || tenant::text, 0));
    if not internal.valid_api_key_name(key_name) then
        perform internal.raise_http(
            422, 'invalid-parameter',
            '`name` must be 1 to 200 characters with no control characters.', '{"field": "name"}'
        );
    end if;
    if expires is not null and expires <= now() then
        perform internal.raise_http(
            422, 'invalid-parameter', '`expires_at` must be in the future.', '{"field": "expires_at"}'
        );
    end if;
    if (select count(*) from app.api_keys as k where k.tenant_id = tenant and k.revoked_at is null) >= 100 then
        perform internal.raise_http(
            409, 'too-many-keys', 'A user can have at most 100 active API keys; revoke one first.', '{}'
        );
    end if;
    -- Counted before the hash, so a refused creation costs no bcrypt.
    perform internal.count_api_key_creation(tenant);
    body := 'sk_live_' || lookup || '_' || secret;
    body := body || internal.base62_fixed(internal.crc32(body), 6);
    insert into app.api_keys as k (tenant_id, lookup_id, secret_hash, name, last4, expires_at)
    values (
        tenant, lookup, extensions.crypt(secret, extensions.gen_salt('bf', 10)), key_name, right(body, 4), expires
    )
    returning k.* into issued;
    return row(
        issued.id, issued.name, body, 'sk_live_' || issued.lookup_id, issued.last4, issued.created_at,
        issued.expires_at
    )::app.issued_api_key;
end
$$;

-- function: internal.purge_revoked_api_keys

-- Deletes at most `batch` keys per call (the worker calls again while a call
-- fills its batch), oldest revocation first; each deletion is audited
-- (api_key.deleted, by the system) and tells the gateways' caches.
create function internal.purge_revoked_api_keys(batch integer default 1000)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    purged integer;
begin
    delete from app.api_keys as k
    using (
        select r.tenant_id, r.id from app.api_keys as r
        where r.revoked_at <= now() - interval '30 days'
        order by r.revoked_at
        limit batch
    ) as due
    where k.tenant_id = due.tenant_id and k.id = due.id;
    get diagnostics purged = row_count;
    return purged;
end
$$;

comment on function internal.purge_revoked_api_keys(integer) is
'Delete up to `batch` API keys revoked more than 30 days ago; the audit log keeps their history.';

revoke execute on function internal.purge_revoked_api_keys(integer) from public;
grant execute on function internal.purge_revoked_api_keys(integer) to quarry_worker;

-- function: internal.job_queue (the key purge joins the maintenance queue)

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
    end
$$;

-- view: api.plans (with api_keys_per_hour)

create or replace view api.plans with (security_invoker = true) as
select
    id,
    display_name,
    tier,
    documents_per_month,
    storage_bytes,
    drive_folders,
    formats,
    queries_per_day,
    requests_per_hour,
    export_interval,
    queue_priority,
    api_keys_per_hour
from app.plans;
