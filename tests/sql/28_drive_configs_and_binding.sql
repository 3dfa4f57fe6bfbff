-- Drive folder configs know their shared drive and forget their idempotency
-- record when deleted; OAuth states keep the hash of the starting browser's
-- cookie.  Allowed and denied callers for each.
begin;
set local search_path = tests, public;
select plan(13);

select tests.create_users('a', 'b');
create temporary table t (name text primary key, hash bytea) on commit drop;
grant select on t to public;
insert into t values
('state', extensions.digest('state-a', 'sha256')),
('browser', extensions.digest('cookie-a', 'sha256')),
('server_state', extensions.digest('state-server', 'sha256')),
('other_state', extensions.digest('state-other', 'sha256'));
create function pg_temp.hash(item text) returns bytea language sql stable as $$ select hash from t where name = item $$;
grant execute on function pg_temp.hash(text) to public;

-- OAuth states bound to a browser

select tests.act_as(tests.user_id('a'));
select lives_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('state'), repeat('v', 43), pg_temp.hash('browser'))$$,
    'A starts an authorization bound to its browser''s cookie (its hash)'
);
select lives_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('server_state'), repeat('w', 43))$$,
    '... or one bound by the state alone (a server''s flow)'
);
select throws_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('other_state'), repeat('v', 43), '\x01'::bytea)$$,
    '23514', null, 'a browser hash is 32 bytes'
);
select tests.act_as_anon();
select throws_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('other_state'), repeat('v', 43), null)$$,
    '42501', null, 'anon cannot start one'
);
select tests.act_as_service_role();
select throws_ok(
    $$select internal.begin_drive_authorization(pg_temp.hash('other_state'), repeat('v', 43), null)$$,
    '42501', null, 'nor the service role (an authorization is a user''s)'
);
select tests.reset_actor();
set local role quarry_gateway;
select results_eq(
    $$select tenant_id, browser_hash from internal.take_drive_authorization(pg_temp.hash('state'))$$,
    $$select tests.user_id('a'), pg_temp.hash('browser')$$,
    'the callback learns the tenant and the browser it must come from'
);
select results_eq(
    $$select browser_hash is null from internal.take_drive_authorization(pg_temp.hash('server_state'))$$,
    $$values (true)$$,
    '... or that no browser is bound'
);
select tests.reset_actor();

-- folder configs: their shared drive

select tests.act_as(tests.user_id('a'));
select lives_ok(
    $$insert into app.drive_folders (google_folder_id, name, drive_id) values ('team-folder', 'Team', '0Ateam')$$,
    'A adds a folder of a shared drive'
);
select results_eq(
    $$select drive_id from app.drive_folders where tenant_id = tests.user_id('a') and google_folder_id = 'team-folder'$$,
    $$values ('0Ateam'::text)$$,
    '... and reads its drive'
);
select tests.reset_actor();
select throws_ok(
    $$update app.drive_folders set drive_id = '' where google_folder_id = 'team-folder'$$,
    '23514', null, 'a drive id is not empty (any writer)'
);
select tests.act_as(tests.user_id('b'));
select is_empty(
    $$select drive_id from app.drive_folders where google_folder_id = 'team-folder'$$, 'B does not see A''s config'
);

-- a deleted config forgets the idempotency record that created it

select tests.reset_actor();
insert into app.idempotency_keys (tenant_id, key_hash, operation, fingerprint, response_status, response_body, target_id)
select f.tenant_id, repeat('a', 64), 'POST /api/drive/configs', repeat('b', 64), 201, '\x00', f.id
from app.drive_folders as f where f.google_folder_id = 'team-folder';
select tests.act_as(tests.user_id('a'));
select lives_ok($$delete from app.drive_folders where google_folder_id = 'team-folder'$$, 'A deletes the config');
select tests.reset_actor();
select is(
    (select count(*)::integer from app.idempotency_keys where key_hash = repeat('a', 64)), 0,
    '... and the idempotency record that created it is gone'
);

select * from finish();
rollback;
