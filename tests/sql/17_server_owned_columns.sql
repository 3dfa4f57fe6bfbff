-- Server-owned columns: as `authenticated` on its own rows a user may rename
-- and delete its documents and nothing else of what the server decides or
-- computes; text and chunks are stored through definer functions that act
-- only on the caller's own document while it is processing.
begin;
set local search_path = tests, public;
select plan(80);

select tests.create_users('a', 'b');
create temporary table docs (name text primary key, id uuid not null default gen_random_uuid()) on commit drop;
grant select on docs to public;
insert into docs (name) values ('a_queued'), ('a_working'), ('a_ready'), ('b_working');
create function pg_temp.doc(doc_name text) returns uuid language sql stable as $$
    select id from docs where name = doc_name
$$;
grant execute on function pg_temp.doc(text) to public;
create temporary table logged (id uuid) on commit drop;
grant select, insert on logged to public;

-- The invariant: in schema app, authenticated may UPDATE one column of one table.
select results_eq(
    $$select table_name::text collate "default", column_name::text collate "default"
      from information_schema.column_privileges
      where table_schema = 'app' and grantee = 'authenticated' and privilege_type = 'UPDATE'$$,
    $$values ('documents', 'title')$$,
    'authenticated can update app.documents.title and no other column of any table in app'
);
select results_eq(
    $$select c.relname::text collate "default", p.privilege from pg_class as c
      inner join pg_namespace as n on c.relnamespace = n.oid
      cross join (values ('INSERT'), ('DELETE')) as p (privilege)
      where n.nspname = 'app' and c.relkind = 'r' and has_table_privilege('authenticated', c.oid, p.privilege)
      order by 1, 2$$,
    $$values ('documents', 'DELETE'), ('drive_folders', 'DELETE')$$,
    'the only whole-row writes authenticated holds in app: deleting its documents and Drive folders'
);
select results_eq(
    $$select distinct table_name::text collate "default" from information_schema.column_privileges
      where table_schema = 'app' and grantee = 'authenticated' and privilege_type = 'INSERT' order by 1$$,
    $$values ('documents'), ('drive_folders'), ('export_requests'), ('query_log')$$,
    'users insert only what their plan meters: uploads, folders, exports, queries'
);

-- A uploads (the insert stays the user's, metered by its triggers).
select tests.act_as(tests.user_id('a'));
select lives_ok(
    $$insert into app.documents (id, title, mime_type, size_bytes)
      select id, name, 'text/plain', 10 from docs where name like 'a\_%'$$,
    'A uploads its documents'
);
select internal.queue_document_ingest(id) from docs where name like 'a\_%';
select tests.act_as(tests.user_id('b'));
insert into app.documents (id, title, mime_type, size_bytes) values (pg_temp.doc('b_working'), 'b', 'text/plain', 10);
select internal.start_processing(pg_temp.doc('b_working'));

-- The worker, acting for A, stores text and chunks through the definer functions.
select tests.act_as(tests.user_id('a'));
select is(internal.start_processing(pg_temp.doc('a_working')), 'text/plain', 'the worker starts A''s document');
select is(
    internal.store_document_text(pg_temp.doc('a_working'), 'hello world'), true,
    'it stores the text of A''s processing document'
);
select lives_ok(
    $$select internal.store_chunk(pg_temp.doc('a_working'), internal.chunk_id(auth.uid(), pg_temp.doc('a_working'), n), n,
                                  'hello', 1, '{"page": 1}', 'm',
                                  array[0.1, 0.2]::real[], array[7], array[1.0]::real[])
      from generate_series(0, 1) as n$$,
    '... and its chunks'
);
select is(
    internal.store_document_text(pg_temp.doc('a_working'), 'hello again'), true,
    'a retried run stores the text again...'
);
select is((select count(*)::integer from app.chunks), 0, '... which drops the earlier run''s chunks');
select lives_ok(
    $$select internal.store_chunk(pg_temp.doc('a_working'), internal.chunk_id(auth.uid(), pg_temp.doc('a_working'), n), n,
                                  'hello', 1, '{}', 'm',
                                  array[0.1, 0.2]::real[], array[7], array[1.0]::real[])
      from generate_series(0, 2) as n$$,
    'the retried run stores three chunks'
);
select is(
    internal.finish_processing(pg_temp.doc('a_working'), 1, 999, 999), true, 'the worker finishes it'
);
select results_eq(
    $$select status::text, chunk_count, char_count, page_count from app.documents where id = pg_temp.doc('a_working')$$,
    $$values ('indexing', 3, 11, 1)$$,
    'the counts are what was stored, whatever the caller of finish_processing claimed'
);
select is(
    internal.store_document_text(pg_temp.doc('a_working'), 'rewritten'), false,
    'text cannot be stored once the document left processing'
);
select is(
    (tests.refusal($$select internal.store_chunk(pg_temp.doc('a_working'), gen_random_uuid(), 9, 'x', 1, '{}', 'm',
                                                 array[0.1]::real[], array[]::integer[], array[]::real[])$$)
     -> 'status'),
    '409'::jsonb,
    'nor chunks (409)'
);
select is(
    internal.store_document_text(pg_temp.doc('a_queued'), 'early'), false, 'nor before it is processing'
);
select is(
    internal.store_document_text(pg_temp.doc('b_working'), 'not mine'), false, 'A cannot store B''s text'
);
select is(
    (tests.refusal($$select internal.store_chunk(pg_temp.doc('b_working'), gen_random_uuid(), 0, 'x', 1, '{}', 'm',
                                                 array[0.1]::real[], array[]::integer[], array[]::real[])$$)
     -> 'status'),
    '409'::jsonb,
    'nor B''s chunks'
);
select tests.reset_actor();
update app.documents set status = 'ready', ready_at = now() where id = pg_temp.doc('a_ready');
insert into app.document_texts (tenant_id, document_id, text) values (tests.user_id('a'), pg_temp.doc('a_ready'), 'r');

-- A, on its own rows: every server-owned column of app.documents is refused.
select tests.act_as(tests.user_id('a'));
select throws_ok(
    format('update app.documents set %I = %s where id = %L', v.col, v.val, pg_temp.doc('a_ready')),
    '42501', null, format('A cannot update its document''s %s', v.col)
)
from (values
    ('status', $$'queued'$$),
    ('error_reason', $$'forged'$$),
    ('mime_type', $$'application/pdf'$$),
    ('size_bytes', '0'),
    ('page_count', '1'),
    ('chunk_count', '0'),
    ('char_count', '0'),
    ('ready_at', 'null'),
    ('blob_key', 'null'),
    ('sha256', 'null'),
    ('source', $$'drive'$$),
    ('created_at', 'now()'),
    ('updated_at', 'now()'),
    ('tenant_id', 'tenant_id'),
    ('id', 'id')
) as v (col, val);
select is(
    (select status::text from app.documents where id = pg_temp.doc('a_ready')), 'ready',
    'the document is still ready: no free re-ingestion'
);
select tests.reset_actor();
select is(
    (select count(*)::integer from procrastinate.procrastinate_jobs where args ->> 'document_id' = pg_temp.doc('a_ready')::text),
    1, '... and no second ingest job was queued'
);
select tests.act_as(tests.user_id('a'));

-- chunks and text
select throws_ok($$update app.chunks set text = 'forged'$$, '42501', null, 'A cannot rewrite its chunks'' text');
select throws_ok($$update app.chunks set dense = array[1]::real[]$$, '42501', null, '... nor their vectors');
select throws_ok($$delete from app.chunks$$, '42501', null, '... nor delete them');
select throws_ok(
    $$insert into app.chunks (id, document_id, ordinal, text, token_count, embedding_model, dense, sparse_indices,
                              sparse_values)
      values (gen_random_uuid(), pg_temp.doc('a_ready'), 5, 'x', 1, 'm', array[0.1]::real[], array[]::integer[],
              array[]::real[])$$,
    '42501', null, '... nor add any'
);
select throws_ok($$update app.document_texts set text = 'forged'$$, '42501', null, 'A cannot rewrite its text');
select throws_ok($$delete from app.document_texts$$, '42501', null, '... nor delete it');
select throws_ok(
    $$insert into app.document_texts (document_id, text) values (pg_temp.doc('a_queued'), 'x')$$,
    '42501', null, '... nor write one'
);

-- the query log
select lives_ok(
    $$insert into logged (id) select app.record_query('stone', 'hybrid', null)$$,
    'A records a query (what the daily quota counts)'
);
select lives_ok(
    $$select app.complete_query((select id from logged), 3, 1.5)$$, '... and its outcome, through app.complete_query'
);
select lives_ok(
    $$select app.complete_query((select id from logged), 99, 0)$$, 'completing it again is harmless...'
);
select results_eq(
    'select result_count, latency_ms from app.query_log', $$values (3, 1.5::real)$$, '... and changes nothing'
);
select throws_ok(
    format('update app.query_log set %I = %s', v.col, v.val), '42501', null, format('A cannot update a query''s %s', v.col)
)
from (values
    ('result_count', '0'),
    ('latency_ms', '0'),
    ('query', $$'other'$$),
    ('mode', $$'dense'$$),
    ('api_key_id', 'null'),
    ('created_at', 'now()')
) as v (col, val);
select throws_ok($$delete from app.query_log$$, '42501', null, 'A cannot delete its queries');
select throws_ok(
    $$select app.record_query('stone', 'hybrid', gen_random_uuid())$$, '42501', null,
    'A cannot attribute a query to an API key it did not use'
);
select tests.act_as(
    tests.user_id('a'),
    jsonb_build_object('sub', tests.user_id('a'), 'aud', 'authenticated', 'api_key_id', '6a1f2d7c-0000-4000-8000-000000000001')
);
select lives_ok(
    $$select app.record_query('stone', 'hybrid', '6a1f2d7c-0000-4000-8000-000000000001')$$,
    'a caller using a key records its queries under that key'
);
select throws_ok(
    $$select app.record_query('stone', 'hybrid', null)$$, '42501', null, '... and cannot hide the key'
);

-- everything else in app the server owns (one denied case per table)
select tests.act_as(tests.user_id('a'));
select lives_ok($$select api.create_api_key('bot')$$, 'A has a key');
select throws_ok(
    format('update %s set %I = %s', v.tbl, v.col, v.val), '42501', null, format('A cannot update %s.%s', v.tbl, v.col)
)
from (values
    ('app.api_keys', 'name', $$'x'$$),
    ('app.api_keys', 'revoked_at', 'null'),
    ('app.api_keys', 'expires_at', 'null'),
    ('app.api_keys', 'last_used_at', 'now()'),
    ('app.subscriptions', 'plan_id', $$'enterprise'$$),
    ('app.usage_counters', 'used', '0'),
    ('app.rate_limit_windows', 'requests', '0'),
    ('app.api_key_creations', 'created', '0'),
    ('app.outbox', 'attempts', '0'),
    ('app.audit_log', 'details', $$'{}'$$),
    ('app.plans', 'requests_per_hour', '1000000'),
    ('app.drive_folders', 'name', $$'x'$$),
    ('app.export_requests', 'created_at', $$'-infinity'$$),
    ('app.idempotency_keys', 'expires_at', $$'infinity'$$)
) as v (tbl, col, val);
select throws_ok(
    $$insert into app.subscriptions (tenant_id, plan_id, status) values (auth.uid(), 'enterprise', 'active')$$,
    '42501', null, 'A cannot subscribe itself'
);

-- what a user may still do
select lives_ok(
    format('update app.documents set title = %L where id = %L', 'renamed', pg_temp.doc('a_ready')),
    'A renames its document'
);
select is((select title from app.documents where id = pg_temp.doc('a_ready')), 'renamed', '... and it is renamed');
select tests.act_as(tests.user_id('b'));
select is_empty(
    format('update app.documents set title = %L where id = %L returning id', 'stolen', pg_temp.doc('a_ready')),
    'B cannot rename A''s document'
);
select tests.act_as(tests.user_id('a'));
select lives_ok(
    format('delete from app.documents where id = %L', pg_temp.doc('a_working')), 'A deletes its document'
);
select tests.reset_actor();
select results_eq(
    $$select (select count(*)::integer from app.chunks where document_id = pg_temp.doc('a_working')),
             (select count(*)::integer from app.document_texts where document_id = pg_temp.doc('a_working'))$$,
    $$values (0, 0)$$,
    '... and its chunks and text go with it'
);

-- anon and the service role
select tests.act_as_anon();
select throws_ok(
    $$select internal.store_document_text(gen_random_uuid(), 'x')$$, '42501', null, 'anon cannot store text'
);
select throws_ok(
    $$select internal.store_chunk(gen_random_uuid(), gen_random_uuid(), 0, 'x', 1, '{}', 'm', array[0.1]::real[],
                                  array[]::integer[], array[]::real[])$$,
    '42501', null, '... nor chunks'
);
select throws_ok(
    $$select internal.complete_query(gen_random_uuid(), 1, 1)$$, '42501', null, '... nor complete queries'
);
select tests.reset_actor();
select tests.act_as_service_role();
select throws_ok(
    $$select internal.store_document_text(gen_random_uuid(), 'x')$$, '42501', null,
    'the service role does not run the worker''s functions'
);

select * from finish();
rollback;
