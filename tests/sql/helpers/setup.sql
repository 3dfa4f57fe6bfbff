-- Test-only helpers, installed into the pgTAP database after the migrations.
-- tests.act_as() is the SQL twin of quarry.db.act_as(): it sets the same
-- settings PostgREST sets (role, request.jwt.claims with role inside,
-- request.method, request.path, request.headers), local to the transaction,
-- with SET LOCAL statements as act_as does (what Citus propagates to workers).

create schema if not exists tests;
create extension if not exists pgtap with schema tests;

create or replace function tests.create_user(email text)
returns uuid
language sql
as $$
    insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
    values (gen_random_uuid(), 'authenticated', 'authenticated', email, '{}', '{}', now(), now())
    returning id
$$;

-- `alter role … set …` values of the role, as PostgREST applies them.
create or replace function tests.apply_role_settings(role_name text)
returns void
language plpgsql
as $$
declare
    setting text;
begin
    for setting in
        select s.setting
        from pg_catalog.pg_db_role_setting as d
        inner join pg_catalog.pg_roles as r on d.setrole = r.oid
        cross join lateral unnest(d.setconfig) as s (setting)
        where
            r.rolname = role_name
            and d.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
        order by d.setdatabase
    loop
        execute format('set local %I = %L', split_part(setting, '=', 1), substr(setting, strpos(setting, '=') + 1));
    end loop;
end
$$;

create or replace function tests.act_as(
    user_id uuid,
    claims jsonb default null,
    method text default 'POST',
    path text default '/',
    headers jsonb default '{}'
)
returns void
language plpgsql
as $$
declare
    effective_claims jsonb;
begin
    reset role;
    effective_claims := coalesce(
        claims,
        jsonb_build_object(
            'sub', user_id,
            'aud', 'authenticated',
            'email', (select u.email from auth.users as u where u.id = user_id)
        )
    ) || '{"role": "authenticated"}';
    perform tests.apply_role_settings('authenticated');
    set local role authenticated;
    execute format('set local "request.jwt.claims" = %L', effective_claims::text);
    execute format('set local "request.method" = %L', upper(method));
    execute format('set local "request.path" = %L', path);
    execute format('set local "request.headers" = %L', headers::text);
    -- PostgREST's search_path, plus this schema so pgTAP stays callable.
    set local search_path = api, extensions, tests;
end
$$;

create or replace function tests.act_as_anon()
returns void
language plpgsql
as $$
begin
    reset role;
    perform tests.apply_role_settings('anon');
    perform set_config('role', 'anon', true);
    perform set_config('request.jwt.claims', '{"role": "anon"}', true);
    perform set_config('request.headers', '{}', true);
end
$$;

create or replace function tests.act_as_service_role()
returns void
language plpgsql
as $$
begin
    perform set_config('role', 'service_role', true);
    perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
    perform set_config('request.headers', '{}', true);
end
$$;

-- Back to the session user (the test runner) with no claims.
create or replace function tests.reset_actor()
returns void
language plpgsql
as $$
begin
    reset role;
    perform set_config('request.jwt.claims', '', true);
    perform set_config('request.headers', '', true);
    perform set_config('search_path', 'tests, public', true);
    perform set_config('statement_timeout', '0', true);
end
$$;

-- The HTTP response a statement's `raise sqlstate 'PGRST'` asks for, as
-- {status, code, message, hint, details (parsed)}; null if it succeeded.
create or replace function tests.refusal(statement text)
returns jsonb
language plpgsql
as $$
declare
    body text;
    response text;
begin
    execute statement;
    return null;
exception when sqlstate 'PGRST' then
    get stacked diagnostics body = message_text, response = pg_exception_detail;
    return body::jsonb
        || jsonb_build_object('details', (body::jsonb ->> 'details')::jsonb, 'status', (response::jsonb -> 'status'));
end
$$;

-- Users of one test by short name, for the test's transaction:
-- select tests.create_users('a', 'b'); … tests.user_id('a').
create or replace function tests.create_users(variadic names text[])  -- noqa: LT01
returns void
language plpgsql
as $$
begin
    create temporary table if not exists test_users (name text primary key, id uuid not null) on commit drop;
    grant select on test_users to public;
    insert into test_users (name, id)
    select n, tests.create_user(n || '@example.com') from unnest(names) as n;
end
$$;

create or replace function tests.user_id(user_name text)
returns uuid
language plpgsql
stable
as $$
begin
    return (select u.id from test_users as u where u.name = user_name);
end
$$;

-- Moves the quota clock for whoever is acting (tests only).
create or replace function tests.set_clock(at_time timestamptz)
returns void
language sql
security definer
as $$
    update internal.billing_settings set clock_override = at_time
$$;

grant usage on schema tests to public;
grant execute on all functions in schema tests to public;
