-- Login roles hold nothing worth escalating to.
--
-- Tenant transactions (the gateway's requests, the worker's jobs, the relay's
-- reads) run on connections that log in as quarry_authenticator, which, like
-- PostgREST's authenticator, can do nothing but switch to anon or
-- authenticated: a `reset role` inside a tenant transaction lands on a role
-- with no grant at all.  The privileged calls keep their own login roles and
-- pools, which can no longer switch to a tenant role: quarry_gateway (API-key
-- lookup, rate limits, the relay's outbox functions) and quarry_worker (the
-- job queue, the sweeps).  Login itself is granted by the operator (the
-- dev/test shim does it for trust authentication).

do $login_roles$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'quarry_authenticator') then
        create role quarry_authenticator nologin noinherit;
    end if;
    grant anon, authenticated to quarry_authenticator;
    revoke anon, authenticated from quarry_gateway;
    revoke authenticated from quarry_worker;
end
$login_roles$;

comment on role quarry_authenticator is
'Logs in for tenant transactions and may only switch to anon or authenticated; holds no privilege itself.';
