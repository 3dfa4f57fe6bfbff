-- Outbox leases are renewed while a relay applies them, so they can be short:
-- a relay that dies (its process, or its connection during a database restart)
-- is replaced within one short lease, not after two minutes.

-- function: internal.outbox_renew

-- Extend the leases this relay still holds; a lease another relay took over
-- (its token changed) is not touched.  Returns how many were renewed.
create function internal.outbox_renew(leases uuid[], lease_seconds integer)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    renewed integer;
begin
    update app.outbox as o
    set available_at = now() + make_interval(secs => lease_seconds)
    where o.lease = any(leases);
    get diagnostics renewed = row_count;
    return renewed;
end
$$;

comment on function internal.outbox_renew(uuid[], integer) is
'Keep the outbox leases a relay is still working on (the relay calls it every few seconds).';

revoke execute on function internal.outbox_renew(uuid[], integer) from public;
grant execute on function internal.outbox_renew(uuid[], integer) to quarry_gateway, quarry_worker;
