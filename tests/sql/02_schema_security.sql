-- Invariants over every object in the application schemas, so that a table
-- or function added later without RLS, a policy or a safe search_path fails.
begin;
set local search_path = tests, public;
select plan(11);

select is_empty(
    $$
    select n.nspname || '.' || c.relname
    from pg_class as c inner join pg_namespace as n on c.relnamespace = n.oid
    where n.nspname in ('api', 'app', 'internal', 'ops', 'public', 'procrastinate')
        and c.relkind in ('r', 'p')
        and not (c.relrowsecurity and c.relforcerowsecurity)
    $$,
    'every table in the app schemas and the queue has RLS enabled and forced'
);

select is_empty(
    $$
    select n.nspname || '.' || c.relname
    from pg_class as c inner join pg_namespace as n on c.relnamespace = n.oid
    where n.nspname in ('api', 'app', 'internal', 'ops', 'public', 'procrastinate')
        and c.relkind in ('r', 'p')
        and not exists (select from pg_policy as p where p.polrelid = c.oid)
    $$,
    'every table in the app schemas and the queue has at least one policy'
);

select isnt_empty(
    $$
    select c.oid from pg_class as c inner join pg_namespace as n on c.relnamespace = n.oid
    where n.nspname = 'app' and c.relkind = 'r'
    $$,
    'the check above looked at real tables'
);

select is_empty(
    $$
    select c.relname from pg_class as c inner join pg_namespace as n on c.relnamespace = n.oid
    where n.nspname = 'api' and c.relkind = 'v'
        and not coalesce('security_invoker=true' = any(c.reloptions), false)
    $$,
    'every view in api runs with the caller''s privileges (security_invoker)'
);

select is_empty(
    $$
    select n.nspname || '.' || p.proname
    from pg_proc as p inner join pg_namespace as n on p.pronamespace = n.oid
    where n.nspname in ('api', 'app', 'ops', 'public') and p.prosecdef
    $$,
    'SECURITY DEFINER functions live only in the non-exposed internal schema'
);

select is_empty(
    $$
    select n.nspname || '.' || p.proname
    from pg_proc as p inner join pg_namespace as n on p.pronamespace = n.oid
    where n.nspname in ('api', 'app', 'internal', 'ops')
        and not coalesce('search_path=""' = any(p.proconfig), false)
    $$,
    'every function in the app schemas pins search_path to the empty string'
);

select is_empty(
    $$
    select n.nspname || '.' || p.proname
    from pg_proc as p inner join pg_namespace as n on p.pronamespace = n.oid
    where n.nspname in ('api', 'app', 'internal', 'ops')
        and has_function_privilege('anon', p.oid, 'execute')
    $$,
    'anon may execute no function in the app schemas'
);

select is_empty(
    $$
    select n.nspname || '.' || c.relname
    from pg_class as c inner join pg_namespace as n on c.relnamespace = n.oid
    where n.nspname in ('api', 'app', 'internal', 'ops', 'public', 'procrastinate')
        and c.relkind in ('r', 'p', 'v', 'm')
        and has_table_privilege('anon', c.oid, 'select, insert, update, delete, truncate, references, trigger')
    $$,
    'anon holds no privilege on any table or view in the app schemas or the queue'
);

-- Locked down first: what the migration runner creates from now on, in any
-- schema (public included, where Supabase grants everything by default), is
-- granted to nobody until a migration says so.
create table public.canary_table (id int);
create function public.canary_function() returns int language sql as 'select 1';
create table app.canary_table (id int);
select is_empty(
    $$
    select grantee.rolname || ' on ' || c.relname
    from pg_class as c
    cross join (values ('anon'), ('authenticated'), ('service_role')) as grantee (rolname)
    where c.oid in ('public.canary_table'::regclass, 'app.canary_table'::regclass)
        and has_table_privilege(grantee.rolname, c.oid, 'select, insert, update, delete, truncate, references')
    $$,
    'a table created now, in public or app, is granted to no API role'
);
select ok(
    not has_function_privilege('anon', 'public.canary_function()', 'execute')
    and not has_function_privilege('authenticated', 'public.canary_function()', 'execute'),
    'a function created now is executable by no API role'
);
select is_empty(
    $$
    select d.defaclrole::regrole::text || ' ' || d.defaclobjtype::text || ' ' || acl::text
    from pg_default_acl as d cross join lateral unnest(d.defaclacl) as acl
    where d.defaclrole = 'postgres'::regrole
        and (acl::text like 'anon=%' or acl::text like 'authenticated=%' or acl::text like '=%')
    $$,
    'postgres has no default privileges left for anon, authenticated or PUBLIC'
);

select * from finish();
rollback;
