-- Plain-PostgreSQL shim of the parts of Supabase that Quarry relies on.
--
-- Applied by dev and test set-up only (gateway/dev/database.py), never by a
-- migration: a real Supabase project already has all of this.  Idempotent.
-- The auth functions are copied in shape from supabase/auth
-- (migrations/20240624145325_recreate_auth_functions.up.sql): each reads the
-- legacy per-claim setting first and falls back to request.jwt.claims.

do $roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
    grant anon, authenticated, service_role to authenticator;
end
$roles$;

-- Supabase's per-role settings, which PostgREST (and gateway.db.act_as)
-- apply to every request made as that role.
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

-- Supabase's generous defaults in public: everything postgres creates there
-- is granted to the API roles.  The first migration must revoke these.
grant usage on schema public to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;

create schema if not exists auth;
create schema if not exists extensions;
grant usage on schema auth to anon, authenticated, service_role;
grant usage on schema extensions to anon, authenticated, service_role;

-- The columns of Supabase's auth.users that Quarry's code touches, with
-- Supabase's types.
create table if not exists auth.users (
    instance_id uuid,
    id uuid not null primary key,
    aud varchar(255),
    role varchar(255),  -- noqa: RF04
    email varchar(255),
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz,
    updated_at timestamptz,
    phone text,
    banned_until timestamptz,
    deleted_at timestamptz,
    is_sso_user boolean not null default false,
    is_anonymous boolean not null default false
);

-- As in Supabase: one non-SSO account per email address.
create unique index if not exists users_email_partial_key on auth.users (email) where is_sso_user = false;

create or replace function auth.uid()
returns uuid
set search_path to ''
as $func$
    select
        coalesce(
            nullif(current_setting('request.jwt.claim.sub', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
$func$ language sql stable;

create or replace function auth.role()
returns text
set search_path to ''
as $func$
    select
        coalesce(
            nullif(current_setting('request.jwt.claim.role', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
$func$ language sql stable;

create or replace function auth.email()
returns text
set search_path to ''
as $func$
    select
        coalesce(
            nullif(current_setting('request.jwt.claim.email', true), ''),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
        )::text
$func$ language sql stable;

create or replace function auth.jwt()
returns jsonb
set search_path to ''
as $func$
    select
        coalesce(
            nullif(current_setting('request.jwt.claim', true), ''),
            nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
$func$ language sql stable;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
to anon, authenticated, service_role;
