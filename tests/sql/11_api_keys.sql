-- API keys: issued and revoked through the exposed schema, listed without
-- their hash, looked up only by the gateway's role.
begin;
set local search_path = tests, public;
select plan(25);

create temporary table ids (name text primary key, id uuid) on commit drop;
grant select on ids to public;
insert into ids values ('a', tests.create_user('a@example.com')), ('b', tests.create_user('b@example.com'));
create temporary table issued (key text, id uuid) on commit drop;
grant select, insert on issued to public;

select is(internal.crc32('123456789'), 3421780262, 'crc32 is CRC-32/ISO-HDLC (zlib''s)');
select is(internal.base62_fixed(3421780262, 6), '3jZRME', '... written in six base62 digits (as gateway/keys/format.py)');

select tests.act_as((select id from ids where name = 'a'));
insert into issued select (k).key, (k).id from (select api.create_api_key('ci bot') as k) as x;
select matches(
    (select key from issued), '^sk_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{32}[0-9A-Za-z]{6}$',
    'a key is sk_live_, a lookup id, a secret and a checksum'
);
select results_eq(
    'select name, status, last4 from api.api_keys',
    $$select 'ci bot', 'active', right(key, 4) from issued$$,
    'A lists its key'
);
select throws_ok('select secret_hash from app.api_keys', '42501', null, 'the hash is not readable, even by its owner');
select throws_ok(
    $$insert into app.api_keys (lookup_id, secret_hash, name, last4) values ('abcdefabcdef', '$2a$', 'x', 'abcd')$$,
    '42501', null, 'keys cannot be inserted directly'
);
select throws_ok(
    $$update app.api_keys set expires_at = null$$, '42501', null, 'nor changed directly'
);
select throws_ok($$delete from app.api_keys$$, '42501', null, 'nor deleted directly');
select throws_ok(
    $$select * from internal.find_api_key('abcdefabcdef')$$, '42501', null, 'users cannot call the lookup'
);
select throws_ok(
    $$select internal.touch_api_key(auth.uid(), gen_random_uuid())$$, '42501', null, 'nor write last_used_at'
);
select is(
    (tests.refusal($$select api.create_api_key(repeat('x', 10000))$$) -> 'status'), '422'::jsonb,
    'a 10,000-character name is a 422'
);
select is(
    (tests.refusal($$select api.create_api_key(e'tab\there')$$) -> 'status'), '422'::jsonb,
    'a control character in the name is a 422'
);
select is(
    (tests.refusal($$select api.create_api_key('late', now() - interval '1 second')$$) -> 'status'), '422'::jsonb,
    'an expiry in the past is a 422'
);
select tests.act_as(
    (select id from ids where name = 'a'),
    jsonb_build_object('sub', (select id from ids where name = 'a'), 'aud', 'authenticated', 'api_key_id', gen_random_uuid())
);
select is(
    (tests.refusal($$select api.create_api_key('minted by a key')$$) -> 'status'), '403'::jsonb,
    'a caller authenticated by an API key cannot create keys'
);
select tests.act_as((select id from ids where name = 'a'));

select tests.act_as((select id from ids where name = 'b'));
select is_empty('select * from api.api_keys', 'B sees none of A''s keys');
select is(
    (tests.refusal(format('select api.revoke_api_key(%L)', (select id from issued))) -> 'status'), '404'::jsonb,
    'B cannot revoke A''s key (404)'
);

select tests.reset_actor();
select is(
    right((select key from issued), 6), internal.base62_fixed(internal.crc32(left((select key from issued), 53)), 6),
    'the checksum covers everything before it'
);
select ok(
    (select extensions.crypt(substr(i.key, 22, 32), k.secret_hash) = k.secret_hash and k.secret_hash like '$2a$10$%'
     from app.api_keys as k inner join issued as i on k.id = i.id),
    'the secret is stored as a bcrypt hash (cost 10) and nothing else'
);
set local role quarry_gateway;
select is(
    (select tenant_id from internal.find_api_key(substr((select key from issued), 9, 12))),
    (select id from ids where name = 'a'),
    'the gateway''s role looks a key up by its public id'
);
reset role;

select tests.act_as((select id from ids where name = 'a'));
select lives_ok(format('select api.revoke_api_key(%L)', (select id from issued)), 'A revokes its key');
select is((select status from api.api_keys), 'revoked', '... and sees it revoked');
select lives_ok(format('select api.revoke_api_key(%L)', (select id from issued)), 'revoking again is harmless');

select tests.reset_actor();
insert into app.api_keys (tenant_id, lookup_id, secret_hash, name, last4)
select (select id from ids where name = 'a'), lpad(n::text, 12, '0'), '$2a$04$placeholder', 'k' || n, 'abcd'
from generate_series(1, 100) as n;
select tests.act_as((select id from ids where name = 'a'));
select is(
    (tests.refusal($$select api.create_api_key('one too many')$$) -> 'status'), '409'::jsonb,
    'at most 100 active keys per user'
);

select tests.act_as_anon();
select throws_ok('select * from api.api_keys', '42501', null, 'anon cannot list keys');
select throws_ok($$select api.create_api_key('anon')$$, '42501', null, 'anon cannot create keys');

select * from finish();
rollback;
