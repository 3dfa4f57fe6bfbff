-- Drive folders (a count) and export requests (one per interval): their plan
-- limits, and tenants never reaching each other's.
begin;
set local search_path = tests, public;
select plan(10);

select tests.create_users('a', 'b', 'c');
select tests.set_clock('2026-04-02 00:00:00+00');

select tests.act_as(tests.user_id('c'));

-- Drive folders (count) and exports (one per interval)

select lives_ok(
    $$insert into app.drive_folders (google_folder_id, name) values ('f1', 'Specs')$$, 'Free connects one folder'
);
select is(
    (select r -> 'details' ->> 'limit' from (select tests.refusal($$
        insert into app.drive_folders (google_folder_id, name) values ('f2', 'More')
    $$) as r) as x),
    'drive_folders', 'a second folder is refused'
);
delete from app.drive_folders;
select lives_ok(
    $$insert into app.drive_folders (google_folder_id, name) values ('f2', 'More')$$,
    'removing a folder frees its place'
);
select lives_ok($$insert into app.export_requests default values$$, 'Free requests an export');
-- It is built (one export runs at a time; the next request must wait for this one anyway).
select internal.start_export(id), internal.finish_export(id, 1, '{}', 7) from app.export_requests;
create temporary table refused on commit drop as
select tests.refusal($$insert into app.export_requests default values$$) as r;
select is(
    (select r -> 'status' || (r -> 'details') from refused),
    '[402, {"limit": "exports", "used": 1, "limit_value": 1, "plan": "free",
            "resets_at": "2026-05-02T00:00:00Z"}]'::jsonb,
    'a second export within the month is refused, saying when the next is allowed'
);
select tests.set_clock('2026-05-02 00:00:00+00');
select lives_ok($$insert into app.export_requests default values$$, 'one month later it is allowed');

-- isolation

select tests.act_as(tests.user_id('b'));
select is_empty(
    $$select * from app.drive_folders where tenant_id <> auth.uid()$$, 'B reads no Drive folder of another tenant'
);
select is_empty(
    $$select * from app.export_requests where tenant_id <> auth.uid()$$, 'B reads no export request of another tenant'
);
select throws_ok(
    $$insert into app.drive_folders (tenant_id, google_folder_id, name) values (tests.user_id('c'), 'x', 'Forged')$$,
    '42501', null, 'B cannot connect a folder for C'
);
select throws_ok(
    $$insert into app.export_requests (tenant_id) values (tests.user_id('c'))$$,
    '42501', null, 'B cannot request C''s export'
);

select * from finish();
rollback;
