-- Google Drive connections (DESIGN §5): per-user OAuth and the encrypted
-- refresh token.
--
-- The rules kept here: an OAuth `state` is random, stored only as a hash,
-- bound to the tenant that asked for it, single-use and gone after ten
-- minutes; the refresh token is stored only as AES-256-GCM ciphertext that no
-- API role can read (the gateway's and the worker's logins read it through
-- definer functions); Google refusing it (invalid_grant) pauses the folders.

-- types

create type app.drive_connection_status as enum ('active', 'needs_reauth');
create type app.drive_folder_state as enum ('idle', 'syncing', 'ready', 'quota_reached', 'paused', 'error');
create type app.drive_run_state as enum ('queued', 'running', 'succeeded', 'failed', 'quota_reached', 'paused');
create type app.drive_file_state as enum ('folder', 'indexed', 'skipped', 'failed');

grant usage on type app.drive_connection_status, app.drive_folder_state, app.drive_run_state, app.drive_file_state
to authenticated, service_role;

-- table: app.drive_oauth_states

create table app.drive_oauth_states (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    state_hash bytea not null,
    code_verifier text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    primary key (tenant_id, state_hash),
    -- The callback knows only the state: looked up by its hash alone (routed
    -- to one shard by it under Citus), so this one index does not lead with tenant_id.
    constraint drive_oauth_states_hash_key unique (state_hash),
    constraint drive_oauth_states_hash_length check (octet_length(state_hash) = 32),
    constraint drive_oauth_states_verifier_format check (code_verifier ~ '^[A-Za-z0-9._~-]{43,128}$')
);

comment on table app.drive_oauth_states is
'Pending Drive authorizations: the SHA-256 of each state and its PKCE verifier, single-use, 10 minutes.';

grant select, delete on app.drive_oauth_states to service_role;

alter table app.drive_oauth_states enable row level security;
alter table app.drive_oauth_states force row level security;

create policy drive_oauth_states_service on app.drive_oauth_states
for all to service_role
using (true)
with check (true);

-- table: app.drive_connections

create table app.drive_connections (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    id uuid not null,
    status app.drive_connection_status not null default 'active',
    scopes text[] not null,
    token_key_id text not null,
    token_ciphertext bytea not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, id),
    constraint drive_connections_one_per_tenant unique (tenant_id),
    constraint drive_connections_key_id_format check (token_key_id ~ '^[A-Za-z0-9_-]{1,32}$')
);

comment on table app.drive_connections is
'A tenant''s Google Drive connection: status, scopes and the refresh token as AES-256-GCM ciphertext.';

-- Never the ciphertext or its key id: not even its owner reads them.
grant select (tenant_id, id, status, scopes, created_at, updated_at) on app.drive_connections to authenticated;
grant select (tenant_id, id, status, scopes, created_at, updated_at) on app.drive_connections to service_role;

alter table app.drive_connections enable row level security;
alter table app.drive_connections force row level security;

create policy drive_connections_select_own on app.drive_connections
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy drive_connections_service on app.drive_connections
for select to service_role
using (true);

-- function: internal.begin_drive_authorization

-- The gateway draws the state and the verifier; only the state's hash is kept.
create function internal.begin_drive_authorization(state_sha256 bytea, verifier text)
returns timestamptz
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    expires timestamptz := app.clock() + interval '10 minutes';
begin
    if tenant is null then
        perform internal.raise_http(401, 'unauthorized', 'Only a signed-in user can connect Google Drive.', '{}');
    end if;
    delete from app.drive_oauth_states as s where s.tenant_id = tenant and s.expires_at <= app.clock();
    if (select count(*) from app.drive_oauth_states as s where s.tenant_id = tenant) >= 10 then
        perform internal.raise_http(
            429, 'rate-limited', 'Too many Drive authorizations are pending; finish one or wait ten minutes.', '{}'
        );
    end if;
    insert into app.drive_oauth_states (tenant_id, state_hash, code_verifier, expires_at)
    values (tenant, state_sha256, verifier, expires);
    return expires;
end
$$;

comment on function internal.begin_drive_authorization(bytea, text) is
'Record a pending Drive authorization for the caller (the state''s SHA-256 and the PKCE verifier).';

revoke execute on function internal.begin_drive_authorization(bytea, text) from public;
grant execute on function internal.begin_drive_authorization(bytea, text) to authenticated;

-- function: internal.take_drive_authorization

-- Single use: the row is deleted whether or not it is still valid.
create function internal.take_drive_authorization(state_sha256 bytea)
returns table (tenant_id uuid, code_verifier text)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    return query
    with taken as (
        delete from app.drive_oauth_states as s where s.state_hash = state_sha256
        returning s.tenant_id, s.code_verifier, s.expires_at
    )
    select t.tenant_id, t.code_verifier from taken as t where t.expires_at > app.clock();
end
$$;

comment on function internal.take_drive_authorization(bytea) is
'Consume a pending Drive authorization by its state''s hash: its tenant and verifier (nothing if unknown or expired).';

revoke execute on function internal.take_drive_authorization(bytea) from public;
grant execute on function internal.take_drive_authorization(bytea) to quarry_gateway;

-- function: internal.save_drive_connection

create function internal.save_drive_connection(
    tenant uuid, connection uuid, granted_scopes text[], key_id text, ciphertext bytea
)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    insert into app.drive_connections as c (tenant_id, id, scopes, token_key_id, token_ciphertext)
    values (tenant, connection, granted_scopes, key_id, ciphertext)
    on conflict (tenant_id) do update
    set
        id = excluded.id, status = 'active', scopes = excluded.scopes, token_key_id = excluded.token_key_id,
        token_ciphertext = excluded.token_ciphertext, updated_at = now();
    update app.drive_folders as f set state = 'idle', last_error = null, updated_at = now()
    where f.tenant_id = tenant and f.state = 'paused';
    perform internal.audit(tenant, 'drive_connection.connect', 'drive_connection', connection, '{}');
end
$$;

comment on function internal.save_drive_connection(uuid, uuid, text[], text, bytea) is
'Store (or replace) a tenant''s Drive connection with its encrypted refresh token; paused folders resume.';

revoke execute on function internal.save_drive_connection(uuid, uuid, text[], text, bytea) from public;
grant execute on function internal.save_drive_connection(uuid, uuid, text[], text, bytea) to quarry_gateway;

-- function: internal.drive_token

create function internal.drive_token(tenant uuid)
returns table (id uuid, status app.drive_connection_status, key_id text, ciphertext bytea)
language sql
stable
security definer
set search_path = ''
as $$
    select c.id, c.status, c.token_key_id, c.token_ciphertext from app.drive_connections as c where c.tenant_id = tenant
$$;

comment on function internal.drive_token(uuid) is 'A tenant''s Drive connection and its encrypted refresh token.';

revoke execute on function internal.drive_token(uuid) from public;
grant execute on function internal.drive_token(uuid) to quarry_gateway, quarry_worker;

-- function: internal.drive_needs_reauth

-- Google refused the refresh token (invalid_grant): no retry loop, the folders wait for a new consent.
create function internal.drive_needs_reauth(tenant uuid, connection uuid, reason text)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.drive_connections as c set status = 'needs_reauth', updated_at = now()
    where c.tenant_id = tenant and c.id = connection;
    if found then
        update app.drive_folders as f set state = 'paused', last_error = reason, updated_at = now()
        where f.tenant_id = tenant;
    end if;
end
$$;

comment on function internal.drive_needs_reauth(uuid, uuid, text) is
'Mark a Drive connection as needing a new consent and pause its folders.';

revoke execute on function internal.drive_needs_reauth(uuid, uuid, text) from public;
grant execute on function internal.drive_needs_reauth(uuid, uuid, text) to quarry_gateway, quarry_worker;

-- function: internal.forget_drive_connection

create function internal.forget_drive_connection(tenant uuid)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    connection uuid;
begin
    delete from app.drive_connections as c where c.tenant_id = tenant returning c.id into connection;
    if connection is null then
        return false;
    end if;
    update app.drive_folders as f set state = 'paused', last_error = 'Google Drive is disconnected.', updated_at = now()
    where f.tenant_id = tenant;
    perform internal.audit(tenant, 'drive_connection.disconnect', 'drive_connection', connection, '{}');
    return true;
end
$$;

comment on function internal.forget_drive_connection(uuid) is
'Delete a tenant''s Drive connection (after revoking it at Google) and pause its folders.';

revoke execute on function internal.forget_drive_connection(uuid) from public;
grant execute on function internal.forget_drive_connection(uuid) to quarry_gateway;

-- function: internal.drive_tokens_to_rotate

create function internal.drive_tokens_to_rotate(newest_key_id text, batch integer)
returns table (tenant_id uuid, id uuid, key_id text, ciphertext bytea)
language sql
stable
security definer
set search_path = ''
as $$
    select c.tenant_id, c.id, c.token_key_id, c.token_ciphertext from app.drive_connections as c
    where c.token_key_id <> newest_key_id
    order by c.tenant_id
    limit batch
$$;

comment on function internal.drive_tokens_to_rotate(text, integer) is
'Drive connections whose token is encrypted under another key than the newest.';

revoke execute on function internal.drive_tokens_to_rotate(text, integer) from public;
grant execute on function internal.drive_tokens_to_rotate(text, integer) to quarry_worker;

-- function: internal.replace_drive_token

-- Compare-and-set: a token replaced meanwhile (a new consent) is left alone.
create function internal.replace_drive_token(
    tenant uuid, connection uuid, old_ciphertext bytea, key_id text, ciphertext bytea
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.drive_connections as c set token_key_id = key_id, token_ciphertext = ciphertext
    where c.tenant_id = tenant and c.id = connection and c.token_ciphertext = old_ciphertext;
    return found;
end
$$;

comment on function internal.replace_drive_token(uuid, uuid, bytea, text, bytea) is
'Store a Drive token re-encrypted under a newer key, unless it changed meanwhile.';

revoke execute on function internal.replace_drive_token(uuid, uuid, bytea, text, bytea) from public;
grant execute on function internal.replace_drive_token(uuid, uuid, bytea, text, bytea) to quarry_worker;

-- API (exposed to supabase-js; the caller's privileges and RLS)

create view api.drive_connection with (security_invoker = true) as
select
    id,
    status,  -- noqa: RF04
    scopes,
    created_at,
    updated_at
from app.drive_connections;

comment on view api.drive_connection is 'The caller''s Google Drive connection (never its token).';

grant select on api.drive_connection to authenticated, service_role;
