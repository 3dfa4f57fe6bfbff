-- app.documents and api.documents: the tenancy pattern, allowed and denied,
-- for anon, tenant A, tenant B and the service role.
begin;
set local search_path = tests, public;
select plan(22);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to anon, authenticated, service_role;
insert into ids values ('a', tests.create_user('a@example.com')), ('b', tests.create_user('b@example.com'));

insert into app.documents (tenant_id, id, title, mime_type)
select ids.id, gen_random_uuid(), 'doc-' || ids.name || '-' || n, 'text/plain'
from ids cross join generate_series(1, 2) as n
where ids.name = 'a';
insert into app.documents (tenant_id, id, title, mime_type)
select id, gen_random_uuid(), 'doc-b-1', 'text/plain' from ids where name = 'b';

-- anon
select tests.act_as_anon();
select throws_ok('select * from app.documents', '42501', null, 'anon cannot read app.documents');
select throws_ok('select * from api.documents', '42501', null, 'anon cannot read api.documents');
select throws_ok(
    $$insert into app.documents (tenant_id, title) values ((select id from ids where name = 'a'), 'x')$$,
    '42501', null, 'anon cannot insert documents'
);

-- tenant A
select tests.act_as((select id from ids where name = 'a'));
select results_eq(
    'select everything.title from (select * from app.documents) as everything order by 1',
    $$values ('doc-a-1'), ('doc-a-2')$$,
    'an unfiltered select * under A''s claims returns only A''s rows'
);
select is_empty(
    $$select * from app.documents where tenant_id = (select id from ids where name = 'b')$$,
    'A asking for B''s rows by tenant_id gets nothing'
);
select results_eq(
    'select title from api.documents order by title',
    $$values ('doc-a-1'), ('doc-a-2')$$,
    'api.documents shows A only A''s rows'
);
select throws_ok(
    $$insert into app.documents (tenant_id, title, mime_type)
      values ((select id from ids where name = 'b'), 'forged', 'text/plain')$$,
    '42501', 'new row violates row-level security policy for table "documents"',
    'A cannot insert a row with B''s tenant_id'
);
select lives_ok(
    $$insert into app.documents (title, mime_type) values ('doc-a-3', 'text/plain')$$,
    'A can insert a row of its own; tenant_id defaults to auth.uid()'
);
select is(
    (select tenant_id from app.documents where title = 'doc-a-3'),
    (select id from ids where name = 'a'),
    'the defaulted tenant_id is A'
);
select throws_ok(
    $$update app.documents set tenant_id = (select id from ids where name = 'b') where title = 'doc-a-3'$$,
    '42501', null, 'A cannot move a row to B'
);
select lives_ok($$update app.documents set title = 'doc-a-3b' where title = 'doc-a-3'$$, 'A can rename its own row');
select is_empty(
    $$update app.documents set title = 'hijacked' where title = 'doc-b-1' returning id$$,
    'A''s update of B''s row touches nothing'
);
select is_empty(
    $$delete from app.documents where title = 'doc-b-1' returning id$$,
    'A''s delete of B''s row touches nothing'
);
select is_empty(
    $$delete from api.documents where title = 'doc-b-1' returning id$$,
    'A''s delete of B''s row through api.documents touches nothing'
);
select isnt_empty(
    $$delete from api.documents where title = 'doc-a-3b' returning id$$,
    'A can delete its own row through api.documents'
);
select throws_ok(
    $$insert into app.documents (title, mime_type, status) values ('born ready', 'text/plain', 'ready')$$,
    '42501', null, 'an insert cannot choose its own lifecycle status'
);
select throws_ok(
    $$insert into api.documents (title) values ('through the view')$$,
    '42501', null, 'api.documents does not accept inserts from supabase-js'
);

-- tenant B
select tests.act_as((select id from ids where name = 'b'));
select results_eq('select title from app.documents', $$values ('doc-b-1')$$, 'B sees only B''s row');
select results_eq(
    'select count(*) from app.documents where title like ''doc-a-%''', 'values (0::bigint)',
    'B cannot see A''s rows even by name'
);

-- service role (bypasses RLS, as on Supabase)
select tests.act_as_service_role();
select results_eq('select count(*) from app.documents', 'values (3::bigint)', 'the service role sees every tenant');

-- claims without a user
select tests.reset_actor();
select set_config('role', 'authenticated', true);
select is_empty('select * from app.documents', 'authenticated with no sub sees nothing');
select throws_ok(
    $$insert into app.documents (title) values ('orphan')$$,
    '42501', null, 'authenticated with no sub cannot insert'
);

select * from finish();
rollback;
