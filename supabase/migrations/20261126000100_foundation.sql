-- Foundation: privileges locked down first, the schema split of DESIGN §2,
-- pgcrypto, and the gateway's database role.
--
--   api       exposed to PostgREST (supabase-js): security_invoker views + RPC
--   app       tenant tables and invoker functions (not exposed)
--   internal  SECURITY DEFINER helpers (not exposed, search_path = '')
--   ops       operator views for Supabase Studio (not exposed)

-- Nothing created from here on is usable by anyone until a migration grants
-- it next to its policy.  Supabase's own defaults grant everything in public
-- to anon/authenticated; we revoke those too and keep nothing in public.
alter default privileges revoke all on tables from public;
alter default privileges revoke all on sequences from public;
alter default privileges revoke execute on functions from public;
alter default privileges revoke usage on types from public;
alter default privileges revoke all on tables from anon, authenticated, service_role;
alter default privileges revoke all on sequences from anon, authenticated, service_role;
alter default privileges revoke execute on functions from anon, authenticated, service_role;
alter default privileges in schema public revoke all on tables from anon, authenticated, service_role;
alter default privileges in schema public revoke all on sequences from anon, authenticated, service_role;
alter default privileges in schema public revoke all on functions from anon, authenticated, service_role;
revoke create on schema public from public;

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;

create schema api;
create schema app;
create schema internal;
create schema ops;
revoke all on schema api, app, internal, ops from public;

-- api is what supabase-js reaches; app and internal are reachable only
-- through objects in api or through the gateway's tenant transaction.
grant usage on schema api to anon, authenticated, service_role;
grant usage on schema app to authenticated, service_role;
grant usage on schema internal to authenticated, service_role;

-- The gateway logs in as quarry_gateway.  It is NOINHERIT: it holds no
-- privileges of its own and does tenant work only after switching role, the
-- way PostgREST's authenticator does.  Login (and its password) is granted
-- by the operator, not by a migration.
do $gateway_role$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'quarry_gateway') then
        create role quarry_gateway nologin noinherit;
    end if;
    grant anon, authenticated to quarry_gateway;
end
$gateway_role$;

grant usage on schema internal to quarry_gateway;
