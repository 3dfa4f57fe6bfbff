-- The query log: recorded through app.record_query/complete_query, readable
-- by its owner (api.query_log), never by others, never writable directly.
begin;
set local search_path = tests, public;
select plan(12);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values ('a', tests.create_user('a@example.com')), ('b', tests.create_user('b@example.com'));

select tests.act_as((select id from ids where name = 'a'));
create temporary table logged on commit drop as select app.record_query('granite quarry', 'hybrid') as id;
select isnt(
    (select id from logged), null, 'A records a query'
);
select lives_ok(
    $$select app.complete_query((select id from logged), 3, 12.5)$$, 'A completes it'
);
select results_eq(
    'select query, mode, result_count, latency_ms from api.query_log',
    $$values ('granite quarry', 'hybrid', 3, 12.5::real)$$,
    'A reads its own log through the exposed schema'
);
select throws_ok(
    $$select app.record_query('', 'hybrid')$$, '23514', null, 'an empty query is refused'
);
select throws_ok(
    $$select app.record_query('x', 'fuzzy')$$, '23514', null, 'an unknown mode is refused'
);
select throws_ok(
    $$update app.query_log set query = 'rewritten'$$, '42501', null, 'the query text cannot be rewritten'
);
select throws_ok(
    $$insert into app.query_log (tenant_id, query, mode)
      values ((select id from ids where name = 'b'), 'forged', 'dense')$$,
    '42501', null, 'A cannot log a query as B'
);
select throws_ok($$delete from app.query_log$$, '42501', null, 'the log cannot be deleted by its owner');

select tests.act_as((select id from ids where name = 'b'));
select is_empty('select * from api.query_log', 'B sees none of A''s queries');
select lives_ok(
    $$select app.complete_query((select id from logged), 99, 1)$$, 'B completing A''s entry is a no-op...'
);
select tests.act_as((select id from ids where name = 'a'));
select results_eq(
    'select result_count from api.query_log', 'values (3)', '... A''s entry is unchanged'
);

select tests.act_as_anon();
select throws_ok('select * from api.query_log', '42501', null, 'anon cannot read the log');

select * from finish();
rollback;
