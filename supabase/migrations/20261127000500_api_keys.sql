-- API keys (DESIGN §3): `sk_live_<lookup id>_<secret><checksum>`.  The
-- lookup id is public, the secret (32 base62 characters, ~190 bits) is kept
-- only as a bcrypt hash, and a CRC32 checksum (6 base62 characters) lets the
-- gateway and secret scanners reject junk without the database.  Keys are
-- issued and revoked by SQL functions, so supabase-js (RPC) and the gateway
-- behave the same; the plaintext leaves the database once, in the answer to
-- its creation.  Only the gateway's role can look a key up.

-- types

-- What creating a key answers, the only place its plaintext appears.
create type app.issued_api_key as (
    id uuid,
    name text,  -- noqa: RF04
    key text,  -- noqa: RF04
    prefix text,
    last4 text,
    created_at timestamptz,
    expires_at timestamptz
);

-- tables

create table app.api_keys (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    id uuid not null default gen_random_uuid(),
    lookup_id text not null,
    secret_hash text not null,
    name text not null,  -- noqa: RF04
    last4 text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    primary key (tenant_id, id),
    -- Looked up by the public id alone (the tenant is what the key proves),
    -- so this one index does not lead with tenant_id.
    constraint api_keys_lookup_id_key unique (lookup_id),
    constraint api_keys_lookup_id_format check (lookup_id ~ '^[0-9A-Za-z]{12}$'),
    constraint api_keys_name_valid check (char_length(name) between 1 and 200 and name !~ '[[:cntrl:]]'),
    constraint api_keys_secret_hash_bcrypt check (secret_hash ~ '^\$2[aby]\$')
);

comment on table app.api_keys is 'A tenant''s API keys: public lookup id, bcrypt hash of the secret, lifecycle.';

-- grants

grant usage on type app.issued_api_key to authenticated;
-- Never the hash: not even its owner reads it.
grant select (
    tenant_id, id, lookup_id, name, last4, created_at, expires_at, revoked_at, last_used_at
) on app.api_keys to authenticated;
grant select, delete on app.api_keys to service_role;

-- RLS

alter table app.api_keys enable row level security;
alter table app.api_keys force row level security;

-- helpers

create function internal.base62_random(size integer)
returns text
language plpgsql
volatile
set search_path = ''
as $$
declare
    alphabet constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    result text := '';
    bytes bytea;
    byte_value integer;
begin
    while char_length(result) < size loop
        bytes := extensions.gen_random_bytes(size * 2);
        for i in 0 .. octet_length(bytes) - 1 loop
            byte_value := get_byte(bytes, i);
            -- 248 = 4 × 62: dropping the rest keeps every character equally likely.
            if byte_value < 248 and char_length(result) < size then
                result := result || substr(alphabet, byte_value % 62 + 1, 1);
            end if;
        end loop;
    end loop;
    return result;
end
$$;

-- CRC-32 (ISO-HDLC, as zlib.crc32) of the text's UTF-8 bytes.
create function internal.crc32(data text)
returns bigint
language plpgsql
immutable
set search_path = ''
as $$
declare
    bytes bytea := convert_to(data, 'UTF8');
    crc bigint := 4294967295;
begin
    for i in 0 .. octet_length(bytes) - 1 loop
        crc := crc # get_byte(bytes, i);
        for bit in 1 .. 8 loop
            if (crc & 1) = 1 then
                crc := (crc >> 1) # 3988292384;
            else
                crc := crc >> 1;
            end if;
        end loop;
    end loop;
    return crc # 4294967295;
end
$$;

-- value in base62, most significant first, zero-padded to size characters.
create function internal.base62_fixed(value bigint, size integer)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
    alphabet constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    rest bigint := value;
    result text := '';
begin
    for i in 1 .. size loop
        result := substr(alphabet, (rest % 62)::integer + 1, 1) || result;
        rest := rest / 62;
    end loop;
    return result;
end
$$;

-- Caches in every gateway drop a key the moment it is revoked or deleted.
create function internal.notify_api_key_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform pg_notify('quarry_api_keys', old.id::text);
    return null;
end
$$;

revoke execute on function internal.base62_random(integer) from public;
revoke execute on function internal.crc32(text) from public;
revoke execute on function internal.base62_fixed(bigint, integer) from public;
revoke execute on function internal.notify_api_key_change() from public;

create trigger api_keys_notify_revoke
after update of revoked_at on app.api_keys
for each row
when (old.revoked_at is null and new.revoked_at is not null)
execute function internal.notify_api_key_change();

create trigger api_keys_notify_delete
after delete on app.api_keys
for each row execute function internal.notify_api_key_change();

-- policies

create policy api_keys_select_own on app.api_keys
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy api_keys_service on app.api_keys
for all to service_role
using (true)
with check (true);

-- API functions

-- Issue a key for the caller.  The plaintext is in the answer and nowhere else.
create function internal.issue_api_key(key_name text, expires timestamptz)
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
    if key_name is null or char_length(key_name) not between 1 and 200 or key_name ~ '[[:cntrl:]]' then
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

-- Revoke one of the caller's keys (again: no change); another's or none: 404.
create function internal.revoke_api_key(key_id uuid)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.api_keys as k set revoked_at = coalesce(k.revoked_at, now())
    where k.tenant_id = auth.uid() and k.id = key_id;
    if not found then
        perform internal.raise_http(404, 'not-found', 'No such API key.', '{}');
    end if;
end
$$;

-- For the gateway only: the key behind a lookup id, with its hash.
create function internal.find_api_key(lookup text)
returns table (
    id uuid, tenant_id uuid, secret_hash text, expires_at timestamptz, revoked_at timestamptz
)
language sql
stable
security definer
set search_path = ''
as $$
    select k.id, k.tenant_id, k.secret_hash, k.expires_at, k.revoked_at
    from app.api_keys as k
    where k.lookup_id = lookup
$$;

-- For the gateway only: last_used_at, written at most once a minute.
create function internal.touch_api_key(key_id uuid)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
    update app.api_keys as k set last_used_at = now()
    where k.id = key_id and (k.last_used_at is null or k.last_used_at <= now() - interval '1 minute')
$$;

revoke execute on function internal.issue_api_key(text, timestamptz) from public;
revoke execute on function internal.revoke_api_key(uuid) from public;
revoke execute on function internal.find_api_key(text) from public;
revoke execute on function internal.touch_api_key(uuid) from public;
grant execute on function internal.issue_api_key(text, timestamptz) to authenticated;
grant execute on function internal.revoke_api_key(uuid) to authenticated;
grant execute on function internal.find_api_key(text) to quarry_gateway;
grant execute on function internal.touch_api_key(uuid) to quarry_gateway;

create function api.create_api_key(name text, expires_at timestamptz default null)  -- noqa: RF04
returns app.issued_api_key
language sql
volatile
set search_path = ''
as $$
    select internal.issue_api_key(create_api_key.name, create_api_key.expires_at)
$$;

create function api.revoke_api_key(id uuid)
returns void
language sql
volatile
set search_path = ''
as $$
    select internal.revoke_api_key(revoke_api_key.id)
$$;

grant execute on function api.create_api_key(text, timestamptz) to authenticated;
grant execute on function api.revoke_api_key(uuid) to authenticated;

create view api.api_keys with (security_invoker = true) as
select
    k.id,
    k.name,
    'sk_live_' || k.lookup_id as prefix,  -- noqa: RF04
    k.last4,
    case
        when k.revoked_at is not null then 'revoked'
        when k.expires_at <= now() then 'expired'
        else 'active'
    end as status,
    k.created_at,
    k.expires_at,
    k.revoked_at,
    k.last_used_at,
    coalesce(w.requests, 0) as requests_this_hour
from app.api_keys as k
left join app.rate_limit_windows as w
    on
        k.tenant_id = w.tenant_id
        and k.id = w.subject_id
        and w.window_start = date_trunc('hour', app.clock(), 'UTC');

grant select on api.api_keys to authenticated;
