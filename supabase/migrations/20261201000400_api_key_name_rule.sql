-- API key names: "no control characters" as an explicit set (C0, DEL, C1),
-- the same set the HTTP API's schema states, instead of [[:cntrl:]], whose
-- meaning follows the database's locale.

-- table: app.api_keys (constraint)

alter table app.api_keys drop constraint api_keys_name_valid;
alter table app.api_keys add constraint api_keys_name_valid check (
    char_length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f-\x9f]'
);

-- function: internal.valid_api_key_name

create function internal.valid_api_key_name(key_name text)
returns boolean
language sql
immutable
set search_path = ''
as $$
    select key_name is not null and char_length(key_name) between 1 and 200 and key_name !~ '[\x01-\x1f\x7f-\x9f]'
$$;

revoke execute on function internal.valid_api_key_name(text) from public;

-- function: internal.issue_api_key (as before, with the explicit name rule)

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
    -- One creation at a time per user, so the cap below cannot be raced.
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
