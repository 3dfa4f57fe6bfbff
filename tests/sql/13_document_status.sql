-- Document status transitions: each one is a function, acts on the caller's
-- own document only and only from the states it starts from, so a late or
-- repeated job never moves a document backwards or touches another tenant's.
begin;
set local search_path = tests, public;
select plan(24);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values
('a', tests.create_user('a@example.com')),
('b', tests.create_user('b@example.com')),
('doc_a', gen_random_uuid()),
('doc_a2', gen_random_uuid()),
('doc_a3', gen_random_uuid()),
('doc_b', gen_random_uuid());
create function pg_temp.id_of(item text) returns uuid language sql as $$
    select id from ids where name = item
$$;
grant execute on function pg_temp.id_of(text) to public;
create function pg_temp.status_of(item text) returns text language sql security definer as $$
    select status::text || coalesce(': ' || error_reason, '') from app.documents where id = pg_temp.id_of(item)
$$;
grant execute on function pg_temp.status_of(text) to public;

insert into app.documents (tenant_id, id, title, mime_type, blob_key)
select t.id, d.id, d.name, 'text/plain', 'documents/' || t.id || '/' || d.id
from ids as t inner join ids as d on (t.name = 'a' and d.name in ('doc_a', 'doc_a2', 'doc_a3')) or (t.name = 'b' and d.name = 'doc_b');

-- the worker acting for A
select tests.act_as(pg_temp.id_of('a'));
select is(internal.start_processing(pg_temp.id_of('doc_a')), 'text/plain', 'start: the type of the document');
select is(pg_temp.status_of('doc_a'), 'processing', '... and it is processing');
select is(internal.start_processing(pg_temp.id_of('doc_a')), 'text/plain', 'a retried job starts it again');
select is(internal.start_processing(pg_temp.id_of('doc_b')), null, 'A cannot start B''s document');
select is(internal.finish_processing(pg_temp.id_of('doc_b'), 1, 1, 1), false, 'nor finish it');
select is(internal.fail_processing(pg_temp.id_of('doc_b'), 'x'), false, 'nor fail it');
select is(pg_temp.status_of('doc_b'), 'queued', 'B''s document is untouched');
select internal.store_document_text(pg_temp.id_of('doc_a'), repeat('x', 40));
select internal.store_chunk(
    pg_temp.id_of('doc_a'), internal.chunk_id(pg_temp.id_of('a'), pg_temp.id_of('doc_a'), n), n, 'x', 1, '{}', 'm',
    array[0.1]::real[], array[]::integer[],
    array[]::real[]
)
from generate_series(0, 2) as n;
select is(internal.finish_processing(pg_temp.id_of('doc_a'), 2, 3, 40), true, 'finish: processing → indexing');
select results_eq(
    $$select status::text, page_count, chunk_count, char_count from app.documents where id = pg_temp.id_of('doc_a')$$,
    $$values ('indexing', 2, 3, 40)$$,
    '... with its counts (chunks and characters as stored)'
);
select is(internal.finish_processing(pg_temp.id_of('doc_a'), 9, 9, 9), false, 'finishing twice changes nothing');
select is(internal.start_processing(pg_temp.id_of('doc_a')), null, 'a late job cannot restart an indexing document');
select is(internal.fail_processing(pg_temp.id_of('doc_a'), 'late'), false, 'nor fail it as processing');
select is(
    internal.fail_indexing(pg_temp.id_of('doc_a'), 'The vector index rejected its chunks.'), true,
    'the relay fails an indexing document it can never index'
);
select is(pg_temp.status_of('doc_a'), 'failed: The vector index rejected its chunks.', '... with the reason');
select is(internal.fail_indexing(pg_temp.id_of('doc_a'), 'again'), false, 'a failed document stays as it failed');
select is(internal.fail_processing(pg_temp.id_of('doc_a2'), ''), true, 'fail: queued → failed');
select is(pg_temp.status_of('doc_a2'), 'failed: Processing failed.', 'an empty reason still gives one');
select ok(internal.fail_processing(pg_temp.id_of('doc_a3'), repeat('x', 900)), 'a long reason...');
select is(char_length(pg_temp.status_of('doc_a3')), 508, '... is cut to 500 characters');

-- B, anon and the service role
select tests.act_as(pg_temp.id_of('b'));
select is(internal.start_processing(pg_temp.id_of('doc_b')), 'text/plain', 'B starts its own document');
select tests.act_as_anon();
select throws_ok(
    $$select internal.start_processing(gen_random_uuid())$$, '42501', null, 'anon cannot start a document'
);
select throws_ok(
    $$select internal.fail_processing(gen_random_uuid(), 'x')$$, '42501', null, 'nor fail one'
);
select tests.act_as_service_role();
select throws_ok(
    $$select internal.finish_processing(gen_random_uuid(), 1, 1, 1)$$, '42501', null,
    'the service role does not run the lifecycle'
);
select throws_ok(
    $$select internal.fail_indexing(gen_random_uuid(), 'x')$$, '42501', null, '... nor fail documents'
);

select * from finish();
rollback;
