-- Citus-ready schema: the lookups that precede the tenant (API key lookup id,
-- Stripe customer), the ingest job deferred outside the trigger, the Drive
-- map forgetting a deleted document, the tenant-valued functions; allowed and
-- denied for anon, the owner, another tenant, the service role and the
-- gateway's login role.
begin;
set local search_path = tests, public;
select plan(36);

select tests.create_users('a', 'b');

-- no trigger defers a job or notifies: those moved out of triggers

select hasnt_trigger('app', 'documents', 'documents_enqueue_ingest', 'no trigger defers the ingest job');
select hasnt_trigger('app', 'api_keys', 'api_keys_notify_revoke', 'no trigger announces a revocation');
select has_trigger('app', 'documents', 'documents_unlink_drive_files', 'deleting a document unlinks its Drive files');

-- internal.queue_document_ingest

select tests.act_as(tests.user_id('a'));
insert into app.documents (id, title, mime_type)
values ('00000000-0000-4000-8000-00000000000a', 'a.txt', 'text/plain');
select isnt(
    internal.queue_document_ingest('00000000-0000-4000-8000-00000000000a'), null,
    'the owner queues the ingest job of its new document'
);
select tests.reset_actor();
select is(
    (select lock from procrastinate.procrastinate_jobs where args ->> 'document_id' = '00000000-0000-4000-8000-00000000000a'),
    'document:' || tests.user_id('a') || ':00000000-0000-4000-8000-00000000000a',
    '... with the tenant''s document lock'
);
select tests.act_as(tests.user_id('b'));
select is(
    (tests.refusal($$select internal.queue_document_ingest('00000000-0000-4000-8000-00000000000a')$$) ->> 'status')::int,
    409, 'another tenant cannot queue A''s document'
);
select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$select internal.queue_document_ingest('00000000-0000-4000-8000-00000000000a')$$,
    '23505', null, 'a second job for the same document is refused (queueing lock)'
);
update app.documents set title = 'renamed' where id = '00000000-0000-4000-8000-00000000000a';
select internal.start_processing('00000000-0000-4000-8000-00000000000a');
select is(
    (tests.refusal($$select internal.queue_document_ingest('00000000-0000-4000-8000-00000000000a')$$) ->> 'status')::int,
    409, 'a document that is no longer queued cannot be queued again'
);
select tests.act_as_anon();
select throws_ok(
    $$select internal.queue_document_ingest(gen_random_uuid())$$, '42501', null, 'anon cannot queue documents'
);
select tests.act_as_service_role();
select throws_ok(
    $$select internal.queue_document_ingest(gen_random_uuid())$$, '42501', null,
    'nor can the service role (it is the owner''s creating transaction)'
);
select tests.reset_actor();

-- the API key lookup: one row per lookup id, for the gateway's role only

select tests.act_as(tests.user_id('a'));
create temporary table issued on commit drop as select * from api.create_api_key('lookup test');
grant select on issued to public;
select tests.reset_actor();
select is(
    (select l.tenant_id from internal.api_key_lookups as l where l.lookup_id = substr((select key from issued), 9, 12)),
    tests.user_id('a'), 'issuing a key records its lookup id for its tenant'
);
set local role quarry_gateway;
select is(
    (select tenant_id from internal.find_api_key(substr((select key from issued), 9, 12))),
    tests.user_id('a'), 'the gateway finds the key by its lookup id alone'
);
select is(
    (select count(*)::integer from internal.find_api_key('ZZZZZZZZZZZZ')), 0, 'an unknown lookup id finds nothing'
);
select internal.touch_api_key(tests.user_id('b'), (select id from issued));
reset role;
select is(
    (select last_used_at from app.api_keys where id = (select id from issued)), null,
    'a touch naming another tenant touches nothing'
);
set local role quarry_gateway;
select lives_ok(
    format('select internal.touch_api_key(%L, %L)', tests.user_id('a'), (select id from issued)),
    'the gateway records the key''s last use'
);
reset role;
select isnt(
    (select last_used_at from app.api_keys where id = (select id from issued)), null, '... which is recorded'
);
select throws_ok(
    format(
        'insert into internal.api_key_lookups (lookup_id, tenant_id, key_id) values (%L, %L, gen_random_uuid())',
        substr((select key from issued), 9, 12), tests.user_id('b')
    ),
    '23505', null, 'a lookup id belongs to one key of one tenant'
);
-- A lookup row naming another tenant's key (it cannot be written by the API) finds nothing.
insert into internal.api_key_lookups (lookup_id, tenant_id, key_id)
values ('ForgedLookup', tests.user_id('b'), (select id from issued));
set local role quarry_gateway;
select is(
    (select count(*)::integer from internal.find_api_key('ForgedLookup')), 0,
    'a lookup finds a key only in the tenant it names, under its own lookup id'
);
reset role;
select tests.act_as(tests.user_id('a'));
select throws_ok($$select * from internal.api_key_lookups$$, '42501', null, 'the owner cannot read the lookup table');
select throws_ok(
    format('select internal.touch_api_key(%L, %L)', tests.user_id('a'), (select id from issued)), '42501', null,
    'nor touch a key'
);
select tests.act_as_anon();
select throws_ok($$select * from internal.api_key_lookups$$, '42501', null, 'anon cannot read the lookup table');
select tests.act_as_service_role();
select ok((select count(*) from internal.api_key_lookups) >= 1, 'the service role reads the lookup table');
select tests.reset_actor();

-- the Stripe customer lookup

set local session authorization quarry_gateway;
select is(internal.record_billing_customer(tests.user_id('a'), 'cus_lookup_a'), 'cus_lookup_a', 'A''s customer');
reset session authorization;
select is(
    internal.tenant_of_stripe_customer('cus_lookup_a'), tests.user_id('a'), 'the customer leads to its tenant'
);
select is(internal.tenant_of_stripe_customer('cus_nobody'), null, 'an unknown customer leads nowhere');
select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$select internal.tenant_of_stripe_customer('cus_lookup_a')$$, '42501', null, 'tenants cannot resolve customers'
);
select throws_ok(
    $$select * from internal.stripe_customer_lookups$$, '42501', null, 'nor read the customer lookup'
);
select tests.act_as_service_role();
select is(
    (select tenant_id from internal.stripe_customer_lookups where stripe_customer_id = 'cus_lookup_a'),
    tests.user_id('a'), 'the service role reads the customer lookup'
);

-- app.usage_of: the caller's usage, the tenant given as a value

select tests.act_as(tests.user_id('a'));
select results_eq(
    format('select limit_name, used from app.usage_of(%L) order by limit_name', tests.user_id('a')),
    $$select limit_name, used from api.usage order by limit_name$$,
    'app.usage_of(tenant) is api.usage for the caller'
);
select is(
    (
        select used from app.usage_of(tests.user_id('b'))
        where limit_name = 'requests_per_hour'
    ), 0::bigint, 'another tenant''s usage is not visible (RLS): nothing used'
);
select tests.act_as_anon();
select throws_ok(
    format('select * from app.usage_of(%L)', tests.user_id('a')), '42501', null, 'anon cannot read usage'
);
select tests.reset_actor();

-- Drive files forget a deleted document

insert into app.drive_folders (tenant_id, google_folder_id, name) values (tests.user_id('a'), 'folder-1', 'F');
insert into app.drive_files (tenant_id, folder_id, file_id, state, name, mime_type, document_id)
select tests.user_id('a'), f.id, 'file-1', 'indexed', 'a.txt', 'text/plain', '00000000-0000-4000-8000-00000000000a'
from app.drive_folders as f where f.tenant_id = tests.user_id('a');
select tests.act_as(tests.user_id('a'));
delete from api.documents where id = '00000000-0000-4000-8000-00000000000a';
select tests.reset_actor();
select results_eq(
    $$select file_id, document_id from app.drive_files where tenant_id = tests.user_id('a')$$,
    $$values ('file-1', null::uuid)$$,
    'the owner deletes a synced document: its Drive file stays, without a document'
);

-- internal.reissue_request_settings (PostgREST's db-pre-request under Citus)

select tests.act_as(tests.user_id('a'), null, 'GET', '/rest/v1/documents', '{"x-request-id": "r-1"}');
create temporary table before_reissue on commit drop as
select
    current_setting('request.jwt.claims') as claims,
    current_setting('request.headers') as headers,
    current_setting('request.method') as method,
    current_setting('request.path') as path;
select lives_ok($$select internal.reissue_request_settings()$$, 'a tenant''s request re-issues its settings');
select results_eq(
    $$select current_setting('request.jwt.claims'), current_setting('request.headers'),
        current_setting('request.method'), current_setting('request.path')$$,
    $$select claims, headers, method, path from before_reissue$$,
    '... to the same values (now SET LOCAL, which Citus propagates)'
);
select tests.reset_actor();
select tests.act_as_anon();
select throws_ok(
    $$select internal.reissue_request_settings()$$, '42501', null, 'anon is refused (it can use nothing in the API)'
);
select tests.act_as_service_role();
select lives_ok($$select internal.reissue_request_settings()$$, 'the service role''s requests re-issue theirs');
select tests.reset_actor();

select * from finish();
rollback;
