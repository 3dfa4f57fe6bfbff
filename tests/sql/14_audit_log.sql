-- The audit log: one entry per state-changing operation, written in the
-- transaction of the change whichever path made it (the gateway's statements
-- with its request id; supabase-js through PostgREST; the service role), with
-- who did it.  Owners read their own; nobody writes or alters an entry; an
-- erased account leaves none behind.
begin;
set local search_path = tests, public;
select plan(24);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values
('a', tests.create_user('a@example.com')),
('b', tests.create_user('b@example.com')),
('doc', gen_random_uuid()),
('key_claim', gen_random_uuid());
create function pg_temp.id_of(item text) returns uuid language sql as $$
    select id from ids where name = item
$$;
grant execute on function pg_temp.id_of(text) to public;
-- Entries of A for one action, as (actor_type, actor is …, request_id), read as the test runner.
create function pg_temp.entries(wanted_action text)
returns table (actor_type text, actor text, request_id text)
language sql security definer as $$
    select
        l.actor_type,
        case l.actor_id when pg_temp.id_of('a') then 'a' when pg_temp.id_of('key_claim') then 'key' else 'other' end,
        l.request_id
    from app.audit_log as l where l.tenant_id = pg_temp.id_of('a') and l.action = wanted_action order by l.id
$$;
grant execute on function pg_temp.entries(text) to public;

-- documents: created through the gateway's insert, deleted through api.documents (supabase-js)
select tests.act_as(pg_temp.id_of('a'), headers => '{"x-request-id": "gw-upload-1"}');
insert into app.documents (id, title, mime_type, size_bytes, blob_key)
values (pg_temp.id_of('doc'), 'report.pdf', 'application/pdf', 1234, 'documents/' || auth.uid() || '/' || pg_temp.id_of('doc'));
select results_eq(
    $$select * from pg_temp.entries('document.created')$$, $$values ('user', 'a', 'gw-upload-1')$$,
    'creating a document records the user and the gateway''s request id'
);
select results_eq(
    $$select target_type, target_id, details from api.audit_log where action = 'document.created'$$,
    $$select 'document', pg_temp.id_of('doc'),
        '{"title": "report.pdf", "source": "upload", "mime_type": "application/pdf", "size_bytes": 1234}'::jsonb$$,
    '... names the document and what it was, and A reads it through api.audit_log'
);
select tests.act_as(pg_temp.id_of('a'), headers => '{"x-request-id": "pgrst-77"}');
delete from api.documents where id = pg_temp.id_of('doc');
select results_eq(
    $$select * from pg_temp.entries('document.deleted')$$, $$values ('user', 'a', 'pgrst-77')$$,
    'deleting through api.documents (supabase-js) is recorded the same way'
);
select tests.act_as(pg_temp.id_of('a'));
insert into app.documents (title, mime_type) values ('no-request-id.txt', 'text/plain');
select is(
    (select request_id from pg_temp.entries('document.created') offset 1), null,
    'a request without an id is recorded without one'
);

-- API keys: created and revoked through the RPC both paths share; a key acting is the key
select tests.act_as(pg_temp.id_of('a'), headers => '{"x-request-id": "gw-key-1"}');
create temporary table issued on commit drop as select * from api.create_api_key('ci bot');
grant select on issued to public;
select results_eq(
    $$select * from pg_temp.entries('api_key.created')$$, $$values ('user', 'a', 'gw-key-1')$$,
    'creating a key is recorded'
);
select is(
    (select details - 'expires_at' from api.audit_log where action = 'api_key.created'),
    jsonb_build_object('name', 'ci bot', 'prefix', (select prefix from issued)),
    '... with its name and public prefix, never the key or its hash'
);
select is(
    (select count(*) from api.audit_log where details::text like '%' || (select right(key, 20) from issued) || '%'),
    0::bigint, 'no entry holds any part of the secret'
);
select tests.act_as(
    pg_temp.id_of('a'),
    claims => jsonb_build_object('sub', pg_temp.id_of('a'), 'aud', 'authenticated', 'api_key_id', pg_temp.id_of('key_claim')),
    headers => '{"x-request-id": "gw-by-key"}'
);
insert into app.documents (title, mime_type) values ('by-key.txt', 'text/plain');
select results_eq(
    $$select * from pg_temp.entries('document.created') offset 2$$, $$values ('api_key', 'key', 'gw-by-key')$$,
    'a change made with an API key names the key, not the user'
);
select tests.act_as(pg_temp.id_of('a'), headers => '{"x-request-id": "pgrst-revoke"}');
select api.revoke_api_key((select id from issued));
select api.revoke_api_key((select id from issued));
select results_eq(
    $$select * from pg_temp.entries('api_key.revoked')$$, $$values ('user', 'a', 'pgrst-revoke')$$,
    'revoking is recorded once (revoking again changes nothing)'
);
select tests.act_as_service_role();
delete from app.api_keys where id = (select id from issued);
select results_eq(
    $$select * from pg_temp.entries('api_key.deleted')$$, $$values ('service', 'other', null::text)$$,
    'the service role deleting a key is recorded as the service'
);

-- plan changes (the billing webhook writes subscriptions as the service role)
insert into app.subscriptions (tenant_id, plan_id, status) values (pg_temp.id_of('a'), 'pro', 'active');
update app.subscriptions set status = 'past_due' where tenant_id = pg_temp.id_of('a');
update app.subscriptions set current_period_end = now() where tenant_id = pg_temp.id_of('a');
delete from app.subscriptions where tenant_id = pg_temp.id_of('a');
select results_eq(
    $$select details ->> 'plan', details ->> 'status', details ->> 'previous_plan', details ->> 'previous_status'
      from app.audit_log where tenant_id = pg_temp.id_of('a') and action = 'subscription.changed' order by id$$,
    $$values ('pro', 'active', null, null), ('pro', 'past_due', 'pro', 'active'), (null, null, 'pro', 'past_due')$$,
    'each change of plan or status is recorded (other columns are not)'
);
select is(
    (select count(*) from app.audit_log where action = 'subscription.changed' and actor_type = 'service'),
    3::bigint, '... as done by the service'
);

-- nobody writes or alters an entry
select tests.act_as(pg_temp.id_of('a'));
select throws_ok(
    $$insert into app.audit_log (tenant_id, actor_type, action, target_type)
      values (auth.uid(), 'user', 'document.created', 'document')$$,
    '42501', null, 'A cannot write an entry'
);
select throws_ok($$update app.audit_log set request_id = 'forged'$$, '42501', null, 'nor change one');
select throws_ok($$delete from app.audit_log$$, '42501', null, 'nor delete one');
select throws_ok($$delete from api.audit_log$$, '42501', null, 'nor through the exposed view');
select throws_ok(
    $$select internal.audit(auth.uid(), 'document.created', 'document', null, '{}')$$,
    '42501', null, 'nor call the recorder'
);
select tests.act_as_service_role();
select throws_ok($$update app.audit_log set request_id = 'forged'$$, '42501', null, 'the service role cannot alter one');

-- isolation
select tests.act_as(pg_temp.id_of('b'));
select is_empty('select * from api.audit_log', 'B reads none of A''s entries');
select is_empty('select * from app.audit_log', '... not even from the table');
select tests.act_as_anon();
select throws_ok('select * from api.audit_log', '42501', null, 'anon reads nothing');
select tests.act_as_service_role();
select isnt_empty(
    $$select * from app.audit_log where tenant_id = pg_temp.id_of('a')$$, 'the service role reads every tenant''s'
);

-- erasure: deleting the account removes its entries, and the cascade records none
select tests.reset_actor();
delete from auth.users where id = pg_temp.id_of('a');
select is(
    (select count(*) from app.audit_log where tenant_id = pg_temp.id_of('a')), 0::bigint,
    'an erased account leaves no audit entries'
);
select has_index(
    'app', 'audit_log', 'audit_log_tenant_occurred_idx', array['tenant_id', 'occurred_at', 'id'],
    'entries are listed per tenant, newest first, by index'
);

select * from finish();
rollback;
