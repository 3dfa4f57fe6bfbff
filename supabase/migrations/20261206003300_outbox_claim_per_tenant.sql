-- The relay claims outbox changes one tenant at a time.
--
-- Under Citus app.outbox is distributed by tenant_id, and a statement that
-- locks rows (FOR UPDATE SKIP LOCKED) must reach a single shard.  So the
-- tenants with due changes are listed first (oldest change first; a plain
-- read across shards), then each tenant's changes are claimed by a statement
-- that names the tenant, as before: only the oldest entry of a document can
-- be leased, so two relays never work on the same document at once.

-- function: internal.outbox_claim (as before, tenant by tenant)

create or replace function internal.outbox_claim(batch integer, lease_seconds integer)
returns table (tenant_id uuid, document_id uuid, up_to_id bigint, attempts integer, lease uuid)
language plpgsql
security definer
set search_path = ''
as $$
declare
    tenant uuid;
    remaining integer := batch;
    claimed integer;
begin
    for tenant in
        select o.tenant_id from app.outbox as o
        where o.available_at <= now()
        group by o.tenant_id
        order by min(o.id)
        limit batch
    loop
        return query
        with heads as (
            select distinct on (o.document_id) o.tenant_id, o.id
            from app.outbox as o
            where o.tenant_id = tenant
            order by o.document_id, o.id
        ),

        due as (
            select o.tenant_id, o.id
            from app.outbox as o
            inner join heads as h on o.tenant_id = h.tenant_id and o.id = h.id
            where o.tenant_id = tenant and o.available_at <= now()
            order by o.id
            limit remaining
            for update of o skip locked
        )

        update app.outbox as o
        set
            available_at = now() + make_interval(secs => lease_seconds),
            attempts = o.attempts + 1,
            lease = gen_random_uuid()
        from due
        where o.tenant_id = tenant and o.tenant_id = due.tenant_id and o.id = due.id
        returning
            o.tenant_id,
            o.document_id,
            (
                select max(x.id) from app.outbox as x
                where x.tenant_id = tenant and x.document_id = o.document_id
            ),
            o.attempts,
            o.lease;
        get diagnostics claimed = row_count;
        remaining := remaining - claimed;
        exit when remaining <= 0;
    end loop;
end
$$;
