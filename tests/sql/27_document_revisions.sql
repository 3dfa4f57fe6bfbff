-- Document revisions: a Drive document is ingested again in place.  It keeps
-- its id; the new version is checked like an upload (the plan's format, the
-- storage); its old chunks stay until the new ones replace them in one
-- transaction with the outbox entry; a failed new version takes the old
-- content with it; replaced files are listed for deletion.  Each function with
-- its allowed and denied callers; app.blob_deletions is the service's only.
-- A job fails only the revision it started (internal.fail_revision).
begin;
set local search_path = tests, public;
select plan(41);

select tests.create_users('a', 'b');
create temporary table d (name text primary key, id uuid default gen_random_uuid()) on commit drop;
grant select on d to public;
insert into d (name) values ('drive_a'), ('upload_a'), ('drive_b');
create function pg_temp.doc(item text) returns uuid language sql stable as $$ select id from d where name = item $$;
grant execute on function pg_temp.doc(text) to public;
create function pg_temp.sha(seed text) returns text language sql immutable security definer as $$
    select encode(extensions.digest(seed, 'sha256'), 'hex')
$$;
grant execute on function pg_temp.sha(text) to public;

-- A's Drive document is ready with three chunks; A also has an upload; B a Drive document.
insert into app.documents (tenant_id, id, title, source, mime_type, size_bytes, blob_key, sha256)
select u.id, x.id, x.name, s.source::app.document_source, 'text/plain', 100,
    'documents/' || u.id || '/' || x.id, pg_temp.sha(x.name)
from (values ('drive_a', 'a', 'drive'), ('upload_a', 'a', 'upload'), ('drive_b', 'b', 'drive')) as s (doc, owner, source)
inner join d as x on x.name = s.doc
inner join test_users as u on u.name = s.owner;
insert into app.document_texts (tenant_id, document_id, text)
values (tests.user_id('a'), pg_temp.doc('drive_a'), 'the old text');
insert into app.chunks (
    tenant_id, id, document_id, ordinal, text, token_count, embedding_model, dense, sparse_indices, sparse_values
)
select tests.user_id('a'), internal.chunk_id(tests.user_id('a'), pg_temp.doc('drive_a'), n), pg_temp.doc('drive_a'),
    n, 'old ' || n, 1, 'm', array[0.1]::real[], array[]::integer[], array[]::real[]
from generate_series(0, 2) as n;
update app.documents set status = 'ready', chunk_count = 3, page_count = 1, char_count = 12
where id = pg_temp.doc('drive_a');

-- A draws revisions of its Drive document
select tests.act_as(tests.user_id('a'));
select ok(
    internal.revision_allowance(pg_temp.doc('drive_a'), 50) >= 100,
    'the room for a new version counts the storage the document holds now'
);
select results_eq(
    $$select revision, sha256, mime_type from internal.begin_document_revision(pg_temp.doc('drive_a'), 50)$$,
    $$values (1, pg_temp.sha('drive_a'), 'text/plain')$$,
    'A draws revision 1 of its Drive document, with the current content''s hash and type'
);
select is(
    (select revision from internal.begin_document_revision(pg_temp.doc('drive_a'), 50)), 2,
    'a second reviser never draws the same number'
);
select is(
    (tests.refusal($$select internal.revision_allowance(pg_temp.doc('upload_a'), 1)$$) ->> 'status')::integer, 404,
    'an upload is not revised (its new version is a new upload)'
);
select is(
    (tests.refusal($$select * from internal.begin_document_revision(pg_temp.doc('drive_b'), 1)$$) ->> 'status')::integer,
    404, 'A cannot draw a revision of B''s document'
);
select is(
    (tests.refusal($$select internal.revision_allowance(pg_temp.doc('drive_a'), 10000000000)$$) -> 'details' ->> 'limit'),
    'storage_bytes', 'a new version that cannot fit is the storage 402'
);
select throws_ok($$select * from app.blob_deletions$$, '42501', null, 'A cannot read the files listed for deletion');

-- ... and puts revision 2 in place
select results_eq(
    $$select id, revision, status::text, title, mime_type, size_bytes, blob_key, chunk_count
      from internal.revise_document(pg_temp.doc('drive_a'), 2, 'text/markdown', 120, pg_temp.sha('v2'), 'Renamed')$$,
    $$select pg_temp.doc('drive_a'), 2, 'queued', 'Renamed', 'text/markdown', 120::bigint,
        'documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a') || '-r2', 3$$,
    'revise: the same document, revision 2, queued, its new type, size and file; the old counts until processed'
);
select is(
    (select count(*)::integer from app.chunks where document_id = pg_temp.doc('drive_a')), 3,
    '... its old chunks are still there (searchable until the new ones are stored)'
);
select is(
    (select text from app.document_texts where document_id = pg_temp.doc('drive_a')), 'the old text',
    '... and its old text'
);
select is(
    (select count(*)::integer from app.audit_log where target_id = pg_temp.doc('drive_a') and action = 'document.revised'),
    1, '... and the revision is in the audit log'
);
select is(
    (tests.refusal(
        $$select * from internal.revise_document(pg_temp.doc('drive_a'), 1, 'text/plain', 1, pg_temp.sha('v1'), 'x')$$
    ) ->> 'status')::integer, 409, 'an older revision cannot replace a newer one'
);
select is(
    (tests.refusal($$select * from internal.revise_document(
        pg_temp.doc('drive_a'), 3, 'application/vnd.openxmlformats-officedocument.wordprocessingml.document', 1,
        pg_temp.sha('v3'), 'x')$$) ->> 'code'),
    'format-not-in-plan', 'a new version in a format outside the plan is refused (415)'
);
select is(
    (tests.refusal($$select * from internal.revise_document(
        pg_temp.doc('drive_a'), 3, 'text/plain', 10000000000, pg_temp.sha('v3'), 'x')$$) -> 'details' ->> 'limit'),
    'storage_bytes', 'a new version that does not fit the storage is refused (402)'
);
select results_eq(
    $$select revision, status::text, title
      from internal.revise_document(
        pg_temp.doc('drive_a'), (select revision from internal.begin_document_revision(pg_temp.doc('drive_a'), 120)),
        'text/markdown', 120, pg_temp.sha('v2'), 'Again')$$,
    $$values (2, 'queued', 'Again')$$,
    'the same content again only renames the document'
);
select is(
    (tests.refusal($$select * from internal.revise_document(
        pg_temp.doc('drive_b'), 9, 'text/plain', 1, pg_temp.sha('x'), 'x')$$) ->> 'status')::integer,
    404, 'A cannot revise B''s document'
);

select tests.reset_actor();
select is(
    (select count(*)::integer from procrastinate.procrastinate_jobs
        where lock = internal.document_job_lock(tests.user_id('a'), pg_temp.doc('drive_a')) and status = 'todo'),
    1, 'one ingest job is queued for the new version'
);
select results_eq(
    $$select revision, delete_after <= now() from app.blob_deletions
      where document_id = pg_temp.doc('drive_a') order by revision$$,
    $$values (0, true), (1, false), (3, true)$$,
    'deletion list: the replaced file now, revision 1 (never committed) in an hour, the unneeded 3 now; not 2'
);
select throws_ok(
    $$update app.documents set blob_key = 'documents/' || tenant_id || '/' || id || '-r7'
      where id = pg_temp.doc('drive_a')$$,
    '23514', null, 'a document names only its own revision''s file'
);

-- the worker stores the new version: the chunks are replaced with the outbox entry, in one transaction
select tests.act_as(tests.user_id('a'));
select is(internal.start_processing(pg_temp.doc('drive_a')), 'text/markdown', 'the job starts the new version');
select ok(internal.store_document_text(pg_temp.doc('drive_a'), 'the new text'), '... stores its text');
select is(
    (select count(*)::integer from app.chunks where document_id = pg_temp.doc('drive_a')), 0,
    '... which drops the old chunks inside the storing transaction'
);
select internal.store_chunk(
    pg_temp.doc('drive_a'), internal.chunk_id(tests.user_id('a'), pg_temp.doc('drive_a'), 0), 0, 'new 0', 1, '{}', 'm',
    array[0.2]::real[], array[]::integer[], array[]::real[]
);
select ok(internal.finish_processing(pg_temp.doc('drive_a'), 1, 1, 12), '... and finishes');
select results_eq(
    $$select (select array_agg(text) from app.chunks where document_id = pg_temp.doc('drive_a')),
        (select count(*)::integer from app.outbox where document_id = pg_temp.doc('drive_a') and kind = 'indexed'),
        (select status::text from app.documents where id = pg_temp.doc('drive_a'))$$,
    $$values (array['new 0'], 1, 'indexing')$$,
    'the new chunks replaced the old ones, with the outbox entry the index follows'
);

-- a new version that fails takes the old content with it
select tests.reset_actor();
update app.documents set status = 'ready' where id = pg_temp.doc('drive_a');
delete from app.outbox where document_id = pg_temp.doc('drive_a');
select tests.act_as(tests.user_id('a'));
select lives_ok(
    $$select * from internal.revise_document(
        pg_temp.doc('drive_a'), (select revision from internal.begin_document_revision(pg_temp.doc('drive_a'), 1)),
        'application/pdf', 130, pg_temp.sha('v4'), 'Broken')$$,
    'a new version is put in place'
);
select internal.start_processing(pg_temp.doc('drive_a'));
select is(
    internal.fail_revision(pg_temp.doc('drive_a'), 3, 'late'), false,
    'a job that started an older revision fails nothing'
);
select ok(internal.fail_revision(pg_temp.doc('drive_a'), 4, 'The PDF is damaged.'), 'processing revision 4 fails');
select results_eq(
    $$select d.status::text, d.error_reason, d.chunk_count,
        (select count(*)::integer from app.chunks as c where c.document_id = d.id),
        (select count(*)::integer from app.document_texts as t where t.document_id = d.id),
        (select count(*)::integer from app.outbox as o where o.document_id = d.id)
      from app.documents as d where d.id = pg_temp.doc('drive_a')$$,
    $$values ('failed', 'The PDF is damaged.', null::integer, 0, 0, 1)$$,
    'the document failed with its reason, its old chunks and text gone with an outbox entry for the index'
);

-- deleting a revised document lists its file
select tests.reset_actor();
delete from app.documents where id = pg_temp.doc('drive_a');
select ok(
    exists(
        select from app.blob_deletions
        where blob_key = 'documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a') || '-r4'
    ),
    'a deleted revised document''s file is listed for deletion'
);

-- the purge (the worker's login)
set local role quarry_worker;
select results_eq(
    $$select blob_key from internal.due_blob_deletions(100) order by blob_key$$,
    $$select k from (values
        ('documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a')),
        ('documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a') || '-r2'),
        ('documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a') || '-r3'),
        ('documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a') || '-r4')
      ) as v (k) order by k$$,
    'the worker gets the due files (not revision 1''s, due in an hour)'
);
select is(
    internal.blob_deletions_done(
        array[tests.user_id('a'), tests.user_id('a')],
        array['documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a'),
            'documents/' || tests.user_id('a') || '/' || pg_temp.doc('drive_a') || '-r1']
    ), 1, '... and forgets the ones it deleted (never one not yet due)'
);
select tests.reset_actor();
insert into app.blob_deletions (tenant_id, blob_key, document_id, revision)
select tenant_id, blob_key, id, revision from app.documents where id = pg_temp.doc('drive_b');
set local role quarry_worker;
select ok(
    not exists(select from internal.due_blob_deletions(100) where blob_key like '%' || pg_temp.doc('drive_b')::text),
    'a file a document still names is never deleted (its listing is dropped)'
);
select tests.reset_actor();
select is(
    (select count(*)::integer from app.blob_deletions where document_id = pg_temp.doc('drive_b')), 0,
    '... and gone from the list'
);

-- other callers
select tests.act_as(tests.user_id('b'));
select throws_ok($$select * from internal.due_blob_deletions(1)$$, '42501', null, 'a tenant cannot run the purge');
select tests.act_as_anon();
select throws_ok(
    $$select * from internal.begin_document_revision(gen_random_uuid(), 1)$$, '42501', null,
    'anon cannot draw a revision'
);
select throws_ok(
    $$select * from internal.revise_document(gen_random_uuid(), 1, 'text/plain', 1, 'x', 'x')$$, '42501', null,
    'nor revise a document'
);
select throws_ok(
    $$select internal.fail_revision(gen_random_uuid(), 1, 'x')$$, '42501', null, 'nor fail one'
);
select tests.act_as(tests.user_id('b'));
select is(
    internal.fail_revision(pg_temp.doc('upload_a'), 0, 'x'), false, 'B cannot fail A''s document'
);
select tests.act_as_service_role();
select lives_ok($$select * from app.blob_deletions$$, 'the service role reads the deletion list');
select throws_ok(
    $$select * from internal.revise_document(gen_random_uuid(), 1, 'text/plain', 1, 'x', 'x')$$, '42501', null,
    'the service role does not revise documents (the importer does, as the tenant)'
);
select throws_ok(
    $$select internal.blob_deletions_done(array[]::uuid[], array[]::text[])$$, '42501', null,
    'nor run the purge'
);

select * from finish();
rollback;
