-- Chunks, document texts, the outbox, the ingest trigger and the relay
-- functions: allowed and denied for anon, tenants A and B, the service role,
-- the gateway and the worker.
begin;
set local search_path = tests, public;
select plan(47);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values ('a', tests.create_user('a@example.com')), ('b', tests.create_user('b@example.com'));
insert into ids values ('doc_a', gen_random_uuid()), ('doc_b', gen_random_uuid());

-- The ingest job is deferred in the same transaction as the document row, by
-- internal.queue_document_ingest (the creating transaction calls it; not a
-- trigger, which under Citus would run where the queue is not).
insert into app.documents (tenant_id, id, title, mime_type, blob_key)
select t.id, d.id, 'a.txt', 'text/plain', 'documents/' || t.id || '/' || d.id
from ids as t cross join ids as d where t.name = 'a' and d.name = 'doc_a';
insert into app.documents (tenant_id, id, title, mime_type, blob_key)
select t.id, d.id, 'b.txt', 'text/plain', 'documents/' || t.id || '/' || d.id
from ids as t cross join ids as d where t.name = 'b' and d.name = 'doc_b';
select tests.act_as((select id from ids where name = 'a'));
select internal.queue_document_ingest((select id from ids where name = 'doc_a'));
select tests.act_as((select id from ids where name = 'b'));
select internal.queue_document_ingest((select id from ids where name = 'doc_b'));
select tests.reset_actor();

select results_eq(
    $$
    select queue_name::text, task_name::text, status::text, args ->> 'tenant_id', lock, queueing_lock
    from procrastinate.procrastinate_jobs where args ->> 'document_id' = (select id::text from ids where name = 'doc_a')
    $$,
    $$
    select 'ingest', 'documents:ingest', 'todo', t.id::text,
        'document:' || t.id::text || ':' || d.id::text, 'ingest:' || t.id::text || ':' || d.id::text
    from ids as t cross join ids as d where t.name = 'a' and d.name = 'doc_a'
    $$,
    'inserting a document defers exactly one ingest job for it'
);
select throws_ok(
    $$select procrastinate.procrastinate_defer_jobs_v1(array[
        row('ingest', 'ingest_document', 0, null,
            'ingest:' || (select id::text from ids where name = 'a') || ':' || (select id::text from ids where name = 'doc_a'),
            '{}', null)::procrastinate.procrastinate_job_to_defer_v1])$$,
    '23505', null, 'a second queued job for the same document is refused (queueing lock)'
);

-- the worker, acting as tenant A, writes chunks and the text
select tests.act_as((select id from ids where name = 'a'));
select throws_ok(
    $$insert into app.documents (title, mime_type, blob_key)
      select 'stolen', 'text/plain', 'documents/' || (select id from ids where name = 'b') || '/' || id from ids where name = 'doc_b'$$,
    '23514', null, 'a document cannot point at another tenant''s stored file'
);
select is(
    internal.start_processing((select id from ids where name = 'doc_a')), 'text/plain',
    'A (the worker acting for A) moves its document to processing'
);
select ok(
    internal.store_document_text((select id from ids where name = 'doc_a'), 'the text'),
    'A stores the text of its own document being processed (server-owned: through a definer function)'
);
select lives_ok(
    $$select internal.store_chunk(id, internal.chunk_id((select id from ids where name = 'a'), id, n), n, 'chunk ' || n,
                                  2, '{}', 'm', array[0.1, 0.2]::real[], array[1, 2], array[0.5, 0.5]::real[])
      from ids cross join generate_series(0, 2) as n where name = 'doc_a'$$,
    '... and its chunks'
);
select throws_ok(
    $$insert into app.chunks (id, document_id, ordinal, text, token_count, embedding_model, dense,
                              sparse_indices, sparse_values)
      select gen_random_uuid(), id, 7, 'x', 1, 'm', array[0.1]::real[], array[]::integer[], array[]::real[]
      from ids where name = 'doc_a'$$,
    '42501', null, 'A cannot insert chunks directly, even into its own document'
);
select throws_ok(
    $$insert into app.document_texts (document_id, text) select id, 'forged' from ids where name = 'doc_a'$$,
    '42501', null, 'nor text'
);
select throws_ok(
    $$insert into app.chunks (tenant_id, id, document_id, ordinal, text, token_count, embedding_model, dense,
                              sparse_indices, sparse_values)
      select (select id from ids where name = 'b'), gen_random_uuid(), id, 9, 'x', 1, 'm', array[0.1]::real[],
             array[]::integer[], array[]::real[]
      from ids where name = 'doc_b'$$,
    '42501', null, 'A cannot write chunks into B''s tenant'
);
select is(
    (tests.refusal($$select internal.store_chunk(id, gen_random_uuid(), 9, 'x', 1, '{}', 'm', array[0.1]::real[],
                                                 array[]::integer[], array[]::real[])
                     from ids where name = 'doc_b'$$) -> 'status'),
    '409'::jsonb,
    'A cannot attach chunks to B''s document'
);
select throws_ok(
    $$update app.chunks set text = 'changed'$$, '42501', null, 'chunks are immutable for tenants'
);
select is_empty('select * from app.outbox', 'no outbox entry before the chunks are complete');
select ok(
    internal.finish_processing((select id from ids where name = 'doc_a'), 1, 3, 8),
    'A marks its document indexing'
);
select results_eq(
    'select kind, document_id from app.outbox',
    $$select 'indexed', id from ids where name = 'doc_a'$$,
    'indexing records one outbox change, visible to its tenant'
);
select throws_ok(
    $$insert into app.outbox (tenant_id, document_id, kind) values (auth.uid(), gen_random_uuid(), 'deleted')$$,
    '42501', null, 'tenants cannot write the outbox'
);
select throws_ok(
    $$delete from app.outbox$$, '42501', null, 'tenants cannot delete outbox entries'
);
select throws_ok(
    'select * from internal.outbox_claim(10, 60)', '42501', null, 'tenants cannot claim outbox entries'
);
select throws_ok(
    'select internal.outbox_renew(array[]::uuid[], 60)', '42501', null, 'nor renew leases'
);
select throws_ok(
    'select * from procrastinate.procrastinate_jobs', '42501', null, 'tenants cannot read the job queue'
);
select results_eq('select count(*) from app.chunks', 'values (3::bigint)', 'A sees its 3 chunks');

-- tenant B
select tests.act_as((select id from ids where name = 'b'));
select is_empty('select * from app.chunks', 'B sees none of A''s chunks');
select is_empty('select * from app.document_texts', 'B sees none of A''s text');
select is_empty('select * from app.outbox', 'B sees none of A''s outbox entries');
select throws_ok(
    $$delete from app.chunks$$, '42501', null, 'B cannot delete chunks (A''s or any)'
);

-- anon
select tests.act_as_anon();
select throws_ok('select * from app.chunks', '42501', null, 'anon cannot read chunks');
select throws_ok('select * from app.document_texts', '42501', null, 'anon cannot read texts');
select throws_ok('select * from app.outbox', '42501', null, 'anon cannot read the outbox');

-- the relay (gateway role): claim, complete
select tests.reset_actor();
select set_config('role', 'quarry_gateway', true);
create temporary table claimed on commit drop as
select * from internal.outbox_claim(10, 60);
select results_eq(
    'select document_id, attempts, lease is not null from claimed',
    $$select id, 1, true from ids where name = 'doc_a'$$,
    'the gateway claims the pending change, one entry per document, with a lease'
);
select is_empty(
    'select * from internal.outbox_claim(10, 60)', 'a leased change is not handed out twice'
);
select is(
    internal.outbox_renew(array(select lease from claimed), 300), 1,
    'the relay renews the lease it is working on'
);
select is(
    internal.outbox_renew(array[gen_random_uuid()], 300), 0, 'a lease nobody holds renews nothing'
);
select lives_ok(
    $$select internal.outbox_retry_later(tenant_id, document_id, lease, 'index down', 30) from claimed$$,
    'a failed apply is recorded'
);
select is(
    (select internal.outbox_complete(tenant_id, document_id, up_to_id, gen_random_uuid()) from claimed),
    false,
    'completing with a lease that is not held completes nothing'
);
select tests.reset_actor();
select results_eq(
    'select pending, failing from ops.outbox_status', 'values (2::bigint, 1::bigint)',
    'ops.outbox_status shows the pending changes (one added by the lost lease) and the failure'
);
select results_eq(
    'select last_error from ops.outbox_failures', $$values ('index down')$$, 'ops.outbox_failures shows why'
);
update app.outbox set available_at = now();
select set_config('role', 'quarry_worker', true);
select is(
    (select bool_and(internal.outbox_complete(o.tenant_id, o.document_id, o.up_to_id, o.lease))
     from internal.outbox_claim(10, 60) as o),
    true,
    'the worker (server mode) claims and completes it'
);
select throws_ok(
    'select * from app.documents', '42501', null, 'the worker role itself reads no tenant table'
);
select tests.reset_actor();
select results_eq(
    $$select status::text, ready_at is not null from app.documents where id = (select id from ids where name = 'doc_a')$$,
    $$values ('ready', true)$$,
    'completing the change makes the indexing document ready'
);
select is_empty('select * from app.outbox', 'completed changes leave the outbox');

-- deleting a document (any path) cascades its rows and records the cleanup
select tests.act_as((select id from ids where name = 'a'));
delete from api.documents where id = (select id from ids where name = 'doc_a');
select tests.reset_actor();
select results_eq(
    $$select (select count(*) from app.chunks), (select count(*) from app.document_texts),
             (select kind from app.outbox where document_id = (select id from ids where name = 'doc_a'))$$,
    $$values (0::bigint, 0::bigint, 'deleted')$$,
    'deleting through api.documents removes chunks and text and records a delete change'
);

-- abandoned documents: no job will ever run them
select tests.reset_actor();
delete from procrastinate.procrastinate_jobs where args ->> 'document_id' = (select id::text from ids where name = 'doc_b');
update app.documents set status = 'processing' where id = (select id from ids where name = 'doc_b');
select tests.act_as((select id from ids where name = 'b'));
select throws_ok(
    'select internal.fail_abandoned_documents(0)', '42501', null, 'tenants cannot run the abandoned-document sweep'
);
select tests.reset_actor();
select set_config('role', 'quarry_worker', true);
select is(internal.fail_abandoned_documents(3600), 0, 'a recently updated document is left alone');
select is(internal.fail_abandoned_documents(0), 1, 'the worker fails a document no job will ever run');
select tests.reset_actor();
select results_eq(
    $$select status::text, error_reason from app.documents where id = (select id from ids where name = 'doc_b')$$,
    $$values ('failed', 'Processing stopped unexpectedly; upload the file again.')$$,
    'with a reason the user can act on'
);

-- the service role
select tests.act_as_service_role();
select results_eq('select count(*) from app.documents', 'values (1::bigint)', 'the service role sees every tenant');
select throws_ok(
    'select * from internal.outbox_claim(1, 1)', '42501', null, 'the service role cannot run the relay'
);

select has_index(
    'procrastinate', 'procrastinate_jobs', 'procrastinate_jobs_active_lock_idx', array['lock'],
    'job fetches find same-lock jobs by index, not by comparing every queued job'
);

select * from finish();
rollback;
