-- The gateway's rate limit: one statement per request, per account and UTC
-- hour, callable by the gateway's role only.
begin;
set local search_path = tests, public;
select plan(9);

select tests.create_users('a', 'b', 'c');
select tests.set_clock('2026-05-02 00:00:00+00');

-- How many of `requests` calls to the rate limit, one statement each, get through.
create function pg_temp.allowed_of(tenant uuid, requests integer) returns integer language plpgsql as $$
declare
    allowed_count integer := 0;
begin
    for i in 1..requests loop
        allowed_count := allowed_count + (select allowed::integer from internal.hit_rate_limit(tenant));
    end loop;
    return allowed_count;
end
$$;
grant execute on function pg_temp.allowed_of(uuid, integer) to public;

-- users cannot touch it

select tests.act_as(tests.user_id('a'));
select throws_ok(
    $$update app.rate_limit_windows set requests = 0$$, '42501', null, 'nor reset its rate limit'
);
select throws_ok(
    $$select * from internal.hit_rate_limit(auth.uid())$$, '42501', null, 'nor the gateway''s rate limit'
);

-- the gateway's rate limit: one statement per request, per caller and hour

select tests.reset_actor();
set local role quarry_gateway;
select results_eq(
    $$select request_limit, remaining, resets_at, allowed from internal.hit_rate_limit(tests.user_id('c'))$$,
    $$values (50, 49, '2026-05-02 01:00:00+00'::timestamptz, true)$$,
    'the first request of the hour leaves 49 of 50 on Free'
);
select is(
    pg_temp.allowed_of(tests.user_id('c'), 59),
    49, 'exactly 50 requests an hour get through'
);
select results_eq(
    $$select remaining, allowed from internal.hit_rate_limit(tests.user_id('c'))$$,
    $$values (0, false)$$, 'the next is refused'
);
select is(
    (select allowed from internal.hit_rate_limit(tests.user_id('c'), tests.user_id('b'))),
    false, 'an API key draws on the account''s allowance: minting keys cannot multiply it'
);
reset role;
select is(
    (select requests from app.rate_limit_windows where subject_id = tests.user_id('c')), 51,
    'refused requests do not run the counter past the limit'
);
select is(
    (select count(*) from app.rate_limit_windows where subject_id = tests.user_id('b')), 0::bigint,
    'a refused key request is not counted on the key'
);
select tests.set_clock('2026-05-02 01:00:00+00');
set local role quarry_gateway;
select is(
    (select allowed from internal.hit_rate_limit(tests.user_id('c'))), true, 'a new hour, a new window'
);
reset role;

select * from finish();
rollback;
