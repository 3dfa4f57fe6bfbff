-- Upload limits before expensive work: before the gateway stores a file it
-- learns how many bytes the tenant's storage can still take (which bounds
-- the stream it reads, chunked or not), and once the type is sniffed whether
-- the plan takes that format.  Both are advisory and count nothing: the
-- insert's triggers still decide, atomically.

-- function: internal.require_plan_format

-- The 415 a plan gives a format it does not include (null formats: all).
create function internal.require_plan_format(tenant_plan app.plans, mime_type text)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if tenant_plan.formats is null or (mime_type is not null and mime_type = any(tenant_plan.formats)) then
        return;
    end if;
    perform internal.raise_http(
        415,
        'format-not-in-plan',
        format(
            'The %s plan does not include %s files.',
            tenant_plan.display_name, coalesce(mime_type, 'unidentified')
        ),
        jsonb_build_object(
            'mime_type', mime_type,
            'plan', tenant_plan.id,
            'allowed_formats', to_jsonb(tenant_plan.formats),
            'plans_allowing', (
                select coalesce(jsonb_agg(p.id order by p.tier), '[]'::jsonb) from app.plans as p
                where p.formats is null or mime_type = any(p.formats)
            )
        ),
        'Upgrade your plan to upload this format.'
    );
end
$$;

comment on function internal.require_plan_format(app.plans, text) is
'Refuse (415 format-not-in-plan) a format the plan does not include.';

revoke execute on function internal.require_plan_format(app.plans, text) from public;

-- function: internal.meter_document_insert (trigger on app.documents, as before)

create or replace function internal.meter_document_insert()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    tenant_plan app.plans;
begin
    if not internal.metered_row(new.tenant_id, tg_table_name) then
        return new;
    end if;
    tenant_plan := internal.tenant_plan(new.tenant_id);
    perform internal.require_plan_format(tenant_plan, new.mime_type);
    perform internal.require_quota(new.tenant_id, tenant_plan, 'documents_per_month', 1);
    perform internal.require_quota(new.tenant_id, tenant_plan, 'storage_bytes', new.size_bytes);
    return new;
end
$$;

-- function: internal.upload_allowance

-- precheck_upload's 402s, then the bytes the caller's storage can still take.
create function internal.upload_allowance(expected_bytes bigint)
returns bigint
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    if tenant is null then
        raise sqlstate '42501' using message = 'uploads need a signed-in user';
    end if;
    perform internal.precheck_upload(expected_bytes);
    return greatest((internal.tenant_plan(tenant)).storage_bytes - internal.quota_used(tenant, 'storage_bytes'), 0);
end
$$;

comment on function internal.upload_allowance(bigint) is
'Before an upload is received: 402 if the month or the storage is used up, else the storage bytes left.';

revoke execute on function internal.upload_allowance(bigint) from public;
grant execute on function internal.upload_allowance(bigint) to authenticated;

-- function: internal.precheck_format

create function internal.precheck_format(mime_type text)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if auth.uid() is null then
        raise sqlstate '42501' using message = 'uploads need a signed-in user';
    end if;
    perform internal.require_plan_format(internal.tenant_plan(auth.uid()), mime_type);
end
$$;

comment on function internal.precheck_format(text) is
'Before a sniffed file is stored: 415 if the caller''s plan does not take its format.';

revoke execute on function internal.precheck_format(text) from public;
grant execute on function internal.precheck_format(text) to authenticated;
