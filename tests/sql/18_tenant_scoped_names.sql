-- Tenant-scoped names: two tenants holding a document with the same id share
-- no queue lock and no chunk (index point) id; a chunk's id must be derived
-- from (tenant, document, ordinal); abandoned documents are found under both
-- lock forms.
begin;
set local search_path = tests, public;
select plan(12);

select tests.create_users('a', 'b');
create temporary table docs (name text primary key, id uuid not null) on commit drop;
grant select on docs to public;
insert into docs values ('shared', gen_random_uuid()), ('old_lock', gen_random_uuid()), ('no_job', gen_random_uuid());

insert into app.documents (tenant_id, id, title, mime_type, blob_key)
select tests.user_id(t.name), d.id, d.name, 'text/plain', 'documents/' || tests.user_id(t.name) || '/' || d.id
from (values ('a'), ('b')) as t (name) cross join docs as d where d.name = 'shared' or t.name = 'a';
-- Each creating transaction defers its document's job (as the upload flow does).
create function pg_temp.queue_as(tenant_name text) returns void
language plpgsql as $$
begin
    perform tests.act_as(tests.user_id(tenant_name));
    perform internal.queue_document_ingest(d.id)
    from app.documents as d where d.tenant_id = tests.user_id(tenant_name);
    perform tests.reset_actor();
end
$$;
select pg_temp.queue_as('a');
select pg_temp.queue_as('b');

-- the queue

select is(
    (select count(*)::integer from procrastinate.procrastinate_jobs
     where args ->> 'document_id' = (select id::text from docs where name = 'shared') and status = 'todo'),
    2, 'the same document id in two tenants gets two ingest jobs'
);
select is(
    (select lock from procrastinate.procrastinate_jobs
     where args ->> 'document_id' = (select id::text from docs where name = 'shared')
         and args ->> 'tenant_id' = tests.user_id('b')::text),
    'document:' || tests.user_id('b') || ':' || (select id from docs where name = 'shared'),
    'a job''s lock names its tenant and document'
);
select isnt(
    (select lock from procrastinate.procrastinate_jobs
     where args ->> 'document_id' = (select id::text from docs where name = 'shared')
         and args ->> 'tenant_id' = tests.user_id('a')::text),
    (select lock from procrastinate.procrastinate_jobs
     where args ->> 'document_id' = (select id::text from docs where name = 'shared')
         and args ->> 'tenant_id' = tests.user_id('b')::text),
    'so the two tenants'' jobs do not wait on each other'
);

-- chunk ids (the check holds for every role; tenants store chunks only through internal.store_chunk)

create function pg_temp.insert_chunk(tenant_name text, chunk uuid, ordinal integer) returns void
language sql as $$
    insert into app.chunks (tenant_id, id, document_id, ordinal, text, token_count, embedding_model, dense,
                            sparse_indices, sparse_values)
    select tests.user_id(tenant_name), chunk, d.id, ordinal, 'x', 1, 'm', array[0.1]::real[], array[]::integer[],
           array[]::real[]
    from docs as d where d.name = 'shared'
$$;
create function pg_temp.derived(tenant_name text, ordinal integer) returns uuid
language sql as $$
    select internal.chunk_id(tests.user_id(tenant_name), d.id, ordinal) from docs as d where d.name = 'shared'
$$;

select lives_ok(
    $$select pg_temp.insert_chunk('a', pg_temp.derived('a', 0), 0)$$,
    'a chunk whose id is derived from (A, document, ordinal) is stored'
);
select throws_ok(
    $$select pg_temp.insert_chunk('a', gen_random_uuid(), 1)$$, '23514', null, 'a chunk id of anyone''s choosing is refused'
);
select throws_ok(
    $$select pg_temp.insert_chunk('a', pg_temp.derived('a', 2), 1)$$,
    '23514', null, 'an id derived for another ordinal is refused'
);
select throws_ok(
    $$select pg_temp.insert_chunk('b', pg_temp.derived('a', 0), 0)$$,
    '23514', null, 'B''s chunk cannot take the id of A''s, even for the document id they share'
);
select lives_ok(
    $$select pg_temp.insert_chunk('b', pg_temp.derived('b', 0), 0)$$,
    'B''s chunk 0 of the same document id is stored...'
);
select isnt(pg_temp.derived('a', 0), pg_temp.derived('b', 0), '... under an id distinct from A''s');

-- abandoned documents, under the old and the new lock

update procrastinate.procrastinate_jobs set lock = 'document:' || (select id from docs where name = 'old_lock')
where args ->> 'document_id' = (select id::text from docs where name = 'old_lock');
delete from procrastinate.procrastinate_jobs
where args ->> 'document_id' = (select id::text from docs where name = 'no_job');
select is(internal.fail_abandoned_documents(0), 1, 'only the document without a job is abandoned');
select is(
    (select status::text from app.documents where id = (select id from docs where name = 'no_job')),
    'failed', '... and it fails'
);
select is(
    (select count(*)::integer from app.documents where tenant_id = tests.user_id('a') and status = 'queued'),
    2, 'documents with a job under either lock form stay queued'
);

select * from finish();
rollback;
