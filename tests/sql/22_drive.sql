-- Google Drive: OAuth states (hashed, single-use, 10 minutes, bound to the
-- tenant), connections whose token ciphertext no API role reads, folder
-- configs, sync runs (one active per folder) and the file map; each table and
-- function with its allowed and denied callers.
begin;
set local search_path = tests, public;
select plan(48);

select tests.create_users('a', 'b');
create temporary table t (
    name text primary key, hash bytea, verifier text, id uuid default gen_random_uuid()
) on commit drop;
grant select on t to public;
insert into t (name, hash, verifier) values
('state_a', extensions.digest('state-a', 'sha256'), repeat('v', 43)),
('state_b', extensions.digest('state-b', 'sha256'), repeat('w', 43)),
('state_old', extensions.digest('state-old', 'sha256'), repeat('x', 43)),
('conn_a', null, null);
create function pg_temp.val(item text) returns uuid language sql stable as $$ select id from t where name = item $$;
create function pg_temp.hash(item text) returns bytea language sql stable as $$ select hash from t where name = item $$;
grant execute on function pg_temp.val(text), pg_temp.hash(text) to public;

-- OAuth states

select tests.act_as(tests.user_id('a'));
select ok(
    internal.begin_drive_authorization(pg_temp.hash('state_a'), repeat('v', 43)) > now() + interval '9 minutes',
    'A starts an authorization (the state''s hash and verifier are kept) for ten minutes'
);
select lives_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('state_old'), repeat('x', 43))$$, '... and another'
);
select throws_ok($$select * from app.drive_oauth_states$$, '42501', null, 'A cannot read pending states');
select throws_ok(
    $$select * from internal.take_drive_authorization(pg_temp.hash('state_a'))$$, '42501', null,
    'a tenant cannot consume a state (only the gateway''s login can)'
);
select throws_ok(
    $$select internal.begin_drive_authorization('\x0102'::bytea, repeat('v', 43))$$,
    '23514', null, 'a state hash must be 32 bytes'
);
select tests.act_as(tests.user_id('b'));
select lives_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('state_b'), repeat('w', 43))$$, 'B starts one too'
);
select tests.act_as_anon();
select throws_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('state_b'), repeat('w', 43))$$, '42501', null,
    'anon cannot start an authorization'
);

select tests.reset_actor();
set local role quarry_gateway;
select results_eq(
    $$select tenant_id, code_verifier from internal.take_drive_authorization(pg_temp.hash('state_a'))$$,
    $$select tests.user_id('a'), repeat('v', 43)$$,
    'the gateway consumes A''s state: its tenant and verifier'
);
select is_empty(
    $$select * from internal.take_drive_authorization(pg_temp.hash('state_a'))$$, 'a state is single-use'
);
select tests.reset_actor();
select tests.set_clock(now() + interval '11 minutes');
set local role quarry_gateway;
select is_empty(
    $$select * from internal.take_drive_authorization(pg_temp.hash('state_old'))$$, 'an expired state gives nothing'
);
select tests.reset_actor();
select tests.set_clock(null);
select is(
    (select count(*)::integer from app.drive_oauth_states where state_hash = pg_temp.hash('state_old')), 0,
    '... and is gone all the same'
);

-- connections

set local role quarry_gateway;
select lives_ok(
    $$select internal.save_drive_connection(
        tests.user_id('a'), pg_temp.val('conn_a'), array['https://www.googleapis.com/auth/drive.readonly'], 'k1',
        '\x01026b31'::bytea)$$,
    'the gateway stores A''s connection'
);
select tests.reset_actor();
set local role quarry_worker;
select results_eq(
    $$select key_id, ciphertext from internal.drive_token(tests.user_id('a'))$$,
    $$values ('k1', '\x01026b31'::bytea)$$,
    'the worker reads the ciphertext'
);
select results_eq(
    $$select count(*)::integer from internal.drive_tokens_to_rotate('k2', 10)$$, $$values (1)$$,
    'the rotation finds the token under an older key'
);
select is(
    internal.replace_drive_token(tests.user_id('a'), pg_temp.val('conn_a'), '\xff'::bytea, 'k2', '\x02'::bytea),
    false, 'a token that changed meanwhile is not replaced'
);
select is(
    internal.replace_drive_token(tests.user_id('a'), pg_temp.val('conn_a'), '\x01026b31'::bytea, 'k2', '\x01026b32'::bytea),
    true, 'the unchanged one is'
);
select throws_ok(
    $$select internal.save_drive_connection(tests.user_id('b'), gen_random_uuid(), '{}', 'k1', '\x01'::bytea)$$,
    '42501', null, 'the worker cannot store connections'
);

select tests.act_as(tests.user_id('a'));
select results_eq(
    $$select status::text, scopes from api.drive_connection$$,
    $$values ('active', array['https://www.googleapis.com/auth/drive.readonly'])$$,
    'A reads its connection through the exposed view'
);
select throws_ok($$select token_ciphertext from app.drive_connections$$, '42501', null, 'but never the ciphertext');
select throws_ok($$select * from internal.drive_token(auth.uid())$$, '42501', null, 'nor through the token function');
select throws_ok(
    $$select * from internal.drive_tokens_to_rotate('k9', 10)$$, '42501', null, 'nor through the rotation'
);
select tests.act_as(tests.user_id('b'));
select is_empty($$select * from api.drive_connection$$, 'B does not see A''s connection');
select tests.act_as_anon();
select throws_ok($$select * from api.drive_connection$$, '42501', null, 'anon reads no connection');
select tests.act_as_service_role();
select results_eq(
    $$select count(*)::integer from app.drive_connections$$, $$values (1)$$, 'the service role reads connections'
);

-- folders and sync runs

select tests.act_as(tests.user_id('a'));
insert into app.drive_folders (id, google_folder_id, name) values (pg_temp.val('conn_a'), 'root-a', 'Specs');
select results_eq(
    $$select name, state::text from api.drive_configs$$, $$values ('Specs', 'idle')$$,
    'A reads its folder config and its state'
);
select throws_ok(
    $$update app.drive_folders set state = 'ready'$$, '42501', null, 'A cannot set a folder''s state itself'
);
create temporary table runs on commit drop as select id from internal.trigger_drive_sync(pg_temp.val('conn_a'));
grant select on runs to public;
select results_eq(
    $$select state::text from api.drive_sync_runs$$, $$values ('queued')$$, 'A triggers a sync: a queued run'
);
select results_eq(
    $$select id from internal.trigger_drive_sync(pg_temp.val('conn_a'))$$, $$select id from runs$$,
    'triggering again answers the same run (one per folder at a time)'
);
select tests.reset_actor();
select results_eq(
    $$select count(*)::integer from procrastinate.procrastinate_jobs where task_name = 'drive:sync'$$,
    $$values (1)$$, '... and one job'
);
select tests.act_as(tests.user_id('a'));
select lives_ok(
    $$select internal.put_drive_file(pg_temp.val('conn_a'), 'file-1', 'skipped', 'big.bin', 'application/zip',
        array['root-a'], 'v1', null, 'Too large.', null)$$,
    'the worker, for A, records a skipped file'
);
select results_eq(
    $$select file_id, reason from api.drive_files$$, $$values ('file-1', 'Too large.')$$,
    'A reads it with its reason'
);
select throws_ok(
    $$select internal.put_drive_file(pg_temp.val('conn_a'), 'file-2', 'skipped', 'x', 'text/plain',
        '{}', 'v1', null, null, null)$$,
    '23514', null, 'a skipped file needs a reason'
);
select is(
    internal.drive_run_progress((select id from runs), 'running', array[1, 0, 1, 0, 0], null, true), 'syncing',
    'the worker reports the run running'
);
select results_eq(
    $$select files_seen, files_skipped from api.drive_configs$$, $$values (1, 1)$$,
    'the folder counts what its map holds'
);

select tests.act_as(tests.user_id('b'));
select is_empty($$select * from api.drive_configs$$, 'B does not see A''s folders');
select is_empty($$select * from api.drive_sync_runs$$, '... nor its runs');
select is_empty($$select * from api.drive_files$$, '... nor its files');
select is(
    (select r -> 'status' from (select tests.refusal(
        $$select * from internal.trigger_drive_sync((select id from t where name = 'conn_a'))$$) as r) as x),
    '404'::jsonb, 'B cannot trigger A''s folder (404)'
);
select is(
    internal.drive_run_progress((select id from runs), 'succeeded', array[0, 0, 0, 0, 0], null, null), null,
    'B cannot report on A''s run'
);
select throws_ok(
    $$select internal.put_drive_file(pg_temp.val('conn_a'), 'forged', 'skipped', 'x', 'text/plain',
        '{}', 'v1', null, 'x', null)$$,
    '23503', null, 'B cannot record files in A''s folder'
);
select is(internal.remove_drive_folder(pg_temp.val('conn_a'), false), false, 'B cannot remove A''s folder');
select is(
    (select r -> 'status' from (select tests.refusal(
        $$select * from api.trigger_drive_sync(gen_random_uuid())$$) as r) as x),
    '404'::jsonb, 'B has no folder to trigger through the exposed function either'
);
select tests.act_as_anon();
select throws_ok($$select * from api.drive_configs$$, '42501', null, 'anon reads no folder');
select throws_ok(
    $$select * from api.trigger_drive_sync(gen_random_uuid())$$, '42501', null, 'anon triggers nothing'
);

-- invalid_grant, scheduling, removal

select tests.reset_actor();
set local role quarry_worker;
select lives_ok(
    $$select internal.drive_needs_reauth(tests.user_id('a'), pg_temp.val('conn_a'), 'Consent again.')$$,
    'the worker marks A''s connection as needing a new consent'
);
select tests.reset_actor();
select results_eq(
    $$select c.status::text, f.state::text from app.drive_connections as c
      inner join app.drive_folders as f on c.tenant_id = f.tenant_id$$,
    $$values ('needs_reauth', 'paused')$$,
    '... which pauses its folders'
);
select tests.act_as(tests.user_id('a'));
select is(internal.remove_drive_folder(pg_temp.val('conn_a'), false), true, 'A removes its folder');
select is_empty($$select * from api.drive_files$$, '... and its file map goes with it');

select * from finish();
rollback;
