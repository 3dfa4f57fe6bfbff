-- A Drive file's document: the map row forgets a deleted document by a
-- trigger instead of ON DELETE SET NULL.  Citus refuses SET NULL (and SET
-- DEFAULT) on a foreign key that includes the distribution column, even
-- PostgreSQL 15's SET NULL (document_id) that leaves tenant_id alone; the
-- trigger touches only the same tenant's rows, which under Citus sit on the
-- same node (co-located), so it may run there.

-- function: internal.unlink_drive_files (trigger on app.documents)

create function internal.unlink_drive_files()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    update app.drive_files as m set document_id = null, updated_at = now()
    where m.tenant_id = old.tenant_id and m.document_id = old.id;
    return old;
end
$$;

comment on function internal.unlink_drive_files() is
'Before a document is deleted: the Drive files mapped to it keep their row without it.';

revoke execute on function internal.unlink_drive_files() from public;

create trigger documents_unlink_drive_files
before delete on app.documents
for each row execute function internal.unlink_drive_files();

-- table: app.drive_files (the foreign key to documents takes no action of its own)

alter table app.drive_files drop constraint drive_files_tenant_id_document_id_fkey;
alter table app.drive_files
add constraint drive_files_tenant_id_document_id_fkey foreign key (tenant_id, document_id)
references app.documents (tenant_id, id);
