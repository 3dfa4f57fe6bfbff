-- Idempotency keys: a POST that creates something, sent again with the same
-- Idempotency-Key (a client retrying after a lost response), answers what the
-- first one answered instead of creating a second (the IETF httpapi draft
-- "The Idempotency-Key HTTP Header Field", Stripe's idempotency keys).
--
-- The record is claimed and completed inside the transaction that creates
-- the thing, so it exists exactly when the creation committed, and a
-- concurrent duplicate waits on it (the unique key) and then replays it.  The
-- key itself is never stored: rows are found by a hash of tenant and key, and
-- the response body is sealed (AES-GCM) with a key derived from the
-- Idempotency-Key, so the table alone reveals no response (an API key's
-- plaintext included).  A record lasts 24 hours (a periodic job purges it),
-- or until the document it created is deleted: a replay never names a
-- document that is gone.

-- table: app.idempotency_keys

create table app.idempotency_keys (
    tenant_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    key_hash text not null,
    operation text not null,  -- noqa: RF04
    fingerprint text not null,
    response_status integer,
    response_body bytea,
    target_id uuid,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null default now() + interval '24 hours',
    primary key (tenant_id, key_hash),
    constraint idempotency_keys_hash_format check (key_hash ~ '^[0-9a-f]{64}$'),
    constraint idempotency_keys_fingerprint_format check (fingerprint ~ '^[0-9a-f]{64}$'),
    constraint idempotency_keys_operation_length check (char_length(operation) between 1 and 200),
    constraint idempotency_keys_status_success check (response_status between 200 and 299)
);

comment on table app.idempotency_keys is
'The response of each creation sent with an Idempotency-Key, sealed, for 24 hours.';

grant select, delete on app.idempotency_keys to service_role;

alter table app.idempotency_keys enable row level security;
alter table app.idempotency_keys force row level security;

create policy idempotency_keys_service on app.idempotency_keys
for all to service_role
using (true)
with check (true);

create index idempotency_keys_tenant_target_idx on app.idempotency_keys (tenant_id, target_id)
where target_id is not null;

-- function: internal.claim_idempotency_key

-- In the creating transaction, before creating: 'new' (the row is ours until
-- the transaction ends: go ahead, then complete it), 'replay' (a creation with
-- this key committed: answer its response), 'mismatch' (the key was used for
-- another request), or 'pending' (a row without a response, which a
-- completed creation never leaves).  A concurrent duplicate's insert waits
-- for the first transaction, then sees its outcome.
create function internal.claim_idempotency_key(key_hash text, operation text, fingerprint text)
returns table (outcome text, response_status integer, response_body bytea)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    existing app.idempotency_keys;
begin
    if tenant is null then
        perform internal.raise_http(401, 'unauthorized', 'Only a signed-in user can use idempotency keys.', '{}');
    end if;
    delete from app.idempotency_keys as k
    where k.tenant_id = tenant and k.key_hash = claim_idempotency_key.key_hash and k.expires_at <= now();
    insert into app.idempotency_keys as k (tenant_id, key_hash, operation, fingerprint)
    values (tenant, claim_idempotency_key.key_hash, claim_idempotency_key.operation, claim_idempotency_key.fingerprint)
    on conflict on constraint idempotency_keys_pkey do nothing;
    if found then
        return query select 'new'::text, null::integer, null::bytea;
        return;
    end if;
    select k.* into existing from app.idempotency_keys as k
    where k.tenant_id = tenant and k.key_hash = claim_idempotency_key.key_hash;
    if existing.operation <> claim_idempotency_key.operation
        or existing.fingerprint <> claim_idempotency_key.fingerprint then
        return query select 'mismatch'::text, null::integer, null::bytea;
    elsif existing.response_status is null then
        return query select 'pending'::text, null::integer, null::bytea;
    else
        return query select 'replay'::text, existing.response_status, existing.response_body;
    end if;
end
$$;

comment on function internal.claim_idempotency_key(text, text, text) is
'Claim an idempotency key for the creation in this transaction, or learn the response it already had.';

revoke execute on function internal.claim_idempotency_key(text, text, text) from public;
grant execute on function internal.claim_idempotency_key(text, text, text) to authenticated;

-- function: internal.complete_idempotency_key

create function internal.complete_idempotency_key(
    key_hash text, response_status integer, response_body bytea, target_id uuid
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.idempotency_keys as k
    set
        response_status = complete_idempotency_key.response_status,
        response_body = complete_idempotency_key.response_body,
        target_id = complete_idempotency_key.target_id
    where
        k.tenant_id = auth.uid()
        and k.key_hash = complete_idempotency_key.key_hash
        and k.response_status is null;
    return found;
end
$$;

comment on function internal.complete_idempotency_key(text, integer, bytea, uuid) is
'Record the response of the creation that claimed the key (same transaction).';

revoke execute on function internal.complete_idempotency_key(text, integer, bytea, uuid) from public;
grant execute on function internal.complete_idempotency_key(text, integer, bytea, uuid) to authenticated;

-- function: internal.forget_idempotency_of_deleted (trigger on app.documents)

create function internal.forget_idempotency_of_deleted()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    delete from app.idempotency_keys as k where k.tenant_id = old.tenant_id and k.target_id = old.id;
    return null;
end
$$;

revoke execute on function internal.forget_idempotency_of_deleted() from public;

create trigger documents_forget_idempotency
after delete on app.documents
for each row execute function internal.forget_idempotency_of_deleted();

-- function: internal.purge_idempotency_keys

create function internal.purge_idempotency_keys()
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    purged integer;
begin
    delete from app.idempotency_keys as k where k.expires_at <= now();
    get diagnostics purged = row_count;
    return purged;
end
$$;

comment on function internal.purge_idempotency_keys() is 'Forget idempotency records older than 24 hours.';

revoke execute on function internal.purge_idempotency_keys() from public;
grant execute on function internal.purge_idempotency_keys() to quarry_worker;

-- function: internal.job_queue (the maintenance queue joins)

create or replace function internal.job_queue(task_name text)
returns text
language sql
immutable
set search_path = ''
as $$
    select case task_name
        when 'documents:ingest' then 'ingest'
        when 'maintenance:purge_idempotency_keys' then 'maintenance'
    end
$$;
