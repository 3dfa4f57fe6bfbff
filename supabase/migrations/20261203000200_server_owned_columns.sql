-- Server-owned columns: what the server decides or computes about a row (a
-- document's lifecycle, its sniffed type, its counts, its extracted text and
-- chunks, a query's outcome) is written only by SECURITY DEFINER functions
-- that check the state they start from, never by an UPDATE of the caller's
-- role.  Before this, a user acting as `authenticated` could set their
-- document back to `queued` (a free re-ingestion, outside the monthly
-- quota), change its type after the plan's format check, or rewrite its
-- text and chunks.  A user may still rename and delete their documents.
--
-- The worker acts as the tenant (act_as) and stores text and chunks through
-- internal.store_document_text and internal.store_chunk, which act only on
-- the caller's own document while it is `processing`; finish_processing
-- takes the chunk and character counts from what was stored.  Inserts stay
-- as they were: the insert that creates a document is the upload (metered
-- and format-checked by its triggers), the one that records a query is what
-- the daily quota counts.

-- table: app.documents (update: the title only)

revoke update (mime_type, status, error_reason, page_count, chunk_count, char_count) on app.documents
from authenticated;

-- table: app.chunks (read-only for users; deleted with their document)

revoke insert, delete on app.chunks from authenticated;

drop policy chunks_insert_own on app.chunks;
drop policy chunks_delete_own on app.chunks;

-- table: app.document_texts (read-only for users; deleted with their document)

revoke insert, delete on app.document_texts from authenticated;
revoke update (text) on app.document_texts from authenticated;

drop policy document_texts_insert_own on app.document_texts;
drop policy document_texts_update_own on app.document_texts;
drop policy document_texts_delete_own on app.document_texts;

-- table: app.query_log (the outcome is written once, by internal.complete_query)

revoke update (result_count, latency_ms) on app.query_log from authenticated;

drop policy query_log_update_own on app.query_log;

-- function: internal.store_document_text

-- The first write of storing a document's extraction: its text, replacing
-- any chunks an earlier attempt left.  Locks the document until the
-- transaction ends (finish_processing takes the same lock), so nobody moves
-- it meanwhile.  False if it is not the caller's or not `processing`.
create function internal.store_document_text(document uuid, content text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    perform from app.documents as d
    where d.tenant_id = tenant and d.id = document and d.status = 'processing'
    for no key update;
    if not found then
        return false;
    end if;
    delete from app.chunks as c where c.tenant_id = tenant and c.document_id = document;
    insert into app.document_texts as t (tenant_id, document_id, text)  -- noqa: RF04
    values (tenant, document, content)
    on conflict on constraint document_texts_pkey do update set text = excluded.text;
    return true;
end
$$;

comment on function internal.store_document_text(uuid, text) is
'Store the extracted text of the caller''s document being processed, dropping older chunks; false if not processing.';

revoke execute on function internal.store_document_text(uuid, text) from public;
grant execute on function internal.store_document_text(uuid, text) to authenticated;

-- function: internal.store_chunk

create function internal.store_chunk(
    document uuid,
    chunk uuid,
    chunk_ordinal integer,
    chunk_text text,
    chunk_tokens integer,
    chunk_position jsonb,
    model text,
    dense_vector real[],
    sparse_index integer[],
    sparse_weight real[]
)
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
begin
    if not exists (
        select from app.documents as d
        where d.tenant_id = tenant and d.id = document and d.status = 'processing'
    ) then
        perform internal.raise_http(
            409, 'conflict', 'Chunks can be stored only for a document that is being processed.',
            jsonb_build_object('document_id', document)
        );
    end if;
    insert into app.chunks (
        tenant_id, id, document_id, ordinal, text, token_count, position,  -- noqa: RF04
        embedding_model, dense, sparse_indices, sparse_values
    )
    values (
        tenant, chunk, document, chunk_ordinal, chunk_text, chunk_tokens, chunk_position,
        model, dense_vector, sparse_index, sparse_weight
    );
end
$$;

comment on function internal.store_chunk(uuid, uuid, integer, text, integer, jsonb, text, real[], integer[], real[]) is
'Store one chunk with its vectors for the caller''s document being processed (409 otherwise).';

revoke execute on function internal.store_chunk(
    uuid, uuid, integer, text, integer, jsonb, text, real[], integer[], real[]
) from public;
grant execute on function internal.store_chunk(
    uuid, uuid, integer, text, integer, jsonb, text, real[], integer[], real[]
) to authenticated;

-- function: internal.finish_processing (as before; the counts are what was stored)

-- `chunks` and `chars` are what the worker meant to store; the document gets
-- what it did store, so no caller can make its counts say otherwise.
create or replace function internal.finish_processing(document uuid, pages integer, chunks integer, chars integer)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    tenant uuid := auth.uid();
    stored_chunks integer;
    stored_chars integer;
begin
    select count(*) into stored_chunks from app.chunks as c where c.tenant_id = tenant and c.document_id = document;
    select char_length(t.text) into stored_chars
    from app.document_texts as t where t.tenant_id = tenant and t.document_id = document;
    update app.documents as d
    set status = 'indexing', page_count = pages, chunk_count = stored_chunks, char_count = stored_chars
    where d.tenant_id = tenant and d.id = document and d.status = 'processing';
    if found and (stored_chunks is distinct from chunks or stored_chars is distinct from chars) then
        raise warning 'document %: % chunk(s) and % character(s) stored, % and % reported',
            document, stored_chunks, stored_chars, chunks, chars;
    end if;
    return found;
end
$$;

-- function: internal.complete_query

-- A query's outcome, once: a logged query cannot be rewritten afterwards.
create function internal.complete_query(log_id uuid, results integer, elapsed_ms real)
returns void
language sql
volatile
security definer
set search_path = ''
as $$
    update app.query_log as q set result_count = results, latency_ms = elapsed_ms
    where q.tenant_id = auth.uid() and q.id = log_id and q.result_count is null
$$;

comment on function internal.complete_query(uuid, integer, real) is
'Record the outcome of one of the caller''s queries, once.';

revoke execute on function internal.complete_query(uuid, integer, real) from public;
grant execute on function internal.complete_query(uuid, integer, real) to authenticated;

-- function: app.complete_query (as before, through internal.complete_query)

create or replace function app.complete_query(log_id uuid, results integer, elapsed_ms real)
returns void
language sql
volatile
set search_path = ''
as $$
    select internal.complete_query(log_id, results, elapsed_ms)
$$;

-- function: internal.check_query_api_key (trigger on app.query_log)

-- A query is attributed to the API key the caller authenticated with (the
-- gateway's key claims carry `api_key_id`), or to none: never to a key of
-- the caller's choosing.
create function internal.check_query_api_key()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if new.api_key_id::text is distinct from (auth.jwt() ->> 'api_key_id') then
        raise sqlstate '42501' using
            message = 'api_key_id must be the API key the caller authenticated with, or null without one';
    end if;
    return new;
end
$$;

revoke execute on function internal.check_query_api_key() from public;

create trigger query_log_check_api_key
before insert on app.query_log
for each row execute function internal.check_query_api_key();
