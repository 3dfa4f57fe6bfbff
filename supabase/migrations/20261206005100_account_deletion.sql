-- Account deletion (GDPR Art. 17): the account is blocked at once, then a
-- resumable worker job erases it step by step and mails a receipt.
--
-- The rules kept here: `DELETE /api/account` (the gateway's login, for the
-- JWT's own user, confirmed by the account's email) records the deletion,
-- revokes every API key (announcing each on quarry_api_keys, as
-- internal.revoke_api_key does, so every gateway's key cache drops it) and
-- defers `account:delete`, in one transaction; from then on the gateway
-- admits the tenant's requests only to read the deletion's progress
-- (internal.admit_request), PostgREST refuses them too (its pre-request
-- function), and a new export cannot start.  Each step of the job is
-- idempotent and recorded when done, so a killed worker resumes where it
-- was.  Rows are erased catalog-driven (every table with a tenant_id
-- column), so a table added later is not forgotten.  The deletion record
-- itself has no foreign key to auth.users: it outlives the auth user by
-- one step (the receipt), and is the last row to go.

-- table: app.account_deletions

create table app.account_deletions (
    tenant_id uuid not null,
    email text not null,
    state text not null default 'queued',  -- noqa: RF04
    steps jsonb not null default '{}',
    counts jsonb not null default '{}',
    attempts integer not null default 0,
    last_error text,
    requested_at timestamptz not null default now(),
    started_at timestamptz,
    updated_at timestamptz not null default now(),
    primary key (tenant_id),
    constraint account_deletions_state_known check (state in ('queued', 'running', 'retrying')),
    constraint account_deletions_error_length check (char_length(last_error) <= 2000)
);

comment on table app.account_deletions is
'An account being erased: the steps done (step → when), what was found to erase, the last error; gone when done.';

grant select on app.account_deletions to authenticated, service_role;

alter table app.account_deletions enable row level security;
alter table app.account_deletions force row level security;

create policy account_deletions_select_own on app.account_deletions
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy account_deletions_select_service on app.account_deletions
for select to service_role
using (true);

-- function: internal.defer_account_deletion

-- One deletion job per tenant (lock account:<tenant>; its queueing lock while it waits).
create function internal.defer_account_deletion(tenant uuid)
returns bigint
language sql
volatile
security definer
set search_path = ''
as $$
    select internal.defer_job('account:delete', tenant, '{}', 'account:' || tenant::text, 'account-delete:' || tenant::text)
$$;

comment on function internal.defer_account_deletion(uuid) is 'Defer the erasure job of an account being deleted.';

revoke execute on function internal.defer_account_deletion(uuid) from public;

-- function: internal.request_account_deletion

-- For the gateway's login only (the tenant comes from a verified JWT, never
-- an API key).  Asking again while it runs answers the same deletion.
create function internal.request_account_deletion(tenant uuid, confirm text)
returns setof app.account_deletions
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    user_email text;
    deletion app.account_deletions;
    revoked uuid;
begin
    select u.email into user_email from auth.users as u where u.id = tenant for update;
    if not found then
        perform internal.raise_http(401, 'unauthorized', 'The credentials belong to a user that no longer exists.', '{}');
    end if;
    select d.* into deletion from app.account_deletions as d where d.tenant_id = tenant;
    if found then
        return next deletion;
        return;
    end if;
    if user_email is null or confirm is null or lower(btrim(confirm)) <> lower(user_email) then
        perform internal.raise_http(
            422, 'invalid-parameter', '`confirm` must be the account''s email address.', '{"field": "confirm"}'
        );
    end if;
    insert into app.account_deletions (tenant_id, email) values (tenant, user_email) returning * into deletion;
    -- Every key stops now, on every gateway: each revocation is announced (delivered at commit).
    for revoked in
        update app.api_keys as k set revoked_at = now()
        where k.tenant_id = tenant and k.revoked_at is null
        returning k.id
    loop
        perform pg_notify('quarry_api_keys', revoked::text);
    end loop;
    perform internal.audit(tenant, 'account.deletion_requested', 'account', tenant, '{}');
    perform internal.defer_account_deletion(tenant);
    return next deletion;
end
$$;

comment on function internal.request_account_deletion(uuid, text) is
'Block an account at once (keys revoked) and queue its erasure, if `confirm` is its email; the gateway''s login only.';

revoke execute on function internal.request_account_deletion(uuid, text) from public;
grant execute on function internal.request_account_deletion(uuid, text) to quarry_gateway;

-- function: internal.account_deletion

create function internal.account_deletion(tenant uuid)
returns setof app.account_deletions
language sql
stable
security definer
set search_path = ''
as $$
    select d.* from app.account_deletions as d where d.tenant_id = tenant
$$;

comment on function internal.account_deletion(uuid) is 'A tenant''s deletion in progress (none: not being deleted).';

revoke execute on function internal.account_deletion(uuid) from public;
grant execute on function internal.account_deletion(uuid) to quarry_gateway, quarry_worker;

-- function: internal.admit_request

-- The gateway's one statement per authenticated request: no row when the user
-- no longer exists (401); `deleting` when the account is being deleted (the
-- gateway answers 403, except to read the deletion's progress, and counts
-- nothing); else the request is counted against the hourly rate limit when
-- `count_request` (RATE_LIMITS=on), as internal.hit_rate_limit does.
create function internal.admit_request(tenant uuid, api_key_id uuid, count_request boolean)
returns table (request_limit integer, remaining integer, resets_at timestamptz, allowed boolean, deleting boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    if not exists (select from auth.users as u where u.id = tenant) then
        return;
    end if;
    deleting := exists (select from app.account_deletions as d where d.tenant_id = tenant);
    allowed := true;
    if count_request and not deleting then
        select h.request_limit, h.remaining, h.resets_at, h.allowed
        into request_limit, remaining, resets_at, allowed
        from internal.hit_rate_limit(tenant, api_key_id) as h;
    end if;
    return next;
end
$$;

comment on function internal.admit_request(uuid, uuid, boolean) is
'Admit one gateway request: nothing if the user is gone, whether the account is being deleted, the rate limit.';

revoke execute on function internal.admit_request(uuid, uuid, boolean) from public;
grant execute on function internal.admit_request(uuid, uuid, boolean) to quarry_gateway;

-- function: internal.check_request

-- PostgREST's pre-request function (db-pre-request; PostgREST takes one, so
-- this is the one, on Supabase and on Citus alike): it first re-issues the
-- request's settings with SET LOCAL (internal.reissue_request_settings: what
-- carries the claims to the Citus workers on 6B; the same values again,
-- changing nothing, on Supabase), then gives supabase-js the gateway's
-- refusals: 403 while the account is being deleted, 401 once its user is gone.
create function internal.check_request()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid;
begin
    perform internal.reissue_request_settings();
    tenant := auth.uid();
    if tenant is null then
        return;
    end if;
    if exists (select from app.account_deletions as d where d.tenant_id = tenant) then
        perform internal.raise_http(
            403, 'account-deleting', 'This account is being deleted; only its deletion''s progress can be read.', '{}'
        );
    end if;
    if not exists (select from auth.users as u where u.id = tenant) then
        perform internal.raise_http(401, 'unauthorized', 'The credentials belong to a user that no longer exists.', '{}');
    end if;
end
$$;

comment on function internal.check_request() is
'PostgREST pre-request: settings again with SET LOCAL (Citus), then 403 for an account being deleted, 401 if gone.';

revoke execute on function internal.check_request() from public;
-- As internal.reissue_request_settings: not anon (refused everywhere); the service role's requests pass.
grant execute on function internal.check_request() to authenticated, service_role;

do $pre_request$
begin
    -- Where PostgREST runs (Supabase), it calls this before every request to this database.
    if exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
        execute format(
            'alter role authenticator in database %I set pgrst.db_pre_request = %L',
            current_database(), 'internal.check_request'
        );
    end if;
end
$pre_request$;
