-- Account: who the caller is and which plan applies, plus the schema-version
-- probe behind the gateway's /readyz.

-- helpers

-- Every tenant is on Free until billing exists; the quotas issue replaces
-- this body (same signature) with the subscription-aware rule.
create function app.effective_plan(tenant uuid)
returns text
language sql
stable
set search_path = ''
as $$
    select 'free'::text where tenant is not null
$$;

grant execute on function app.effective_plan(uuid) to authenticated, service_role;

-- The newest migration applied by the Supabase CLI.  SECURITY DEFINER because
-- the CLI's history table is not readable by the gateway's role; plpgsql so
-- the table is resolved at call time, not when this migration runs.
create function internal.applied_schema_version()
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (select max(version) from supabase_migrations.schema_migrations);
end
$$;

revoke execute on function internal.applied_schema_version() from public;
grant execute on function internal.applied_schema_version() to quarry_gateway;

-- API functions

create function api.me()
returns table (tenant_id uuid, email text, plan text)
language sql
stable
set search_path = ''
as $$
    select
        auth.uid() as tenant_id,
        auth.jwt() ->> 'email' as email,
        app.effective_plan(auth.uid()) as plan
    where auth.uid() is not null
$$;

grant execute on function api.me() to authenticated;
