-- api.me(), app.effective_plan() and internal.applied_schema_version().
begin;
set local search_path = tests, public;
select plan(11);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to anon, authenticated, service_role, quarry_gateway;
insert into ids values ('a', tests.create_user('a@example.com'));

select tests.act_as((select id from ids where name = 'a'));
select results_eq(
    'select tenant_id, email, plan from api.me()',
    $$select id, 'a@example.com'::text, 'free'::text from ids where name = 'a'$$,
    'api.me() returns the caller''s tenant id, email and plan'
);
select is(app.effective_plan((select id from ids where name = 'a')), 'free', 'everyone is on Free until billing exists');
select throws_ok(
    'select internal.applied_schema_version()', '42501', null,
    'authenticated cannot call the schema-version probe'
);

select tests.act_as_anon();
select throws_ok('select * from api.me()', '42501', null, 'anon cannot call api.me()');
select throws_ok('select internal.applied_schema_version()', '42501', null, 'anon cannot call the schema-version probe');

select tests.act_as_service_role();
select results_eq(
    'select app.effective_plan(id) from ids', $$values ('free'::text)$$, 'the service role reads any tenant''s plan'
);
select throws_ok(
    'select internal.applied_schema_version()', '42501', null,
    'the service role cannot call the gateway-only schema-version probe'
);

select tests.reset_actor();
select set_config('role', 'quarry_gateway', true);
select matches(
    internal.applied_schema_version(), '^[0-9]{14}$', 'the gateway role reads the applied schema version'
);
select throws_ok('select * from app.documents', '42501', null, 'the gateway role itself reads no tenant table');
select throws_ok('select * from auth.users', '42501', null, 'the gateway role cannot read auth.users');

select tests.reset_actor();
select ok(
    not (select rolinherit from pg_roles where rolname = 'quarry_gateway'),
    'quarry_gateway is NOINHERIT: it has privileges only after switching role'
);

select * from finish();
rollback;
