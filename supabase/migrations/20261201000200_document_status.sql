-- Document status: every transition of queued → processing → indexing →
-- ready | failed(reason) is one of these functions (ready is
-- internal.outbox_complete's).  They act on the caller's own document only
-- (tenant = auth.uid(), inside the worker's or relay's tenant transaction) and
-- only from the states the transition starts from, so a late or repeated job
-- cannot move a document backwards.  SECURITY DEFINER, so that users need no
-- UPDATE privilege on the status columns for the server's own work.

-- function: internal.start_processing

-- The document's MIME type ('' if unknown), or null if it is gone or no
-- longer waiting to be processed (an earlier run got further).
create function internal.start_processing(document uuid)
returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    started_type text;
begin
    update app.documents as d
    set status = 'processing', error_reason = null
    where d.tenant_id = auth.uid() and d.id = document and d.status in ('queued', 'processing')
    returning coalesce(d.mime_type, '') into started_type;
    return started_type;
end
$$;

comment on function internal.start_processing(uuid) is 'queued|processing → processing; its MIME type, or null.';

revoke execute on function internal.start_processing(uuid) from public;
grant execute on function internal.start_processing(uuid) to authenticated;

-- function: internal.finish_processing

-- Chunks and text are stored (same transaction): the index takes it from
-- here (the outbox trigger fires on `indexing`).  False if the document was
-- deleted or failed meanwhile.
create function internal.finish_processing(document uuid, pages integer, chunks integer, chars integer)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.documents as d
    set status = 'indexing', page_count = pages, chunk_count = chunks, char_count = chars
    where d.tenant_id = auth.uid() and d.id = document and d.status = 'processing';
    return found;
end
$$;

comment on function internal.finish_processing(uuid, integer, integer, integer) is
'processing → indexing, with the page, chunk and character counts.';

revoke execute on function internal.finish_processing(uuid, integer, integer, integer) from public;
grant execute on function internal.finish_processing(uuid, integer, integer, integer) to authenticated;

-- function: internal.fail_processing

create function internal.fail_processing(document uuid, reason text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.documents as d
    set status = 'failed', error_reason = left(coalesce(nullif(reason, ''), 'Processing failed.'), 500)
    where d.tenant_id = auth.uid() and d.id = document and d.status in ('queued', 'processing');
    return found;
end
$$;

comment on function internal.fail_processing(uuid, text) is 'queued|processing → failed(reason).';

revoke execute on function internal.fail_processing(uuid, text) from public;
grant execute on function internal.fail_processing(uuid, text) to authenticated;

-- function: internal.fail_indexing

-- The vector index can never take the document's vectors (another model's dimensions).
create function internal.fail_indexing(document uuid, reason text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    update app.documents as d
    set status = 'failed', error_reason = left(coalesce(nullif(reason, ''), 'Indexing failed.'), 500)
    where d.tenant_id = auth.uid() and d.id = document and d.status = 'indexing';
    return found;
end
$$;

comment on function internal.fail_indexing(uuid, text) is 'indexing → failed(reason).';

revoke execute on function internal.fail_indexing(uuid, text) from public;
grant execute on function internal.fail_indexing(uuid, text) to authenticated;
