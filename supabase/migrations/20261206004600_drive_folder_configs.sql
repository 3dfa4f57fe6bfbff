-- Drive folder configs: the shared drive a folder lives in, and idempotent
-- creation.
--
-- Google keeps one change log per user and one per shared drive, and some
-- changes to a shared drive's files appear only in the drive's own log: a
-- folder in a shared drive must be followed through that log (changes.list
-- with its driveId) and listed in that drive's corpus.  The drive is learnt
-- from Google when the folder is added (null: My Drive); the sync reads it.
--
-- POST /api/drive/configs takes an Idempotency-Key (the record names the
-- config it created); deleting the config forgets the record, as for
-- documents, so a replay never names a config that is gone.

-- table: app.drive_folders (drive_id)

alter table app.drive_folders
add column drive_id text,
add constraint drive_folders_drive_id_length check (char_length(drive_id) between 1 and 256);

comment on column app.drive_folders.drive_id is
'The shared drive the folder is in (its change log and corpus), or null for My Drive.';

grant insert (drive_id) on app.drive_folders to authenticated;

-- function: internal.forget_idempotency_of_deleted (trigger on app.drive_folders)

create trigger drive_folders_forget_idempotency
after delete on app.drive_folders
for each row execute function internal.forget_idempotency_of_deleted();
