-- Login roles: quarry_authenticator (tenant transactions) can only become
-- anon or authenticated and holds nothing itself, so a `reset role` inside a
-- tenant transaction gains nothing; the privileged login roles
-- (quarry_gateway, quarry_worker) cannot become a tenant role.
begin;
set local search_path = tests, public;
select plan(14);

select tests.create_users('a');

-- what each login role is a member of

select set_eq(
    $$select b.rolname::text from pg_catalog.pg_auth_members as m
      inner join pg_catalog.pg_roles as b on m.roleid = b.oid
      inner join pg_catalog.pg_roles as r on m.member = r.oid where r.rolname = 'quarry_authenticator'$$,
    array['anon', 'authenticated'],
    'quarry_authenticator can become anon and authenticated, nothing else'
);
select is_empty(
    $$select b.rolname from pg_catalog.pg_auth_members as m
      inner join pg_catalog.pg_roles as b on m.roleid = b.oid
      inner join pg_catalog.pg_roles as r on m.member = r.oid where r.rolname in ('quarry_gateway', 'quarry_worker')$$,
    'the privileged login roles can become no other role'
);
select ok(
    (select not rolinherit and not rolsuper and not rolbypassrls and not rolcreaterole and not rolcreatedb
     from pg_catalog.pg_roles where rolname = 'quarry_authenticator'),
    'quarry_authenticator inherits nothing and has no attribute'
);

-- what quarry_authenticator holds by itself: nothing

select is_empty(
    $$select n.nspname from pg_catalog.pg_namespace as n
      where n.nspname in ('api', 'app', 'internal', 'ops', 'procrastinate', 'extensions', 'auth')
        and pg_catalog.has_schema_privilege('quarry_authenticator', n.oid, 'usage, create')$$,
    'it may use none of the schemas (public, which holds nothing, aside)'
);
select is_empty(
    $$select c.oid::regclass from pg_catalog.pg_class as c
      inner join pg_catalog.pg_namespace as n on c.relnamespace = n.oid
      where n.nspname in ('api', 'app', 'internal', 'ops', 'procrastinate', 'auth', 'public')
        and c.relkind in ('r', 'v', 'm', 'p', 'f')
        and pg_catalog.has_table_privilege(
            'quarry_authenticator', c.oid, 'select, insert, update, delete, truncate, references, trigger'
        )$$,
    'it holds no privilege on any table or view'
);
select is_empty(
    $$select p.oid::regprocedure from pg_catalog.pg_proc as p
      inner join pg_catalog.pg_namespace as n on p.pronamespace = n.oid
      where n.nspname in ('api', 'app', 'internal', 'ops', 'procrastinate')
        and pg_catalog.has_function_privilege('quarry_authenticator', p.oid, 'execute')
        and p.proacl is not null$$,
    'it is granted no function (beyond PUBLIC''s, in schemas it cannot use)'
);

-- a tenant transaction that resets its role

set local session authorization quarry_authenticator;
set local role authenticated;
select set_config('request.jwt.claims', json_build_object('sub', tests.user_id('a'), 'role', 'authenticated')::text, true);
select is(current_user::text, 'authenticated', 'the tenant transaction acts as authenticated');
reset role;
select is(current_user::text, 'quarry_authenticator', 'reset role lands on quarry_authenticator');
select throws_ok(
    $$select * from internal.find_api_key('aaaaaaaaaaaa')$$, '42501', null, 'which cannot look up API keys'
);
select throws_ok($$select internal.hit_rate_limit(auth.uid(), null)$$, '42501', null, 'nor hit rate limits');
select throws_ok($$select count(*) from app.api_keys$$, '42501', null, 'nor read any table');
select throws_ok(
    $$select count(*) from procrastinate.procrastinate_jobs$$, '42501', null, 'nor the job queue'
);
select throws_ok($$select * from internal.outbox_claim(1, 1)$$, '42501', null, 'nor claim outbox work');
reset session authorization;

set local session authorization quarry_gateway;
select throws_ok($$set role authenticated$$, '42501', null, 'the gateway''s privileged role cannot become a tenant');
reset session authorization;

select * from finish();
rollback;
