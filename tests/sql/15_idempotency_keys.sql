-- Idempotency keys: claimed and completed in the creating transaction, per
-- tenant; a second claim replays, or is refused when the request differs; no
-- API role reads the records; the worker purges the expired ones.
begin;
set local search_path = tests, public;
select plan(17);

select tests.create_users('a', 'b');
create temporary table hashes on commit drop as
select repeat('a', 64) as key_hash, repeat('1', 64) as request, repeat('2', 64) as other_request;
grant select on hashes to public;

select tests.act_as(tests.user_id('a'));
select results_eq(
    $$select outcome, response_status from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/documents', (select request from hashes))$$,
    $$values ('new', null::integer)$$,
    'a first claim is new'
);
select ok(
    internal.complete_idempotency_key((select key_hash from hashes), 202, '\x0102'::bytea, gen_random_uuid()),
    'the creating transaction completes it with the response'
);
select results_eq(
    $$select outcome, response_status, response_body from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/documents', (select request from hashes))$$,
    $$values ('replay', 202, '\x0102'::bytea)$$,
    'the same request again replays the response'
);
select results_eq(
    $$select outcome from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/documents', (select other_request from hashes))$$,
    $$values ('mismatch')$$,
    'another request with the same key is a mismatch'
);
select results_eq(
    $$select outcome from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/keys', (select request from hashes))$$,
    $$values ('mismatch')$$,
    '... and so is another operation'
);
select is(
    internal.complete_idempotency_key((select key_hash from hashes), 201, '\x03'::bytea, null), false,
    'a completed record is never overwritten'
);
select throws_ok($$select * from app.idempotency_keys$$, '42501', null, 'a tenant cannot read the records');
select throws_ok($$delete from app.idempotency_keys$$, '42501', null, 'nor delete them');
select throws_ok($$select internal.purge_idempotency_keys()$$, '42501', null, 'nor purge them');

select tests.act_as(tests.user_id('b'));
select results_eq(
    $$select outcome from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/documents', (select request from hashes))$$,
    $$values ('new')$$,
    'the same key hash is another record for another tenant'
);

select tests.act_as_anon();
select throws_ok(
    $$select * from internal.claim_idempotency_key(repeat('c', 64), 'POST /api/keys', repeat('d', 64))$$,
    '42501', null, 'anon cannot claim'
);

select tests.act_as_service_role();
select is(
    (select count(*) from app.idempotency_keys where key_hash = (select key_hash from hashes)), 2::bigint,
    'the service role reads every tenant''s'
);

-- deleting the document a key created forgets the key
select tests.reset_actor();
insert into app.documents (tenant_id, id, title, mime_type)
values (tests.user_id('b'), '00000000-0000-4000-8000-00000000000d', 'made with a key', 'text/plain');
select tests.act_as(tests.user_id('b'));
select internal.complete_idempotency_key(
    (select key_hash from hashes), 202, '\x04'::bytea, '00000000-0000-4000-8000-00000000000d'
);
delete from api.documents where id = '00000000-0000-4000-8000-00000000000d';
select results_eq(
    $$select outcome from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/documents', (select request from hashes))$$,
    $$values ('new')$$,
    'a key whose document was deleted is forgotten: a replay never names a document that is gone'
);
select tests.act_as_service_role();
select is(
    (select count(*) from app.idempotency_keys where tenant_id = tests.user_id('b') and response_status is not null),
    0::bigint, '... its record went with the document'
);

-- expiry: an expired record is as good as none, and the worker purges it
select tests.reset_actor();
update app.idempotency_keys set expires_at = now() - interval '1 second' where tenant_id = tests.user_id('a');
select tests.act_as(tests.user_id('a'));
select results_eq(
    $$select outcome from internal.claim_idempotency_key(
        (select key_hash from hashes), 'POST /api/keys', (select other_request from hashes))$$,
    $$values ('new')$$,
    'an expired key starts afresh, whatever it was used for'
);
select tests.reset_actor();
update app.idempotency_keys set expires_at = now() - interval '1 second';
set local role quarry_worker;
select is(internal.purge_idempotency_keys(), 2, 'the worker purges the expired records');
reset role;
set local role quarry_gateway;
select throws_ok(
    $$select internal.purge_idempotency_keys()$$, '42501', null, 'the gateway''s login role cannot purge'
);
reset role;

select * from finish();
rollback;
