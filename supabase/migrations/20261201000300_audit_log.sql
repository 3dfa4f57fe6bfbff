-- Audit log: who did what to which object, when, in which request.
--
-- Every state-changing operation is recorded by a trigger on the table it
-- changes, in the same transaction, whichever path made it (the gateway,
-- supabase-js through PostgREST, the service role), so no path can skip it.
-- Who: the user, or the API key (the gateway's key claims carry
-- `api_key_id`), or the service role; the request id comes from the
-- request's `x-request-id` header (the gateway always sets one).  Owners read
-- their own entries through api.audit_log; nobody can write, change or delete
-- an entry (only the account's erasure removes them, by cascade).  Entries
-- hold names and sizes, never secrets or document text.

-- table: app.audit_log

create table app.audit_log (
    tenant_id uuid not null references auth.users (id) on delete cascade,
    id bigint generated always as identity,
    occurred_at timestamptz not null default now(),
    actor_type text not null,
    actor_id uuid,
    action text not null,  -- noqa: RF04
    target_type text not null,
    target_id uuid,
    request_id text,
    details jsonb not null default '{}',
    primary key (tenant_id, id),
    constraint audit_log_actor_type_known check (actor_type in ('user', 'api_key', 'service', 'system')),
    constraint audit_log_action_format check (action ~ '^[a-z_]+\.[a-z_]+$'),
    constraint audit_log_request_id_length check (char_length(request_id) <= 200)
);

comment on table app.audit_log is
'Who (user, API key, service) did what (action, target) when, in which request; written by triggers only.';

grant select on app.audit_log to authenticated, service_role;

alter table app.audit_log enable row level security;
alter table app.audit_log force row level security;

create policy audit_log_select_own on app.audit_log
for select to authenticated
using (tenant_id = (select auth.uid()));

create policy audit_log_select_service on app.audit_log
for select to service_role
using (true);

create index audit_log_tenant_occurred_idx on app.audit_log (tenant_id, occurred_at desc, id desc);

-- function: internal.audit

create function internal.audit(tenant uuid, action text, target_type text, target_id uuid, details jsonb)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    claims jsonb := coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb, '{}');
    headers jsonb := coalesce(nullif(current_setting('request.headers', true), '')::jsonb, '{}');
    key_id text := claims ->> 'api_key_id';
    actor_kind text;
    actor uuid;
begin
    -- An account being erased leaves nothing behind: its entries go with it.
    if not exists (select from auth.users as u where u.id = tenant) then
        return;
    end if;
    if claims ->> 'role' = 'authenticated' then
        if key_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
            actor_kind := 'api_key';
            actor := key_id::uuid;
        else
            actor_kind := 'user';
            actor := auth.uid();
        end if;
    elsif claims ->> 'role' = 'service_role' then
        actor_kind := 'service';
    else
        actor_kind := 'system';
    end if;
    insert into app.audit_log (tenant_id, actor_type, actor_id, action, target_type, target_id, request_id, details)
    values (
        tenant, actor_kind, actor, audit.action, audit.target_type, audit.target_id,
        left(headers ->> 'x-request-id', 200), coalesce(audit.details, '{}')
    );
end
$$;

comment on function internal.audit(uuid, text, text, uuid, jsonb) is
'Record one state change of a tenant, with the acting user, key or service and the request id.';

revoke execute on function internal.audit(uuid, text, text, uuid, jsonb) from public;

-- function: internal.audit_document_change (trigger on app.documents)

create function internal.audit_document_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op = 'INSERT' then
        perform internal.audit(
            new.tenant_id, 'document.created', 'document', new.id,
            jsonb_build_object(
                'title', new.title, 'source', new.source, 'mime_type', new.mime_type, 'size_bytes', new.size_bytes
            )
        );
    else
        perform internal.audit(
            old.tenant_id, 'document.deleted', 'document', old.id,
            jsonb_build_object('title', old.title, 'source', old.source)
        );
    end if;
    return null;
end
$$;

revoke execute on function internal.audit_document_change() from public;

create trigger documents_audit
after insert or delete on app.documents
for each row execute function internal.audit_document_change();

-- function: internal.audit_api_key_change (trigger on app.api_keys)

create function internal.audit_api_key_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op = 'INSERT' then
        perform internal.audit(
            new.tenant_id, 'api_key.created', 'api_key', new.id,
            jsonb_build_object('name', new.name, 'prefix', 'sk_live_' || new.lookup_id, 'expires_at', new.expires_at)
        );
    elsif tg_op = 'UPDATE' then
        perform internal.audit(
            new.tenant_id, 'api_key.revoked', 'api_key', new.id,
            jsonb_build_object('name', new.name, 'prefix', 'sk_live_' || new.lookup_id)
        );
    else
        perform internal.audit(
            old.tenant_id, 'api_key.deleted', 'api_key', old.id,
            jsonb_build_object('name', old.name, 'prefix', 'sk_live_' || old.lookup_id)
        );
    end if;
    return null;
end
$$;

revoke execute on function internal.audit_api_key_change() from public;

create trigger api_keys_audit_create_delete
after insert or delete on app.api_keys
for each row execute function internal.audit_api_key_change();

create trigger api_keys_audit_revoke
after update of revoked_at on app.api_keys
for each row
when (old.revoked_at is null and new.revoked_at is not null)
execute function internal.audit_api_key_change();

-- function: internal.audit_subscription_change (trigger on app.subscriptions)

create function internal.audit_subscription_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    if tg_op = 'DELETE' then
        perform internal.audit(
            old.tenant_id, 'subscription.changed', 'account', old.tenant_id,
            jsonb_build_object('plan', null, 'status', null, 'previous_plan', old.plan_id, 'previous_status', old.status)
        );
    else
        perform internal.audit(
            new.tenant_id, 'subscription.changed', 'account', new.tenant_id,
            jsonb_build_object(
                'plan', new.plan_id,
                'status', new.status,
                'previous_plan', case when tg_op = 'UPDATE' then old.plan_id end,
                'previous_status', case when tg_op = 'UPDATE' then old.status end
            )
        );
    end if;
    return null;
end
$$;

revoke execute on function internal.audit_subscription_change() from public;

create trigger subscriptions_audit_create_delete
after insert or delete on app.subscriptions
for each row execute function internal.audit_subscription_change();

create trigger subscriptions_audit_change
after update of plan_id, status on app.subscriptions
for each row
when (old.plan_id is distinct from new.plan_id or old.status is distinct from new.status)
execute function internal.audit_subscription_change();

-- view: api.audit_log (supabase-js)

create view api.audit_log with (security_invoker = true) as
select
    id,
    occurred_at,
    actor_type,
    actor_id,
    action,
    target_type,
    target_id,
    request_id,
    details
from app.audit_log;

comment on view api.audit_log is 'The caller''s own audit trail, newest last by id.';

grant select on api.audit_log to authenticated;
