-- PostgREST's claims under Citus: PostgREST sets request.jwt.claims (and the
-- request.* settings) with set_config(), which Citus does not propagate to
-- the workers, so RLS there would see no caller.  On a self-hosted PostgREST
-- in front of Citus (Phase 6B), `db-pre-request = "internal.reissue_request_settings"`
-- runs this after PostgREST's set_config() calls, in the same transaction: it
-- sets the same values again with SET LOCAL, which Citus propagates
-- (citus.propagate_set_commands = 'local').  On Supabase (6A) it is not
-- configured and changes nothing.  Untested on a real Citus cluster here.

-- function: internal.reissue_request_settings

create function internal.reissue_request_settings()
returns void
language plpgsql
volatile
set search_path = ''
as $$
declare
    setting_name text;
    setting_value text;
begin
    foreach setting_name in array array['request.jwt.claims', 'request.headers', 'request.method', 'request.path'] loop
        setting_value := current_setting(setting_name, true);
        if setting_value is not null then
            execute format('set local %I = %L', setting_name, setting_value);
        end if;
    end loop;
end
$$;

comment on function internal.reissue_request_settings() is
'PostgREST db-pre-request under Citus: the request''s settings again, with SET LOCAL (which reaches the workers).';

revoke execute on function internal.reissue_request_settings() from public;
-- Not anon: it can use nothing in Quarry's API, and is refused (401) here as everywhere.
grant execute on function internal.reissue_request_settings() to authenticated, service_role;
