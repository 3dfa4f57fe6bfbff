-- Drive OAuth states bound to the browser that started them (RFC 9700 §4.7.1).
--
-- An authorization started from a browser session (a Supabase JWT) also sets
-- a short-lived HttpOnly, SameSite=Lax cookie in that browser; the state
-- keeps the cookie's SHA-256, and the callback refuses the state unless the
-- same browser presents the cookie.  A consent URL that leaves the browser
-- which asked for it (sent to someone else, opened elsewhere) cannot connect
-- a Drive to the account that started it.  Authorizations started by a
-- server (an API key) cannot set a cookie in their user's browser: they keep
-- no browser hash and are bound by the state alone, as before.

-- table: app.drive_oauth_states (browser_hash)

alter table app.drive_oauth_states
add column browser_hash bytea,
add constraint drive_oauth_states_browser_hash_length check (octet_length(browser_hash) = 32);

comment on column app.drive_oauth_states.browser_hash is
'SHA-256 of the cookie the starting browser holds (the callback must present it), or null for a server''s flow.';

-- function: internal.begin_drive_authorization (with the browser's cookie hash)

drop function internal.begin_drive_authorization(bytea, text);

create function internal.begin_drive_authorization(state_sha256 bytea, verifier text, browser_sha256 bytea default null)
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
    insert into app.drive_oauth_states (tenant_id, state_hash, code_verifier, expires_at, browser_hash)
    values (tenant, state_sha256, verifier, expires, browser_sha256);
    return expires;
end
$$;

comment on function internal.begin_drive_authorization(bytea, text, bytea) is
'Record a pending Drive authorization for the caller: the state''s SHA-256, the PKCE verifier, the browser''s cookie.';

revoke execute on function internal.begin_drive_authorization(bytea, text, bytea) from public;
grant execute on function internal.begin_drive_authorization(bytea, text, bytea) to authenticated;

-- function: internal.take_drive_authorization (with the browser's cookie hash)

drop function internal.take_drive_authorization(bytea);

-- Single use: the row is deleted whether or not it is still valid.
create function internal.take_drive_authorization(state_sha256 bytea)
returns table (tenant_id uuid, code_verifier text, browser_hash bytea)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    return query
    with taken as (
        delete from app.drive_oauth_states as s where s.state_hash = state_sha256
        returning s.tenant_id, s.code_verifier, s.expires_at, s.browser_hash
    )
    select t.tenant_id, t.code_verifier, t.browser_hash from taken as t where t.expires_at > app.clock();
end
$$;

comment on function internal.take_drive_authorization(bytea) is
'Consume a pending Drive authorization by its state''s hash: its tenant, verifier and browser cookie hash.';

revoke execute on function internal.take_drive_authorization(bytea) from public;
grant execute on function internal.take_drive_authorization(bytea) to quarry_gateway;
