-- Search over the chunks' embeddings (POST /v1/search), on either of two storages:
--
-- - pgvector available (Supabase; it has the extension, perhaps not yet created): chunks get
--   `embedding_vector vector(N)` with an HNSW index (cosine). N is EMBEDDING_DIMENSIONS, which a
--   SQL file cannot read: the runner sets `docpipe.embedding_dimensions` in the transaction of
--   every migration (src/db/migrate.ts), and this one refuses to run without it. A trigger
--   moves every real[] written to `embedding` into the vector column and clears it, so a vector
--   is stored once whoever writes it: this release's pipeline, and the previous release's
--   workers still running during a deploy (they know only `embedding`). The rows embedded before
--   this migration go through the same trigger. `docpipe.match_chunks` serves the API and the
--   clients that query Postgres directly, under their row-level security.
-- - no pgvector (the embedded PostgreSQL): embeddings stay in `embedding real[]`, and the API
--   scans a user's chunks exactly (src/documents/search.ts).
--
-- Either way, `docpipe.searchable_chunks` is the one statement of which chunks may be found: those
-- of the current run of a ready document. A reprocessed document's old run (kept until the new
-- run replaces it) and a deleted document's rows never qualify, whatever is left in the table.
do $migration$
declare
  dims integer;
  ext name;
  vector_type text;
  scan_settings text := 'set hnsw.ef_search = 100';
begin
  if exists (select 1 from pg_available_extensions where name = 'vector') then
    dims := nullif(current_setting('docpipe.embedding_dimensions', true), '')::integer;
    if dims is null then
      raise exception 'pgvector is available but docpipe.embedding_dimensions is not set'
        using hint = 'apply migrations with `docpipe migrate`, which sets it from EMBEDDING_DIMENSIONS';
    end if;
    if dims > 2000 then
      raise exception 'EMBEDDING_DIMENSIONS is %, but an HNSW index on vector takes at most 2000 dimensions', dims
        using hint = 'text-embedding-3 models take a smaller `dimensions` (1536, 1024, 512, ...) with little loss';
    end if;
    -- Supabase keeps extensions in the schema `extensions`; elsewhere the default creation schema.
    if not exists (select 1 from pg_extension where extname = 'vector') then
      if exists (select 1 from pg_namespace where nspname = 'extensions') then
        create extension vector with schema extensions;
      else
        create extension vector;
      end if;
    end if;
    -- The type, operators and operator classes are qualified with the extension's schema: the
    -- search_path of whoever migrates (or later calls match_chunks) need not include it.
    select n.nspname into ext from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector';
    vector_type := format('%I.vector(%s)', ext, dims);

    execute format('alter table docpipe.document_chunks add column embedding_vector %s', vector_type);
    execute format($fn$
      create function docpipe.store_embedding_vector() returns trigger language plpgsql as $body$
      begin
        if new.embedding is not null then
          new.embedding_vector := new.embedding::%s;
          new.embedding := null;
        end if;
        return new;
      end $body$
    $fn$, vector_type);
    create trigger document_chunks_store_embedding_vector
      before insert or update of embedding on docpipe.document_chunks
      for each row execute function docpipe.store_embedding_vector();
    update docpipe.document_chunks set embedding = embedding where embedding is not null;
    -- Built after the backfill: one build is cheaper than maintaining the graph row by row.
    execute format('create index document_chunks_embedding_hnsw_idx on docpipe.document_chunks using hnsw (embedding_vector %I.vector_cosine_ops)', ext);
    -- pgvector >= 0.8 keeps scanning the index until the filters (owner, ready, current run)
    -- have let `match_count` rows through; before it, a scan stops after ef_search candidates
    -- (hence 100: above the largest match_count, 50), filtered or not.
    if exists (select 1 from pg_settings where name = 'hnsw.iterative_scan') then
      scan_settings := scan_settings || ' set hnsw.iterative_scan = strict_order';
    end if;
  end if;

  -- security_invoker: a client reading through the view is held to its own row-level security
  -- on both tables, not to the view owner's rights.
  create view docpipe.searchable_chunks with (security_invoker = true) as
    select c.*, s.owner_id
    from docpipe.document_chunks c
    join docpipe.document_status s on s.id = c.document_id and s.run = c.run
    where s.status = 'ready';

  if ext is not null then
    -- In the style of Supabase's match_documents: the `match_count` nearest chunks by cosine
    -- distance, optionally within some documents and (the API, which bypasses RLS as the tables'
    -- owner) one owner. security invoker: a client sees only what its RLS policies let it see.
    execute format($fn$
      create function docpipe.match_chunks(
        query_embedding %1$s,
        match_count integer default 5,
        filter_document_ids uuid[] default null,
        filter_owner text default null
      ) returns table (document_id uuid, chunk_index integer, content text, similarity double precision)
      language sql stable security invoker parallel safe
      set search_path = pg_catalog, %2$I
      %3$s
      as $body$
        select c.document_id, c.chunk_index, c.content, 1 - (c.embedding_vector <=> query_embedding)
        from docpipe.searchable_chunks c
        where c.embedding_vector is not null
          and (filter_owner is null or c.owner_id = filter_owner)
          and (filter_document_ids is null or c.document_id = any (filter_document_ids))
        order by c.embedding_vector <=> query_embedding
        limit least(greatest(match_count, 0), 50)
      $body$
    $fn$, vector_type, ext, scan_settings);
  end if;
end
$migration$;
