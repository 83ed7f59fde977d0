-- Search over the chunks' embeddings (POST /v1/search), on either of two storages:
--
-- - pgvector (Supabase; it has the extension, perhaps not yet created): chunks get
--   `embedding_vector vector(N)` with an HNSW index (cosine). N is EMBEDDING_DIMENSIONS, which a
--   SQL file cannot read: the runner sets `docpipe.embedding_dimensions` in the transaction of
--   every migration (src/db/migrate.ts), and this one refuses to run without it. A trigger
--   moves every real[] written to `embedding` into the vector column and clears it, so a vector
--   is stored once whoever writes it: this release's pipeline, and the previous release's
--   workers still running during a deploy (they know only `embedding`). The rows embedded before
--   this migration go through the same trigger. `docpipe.match_chunks` serves the clients that
--   query Postgres directly, under their row-level security (the API builds its own statements:
--   src/documents/search.ts).
-- - no pgvector (the embedded PostgreSQL), or a role that may not create it: embeddings stay in
--   `embedding real[]`, and the API scans them exactly (src/documents/search.ts).
--
-- Either way, `docpipe.searchable_chunks` is the one statement of which chunks may be found: those
-- of the current run of a ready document. A reprocessed document's old run (kept until the new
-- run replaces it) and a deleted document's rows never qualify, whatever is left in the table.

-- The runner applies each migration in a transaction of its own (src/db/migrate.ts): these last
-- until it ends. On a large table the block below is long: it holds an ACCESS EXCLUSIVE lock on
-- the chunks (reads wait too), rewrites every embedded row into the vector column and builds the
-- HNSW index, which Supabase's statement timeout (2 minutes for `postgres`) would cut short. The
-- index build uses maintenance_work_mem: a modest raise, within what small instances have.
set local statement_timeout = 0;
set local maintenance_work_mem = '128MB';

do $migration$
declare
  dims integer;
  ext name;
  vector_type text;
begin
  if exists (select 1 from pg_available_extensions where name = 'vector')
     and not exists (select 1 from pg_extension where extname = 'vector') then
    -- Supabase keeps extensions in the schema `extensions`; elsewhere the default creation schema.
    -- pgvector is not a trusted extension: a role that is not a superuser (nor, on Supabase, the
    -- project's `postgres`) may not create it, and then search stays on real[].
    begin
      if exists (select 1 from pg_namespace where nspname = 'extensions') then
        create extension vector with schema extensions;
      else
        create extension vector;
      end if;
    exception when insufficient_privilege then
      -- A warning, not a notice: it reaches the server's log (log_min_messages), where an
      -- operator can find it after the fact.
      raise warning 'pgvector is available, but % may not create the extension: embeddings stay in real[] and search scans them exactly', current_user
        using hint = 'to use pgvector, create the extension as a superuser (create extension vector, with schema extensions on Supabase) before migration 005 runs; once 005 has run on real[], a future migration moves the embeddings';
    end;
  end if;

  -- The path is whatever exists now.
  select n.nspname into ext from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'vector';
  if ext is not null then
    dims := nullif(current_setting('docpipe.embedding_dimensions', true), '')::integer;
    if dims is null then
      raise exception 'pgvector is available but docpipe.embedding_dimensions is not set'
        using hint = 'apply migrations with `docpipe migrate`, which sets it from EMBEDDING_DIMENSIONS';
    end if;
    if dims > 2000 then
      raise exception 'EMBEDDING_DIMENSIONS is %, but an HNSW index on vector takes at most 2000 dimensions', dims
        using hint = 'text-embedding-3 models take a smaller `dimensions` (1536, 1024, 512, ...) with little loss';
    end if;
    -- The type, operators and operator classes are qualified with the extension's schema: the
    -- search_path of whoever migrates (or later calls match_chunks) need not include it.
    vector_type := format('%I.vector(%s)', ext, dims);

    execute format('alter table docpipe.document_chunks add column embedding_vector %s', vector_type);
    -- `embedding` is the write port: a vector written to it is moved to the vector column; a null
    -- written to it (an UPDATE naming it) clears the vector column too, so a chunk never keeps a
    -- vector its writer meant to remove. Nothing keeps a value in `embedding`, so an UPDATE that
    -- names it without a vector (even `set embedding = embedding`) removes the chunk's vector.
    execute format($fn$
      create function docpipe.store_embedding_vector() returns trigger language plpgsql as $body$
      begin
        if new.embedding is not null then
          new.embedding_vector := new.embedding::%s;
          new.embedding := null;
        else
          new.embedding_vector := null;
        end if;
        return new;
      end $body$
    $fn$, vector_type);
    -- Two triggers, so that the function runs only when there is something to do (inserts of
    -- chunks not embedded yet skip it). BEFORE triggers of one event fire in the order of their
    -- names, and each one's WHEN sees the row as the earlier ones left it: `clear` must come
    -- before `store`, or it would see the `embedding` that `store` has just emptied.
    create trigger document_chunks_clear_embedding_vector
      before update of embedding on docpipe.document_chunks
      for each row when (new.embedding is null)
      execute function docpipe.store_embedding_vector();
    create trigger document_chunks_store_embedding_vector
      before insert or update of embedding on docpipe.document_chunks
      for each row when (new.embedding is not null)
      execute function docpipe.store_embedding_vector();
    -- Leaves a dead tuple per moved row, for (auto)vacuum.
    update docpipe.document_chunks set embedding = embedding where embedding is not null;
    -- Built after the backfill: one build is cheaper than maintaining the graph row by row.
    execute format('create index document_chunks_embedding_hnsw_idx on docpipe.document_chunks using hnsw (embedding_vector %I.vector_cosine_ops)', ext);
  end if;

  -- security_invoker: a client reading through the view is held to its own row-level security
  -- on both tables, not to the view owner's rights.
  create view docpipe.searchable_chunks with (security_invoker = true) as
    select c.*, s.owner_id
    from docpipe.document_chunks c
    join docpipe.document_status s on s.id = c.document_id and s.run = c.run
    where s.status = 'ready';

  if ext is not null then
    -- For clients under row-level security (docs/PROVIDERS.md, "Search"), in the style of
    -- Supabase's match_documents: the `match_count` (at most 50) nearest chunks by cosine
    -- distance, optionally within some documents and of one owner. security invoker: a client
    -- sees only what its RLS policies let it see.
    --
    -- plpgsql, each statement built with only the filters given and run by EXECUTE, so every call
    -- is planned for its own arguments: one plan for all (a SQL function's) would walk the HNSW
    -- index with `filter is null or ...` applied to what it finds, and stop with too few rows.
    -- - documents named: exact, their chunks scored in a MATERIALIZED CTE (no index walk).
    -- - otherwise the index, with hnsw.ef_search = 100 and, if this server's pgvector has it
    --   (0.8 and later; looked up at every call, so an upgrade needs no migration), an iterative
    --   scan in strict order that goes on until the filters and the caller's RLS let
    --   `match_count` rows through (at most hnsw.max_scan_tuples index tuples). set_config(...,
    --   true): the settings last to the end of the caller's transaction. If the walk stops short
    --   and the search is scoped (an owner named, or row-level security applies to the caller),
    --   the scoped chunks are scored exactly instead: with the documented policies, the caller's
    --   own. A caller that bypasses RLS and names no owner gets what the index gave.
    execute format($fn$
      create function docpipe.match_chunks(
        query_embedding %1$s,
        match_count integer default 5,
        filter_document_ids uuid[] default null,
        filter_owner text default null
      ) returns table (document_id uuid, chunk_index integer, content text, similarity double precision)
      language plpgsql stable security invoker
      set search_path = pg_catalog, %2$I
      as $body$
      declare
        wanted integer := least(greatest(coalesce(match_count, 0), 0), 50);
        filters text := '';
        exact text;
        found_count integer;
        found_ids uuid[];
        found_indexes integer[];
        found_contents text[];
        found_distances double precision[];
      begin
        if wanted = 0 or query_embedding is null then
          return;
        end if;
        if filter_owner is not null then
          filters := filters || ' and c.owner_id = $3';
        end if;
        if filter_document_ids is not null then
          filters := filters || ' and c.document_id = any ($2)';
        end if;
        exact := $q$
          with candidates as materialized (
            select c.document_id, c.chunk_index, c.content, c.embedding_vector <=> $1 as distance
            from docpipe.searchable_chunks c
            where c.embedding_vector is not null $q$ || filters || $q$
          )
          select d.document_id, d.chunk_index, d.content, 1 - d.distance
          from candidates d
          order by d.distance, d.document_id, d.chunk_index
          limit $4 $q$;

        if filter_document_ids is not null then
          return query execute exact using query_embedding, filter_document_ids, filter_owner, wanted;
          return;
        end if;

        perform set_config('hnsw.ef_search', '100', true);
        if exists (select 1 from pg_settings s where s.name = 'hnsw.iterative_scan') then
          perform set_config('hnsw.iterative_scan', 'strict_order', true);
        end if;
        -- Gathered before anything is returned: RETURN QUERY only appends, and the exact
        -- search replaces a short answer.
        execute $q$
          select count(*)::integer,
                 array_agg(f.document_id order by f.distance, f.document_id, f.chunk_index),
                 array_agg(f.chunk_index order by f.distance, f.document_id, f.chunk_index),
                 array_agg(f.content order by f.distance, f.document_id, f.chunk_index),
                 array_agg(f.distance order by f.distance, f.document_id, f.chunk_index)
          from (
            select c.document_id, c.chunk_index, c.content, c.embedding_vector <=> $1 as distance
            from docpipe.searchable_chunks c
            where c.embedding_vector is not null $q$ || filters || $q$
            order by c.embedding_vector <=> $1
            limit $4
          ) f $q$
          into found_count, found_ids, found_indexes, found_contents, found_distances
          using query_embedding, filter_document_ids, filter_owner, wanted;

        if found_count < wanted and (filter_owner is not null or row_security_active('docpipe.document_chunks')) then
          return query execute exact using query_embedding, filter_document_ids, filter_owner, wanted;
          return;
        end if;
        return query
          select u.id, u.idx, u.body, 1 - u.distance
          from unnest(found_ids, found_indexes, found_contents, found_distances) with ordinality
            as u(id, idx, body, distance, ord)
          order by u.ord;
      end
      $body$
    $fn$, vector_type, ext);
  end if;
end
$migration$;
