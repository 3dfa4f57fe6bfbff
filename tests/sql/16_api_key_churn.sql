-- API key churn: creations per account and UTC hour are limited by the plan
-- inside the RPC itself, revoking or deleting keys gives none back, and the
-- worker's purge deletes only keys revoked more than 30 days ago.
begin;
set local search_path = tests, public;
select plan(34);

select tests.create_users('a', 'b');
select tests.set_clock('2030-01-01 10:59:30+00');
create temporary table responses (detail jsonb) on commit drop;
grant select, insert on responses to public;

select results_eq(
    'select id, api_keys_per_hour from app.plans order by tier',
    $$values ('free', 10), ('pro', 50), ('enterprise', 200)$$,
    'each plan allows some key creations per hour, none unlimited'
);
select tests.act_as(tests.user_id('a'));
select is(
    (select api_keys_per_hour from api.plans where id = 'free'), 10, 'supabase-js reads the limit in api.plans'
);

-- Free: ten creations in the hour, through the exposed RPC as supabase-js calls it.
select lives_ok(
    $$select api.create_api_key('churn ' || n) from generate_series(1, 10) as n$$,
    'A (Free) creates ten keys through the RPC in one hour'
);
select is(
    (select created from app.api_key_creations), 10, '... and reads its own count of them'
);
select is(
    tests.refusal($$select api.create_api_key('eleventh')$$) - 'message',
    jsonb_build_object(
        'code', 'rate-limited',
        'hint', 'Revoking or deleting keys does not give creations back; wait for the next hour.',
        'details', jsonb_build_object(
            'limit', 'api_keys_per_hour', 'limit_value', 10, 'used', 10, 'resets_at', '2030-01-01T11:00:00Z',
            'retry_after', 30, 'plan', 'free'
        ),
        'status', 429
    ),
    'the eleventh is a 429 rate-limited naming the limit, the usage and the reset'
);
do $$
declare
    response text;
begin
    perform api.create_api_key('eleventh again');
exception when sqlstate 'PGRST' then
    get stacked diagnostics response = pg_exception_detail;
    insert into responses (detail) values (response::jsonb);
end
$$;
select is(
    (select detail from responses),
    '{"status": 429, "headers": {"Retry-After": "30"}}'::jsonb,
    'PostgREST and the gateway answer it with Retry-After: the seconds to the end of the hour'
);
select is((select count(*)::integer from api.api_keys), 10, 'a refused creation leaves no key behind');

select lives_ok(
    $$select api.revoke_api_key(id) from api.api_keys$$, 'A revokes every key'
);
select is(
    (tests.refusal($$select api.create_api_key('after revoking')$$) -> 'status'), '429'::jsonb,
    'revoking keys does not give creations back'
);

select tests.reset_actor();
select tests.act_as_service_role();
select lives_ok(
    $$delete from app.api_keys where tenant_id = tests.user_id('a')$$, 'the service role deletes all of A''s keys'
);
select tests.act_as(tests.user_id('a'));
select is(
    (tests.refusal($$select api.create_api_key('after deleting')$$) -> 'status'), '429'::jsonb,
    'deleting keys does not give creations back either'
);

select tests.act_as(tests.user_id('b'));
select lives_ok($$select api.create_api_key('b''s own')$$, 'B''s allowance is its own: B can still create');
select is_empty('select * from app.api_key_creations where tenant_id <> auth.uid()', 'B sees no other count');

select tests.reset_actor();
select tests.set_clock('2030-01-01 11:00:00+00');
select tests.act_as(tests.user_id('a'));
select lives_ok($$select api.create_api_key('next hour')$$, 'the next UTC hour A may create again');
select is((select created from app.api_key_creations), 1, '... counted afresh');

-- A refusal before the count (the 100-key cap) spends nothing.
select tests.reset_actor();
insert into app.api_keys (tenant_id, lookup_id, secret_hash, name, last4)
select tests.user_id('a'), lpad(n::text, 12, '0'), '$2a$04$placeholder', 'k' || n, 'abcd'
from generate_series(1, 100) as n;
select tests.act_as(tests.user_id('a'));
select is(
    (tests.refusal($$select api.create_api_key('over the cap')$$) -> 'status'), '409'::jsonb,
    'over the 100-key cap is still the 409'
);
select is((select created from app.api_key_creations), 1, '... and does not use a creation');

-- Pro allows more.
select tests.reset_actor();
insert into app.subscriptions (tenant_id, plan_id, status) values (tests.user_id('b'), 'pro', 'active');
update app.api_key_creations set created = 49, window_start = '2030-01-01 11:00:00+00' where tenant_id = tests.user_id('b');
select tests.act_as(tests.user_id('b'));
select lives_ok($$select api.create_api_key('fiftieth')$$, 'Pro: the fiftieth creation in the hour is allowed');
select is(
    (tests.refusal($$select api.create_api_key('fifty-first')$$) #>> '{details,limit_value}'), '50',
    '... the fifty-first is refused'
);

-- Nobody writes the counts but the function.
select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$update app.api_key_creations set created = 0$$, '42501', null, 'A cannot reset its own count'
);
select throws_ok($$delete from app.api_key_creations$$, '42501', null, '... nor delete it');
select throws_ok(
    $$insert into app.api_key_creations (tenant_id, window_start, created) values (auth.uid(), now(), 0)$$,
    '42501', null, '... nor write one'
);
select throws_ok(
    $$select internal.count_api_key_creation(auth.uid())$$, '42501', null, '... nor call the counter directly'
);
select tests.reset_actor();
select tests.act_as_service_role();
select isnt_empty('select * from app.api_key_creations', 'the service role reads every count');
select throws_ok(
    $$update app.api_key_creations set created = 0$$, '42501', null, 'but cannot change them'
);
select tests.act_as_anon();
select throws_ok('select * from app.api_key_creations', '42501', null, 'anon reads no counts');

-- The purge: only keys revoked more than 30 days ago.
select tests.reset_actor();
delete from app.api_keys;
insert into app.api_keys (tenant_id, lookup_id, secret_hash, name, last4, revoked_at, expires_at) values
(tests.user_id('a'), 'revoked00031', '$2a$04$x', 'revoked 31 days ago', 'abcd', now() - interval '31 days', null),
(tests.user_id('b'), 'revoked00040', '$2a$04$x', 'revoked 40 days ago', 'abcd', now() - interval '40 days', null),
(tests.user_id('a'), 'revoked00029', '$2a$04$x', 'revoked 29 days ago', 'abcd', now() - interval '29 days', null),
(tests.user_id('a'), 'active000000', '$2a$04$x', 'active', 'abcd', null, null),
(tests.user_id('a'), 'expired00000', '$2a$04$x', 'expired long ago', 'abcd', null, now() - interval '90 days');

select tests.act_as(tests.user_id('a'));
select throws_ok($$select internal.purge_revoked_api_keys()$$, '42501', null, 'a user cannot run the purge');
select tests.reset_actor();
select tests.act_as_service_role();
select throws_ok($$select internal.purge_revoked_api_keys()$$, '42501', null, 'nor can the service role');
select tests.reset_actor();
set local role quarry_worker;
select is(internal.purge_revoked_api_keys(1), 1, 'the worker purges in batches (oldest revocation first)');
select is(internal.purge_revoked_api_keys(), 1, '... until none is due');
select is(internal.purge_revoked_api_keys(), 0, '... and then purges nothing');
reset role;
select results_eq(
    'select name from app.api_keys order by name',
    $$values ('active'), ('expired long ago'), ('revoked 29 days ago')$$,
    'active, expired and recently revoked keys stay'
);
select results_eq(
    $$select tenant_id, actor_type, details ->> 'name' from app.audit_log
      where action = 'api_key.deleted' and details ->> 'name' like 'revoked%' order by id$$,
    $$values (tests.user_id('b'), 'system', 'revoked 40 days ago'), (tests.user_id('a'), 'system', 'revoked 31 days ago')$$,
    'the audit log keeps the record of each purged key'
);
select is(
    internal.job_queue('maintenance:purge_revoked_api_keys'), 'maintenance', 'the purge runs in the maintenance queue'
);

select * from finish();
rollback;
