// The chunks nearest to a query's embedding, by cosine similarity, among those that may be found:
// docpipe.searchable_chunks (migration 005), the current run of each ready document, so a
// reprocessed document's previous run and a deleted document never answer.
//
// Each statement carries only the filters that apply (no `$x is null or ...`): a filter that may
// or may not be there makes one plan serve both cases, and a generic plan (a prepared statement
// after five runs, plan_cache_mode = force_generic_plan, a SQL function) then walks the HNSW index
// with the filter applied to what it finds, and stops at the index scan's limit with too few
// rows, or none. This is also why the API does not go through docpipe.match_chunks.
//
// pgvector:
// - with documentIds: exact. The documents' searchable chunks are scored one by one in a
//   MATERIALIZED CTE, which the planner cannot turn into an index walk, then sorted. Cost: the
//   chunks of those documents (at most SEARCH_LIMITS.maxDocumentIds documents).
// - without: `ORDER BY embedding_vector <=> query LIMIT k` on the HNSW index (approximate: the
//   index's recall), in a transaction of its own with hnsw.ef_search = 100 and, where the server's
//   pgvector has them (0.8 and later: checked when the store is opened), an iterative scan in
//   strict order that goes on until k rows pass the filters (owner, ready, current run), up to
//   INDEX_SCAN.maxScanTuples index tuples. Cost: about log(chunks) when the filters let most rows
//   through, more for a selective owner. If the walk stops with fewer than k rows (the scan limit,
//   its memory limit, or ef_search candidates on an older pgvector) and an owner is given, the
//   owner's chunks are scored exactly as above. Cost: that owner's chunks, and only then. The
//   service role searching everyone's (no owner) has no such fallback: its filters let nearly
//   every row through, and an exact scan would score every chunk in the database.
// - real[] (no pgvector): always exact, in SQL: every searchable chunk within the filters, that
//   is the owner's chunks (or, for the service role with no owner, every chunk in the database),
//   or those of the documents named; cost grows with their number times the dimensions.
import type { Db } from '../db/client.ts';
import type { VectorStore } from '../db/vectors.ts';

export interface SearchOptions {
  k: number;
  /** Whose documents: one owner's, or (null, the service role) everyone's. */
  owner: string | null;
  /** Within these documents only. */
  documentIds?: readonly string[];
}

export interface SearchHit {
  documentId: string;
  chunkIndex: number;
  /** Cosine similarity, -1 to 1. */
  score: number;
  text: string;
}

interface Row {
  document_id: string;
  chunk_index: number;
  content: string;
  score: number;
}

/** The settings of an index search (pgvector's, set local to its transaction). */
export const INDEX_SCAN = {
  /** Candidates kept while walking the graph: above the largest k (50), for recall. */
  efSearch: 100,
  /** With an iterative scan, index tuples visited at most before giving up (pgvector's default: 20,000). */
  maxScanTuples: 100_000,
} as const;

const hit = (r: Row): SearchHit => ({ documentId: r.document_id, chunkIndex: r.chunk_index, score: r.score, text: r.content });

export async function searchChunks(db: Db, store: VectorStore, embedding: Float32Array, options: SearchOptions): Promise<SearchHit[]> {
  const rows = store.kind === 'pgvector' ? await searchVectors(db, store, embedding, options) : await searchArrays(db, embedding, options);
  return rows.map(hit);
}

/** `and ...` for each filter given, nothing for the others. */
function filters(db: Db, options: SearchOptions) {
  const owner = options.owner === null ? db`` : db`and c.owner_id = ${options.owner}`;
  const documents = options.documentIds === undefined ? db`` : db`and c.document_id = any (${options.documentIds as string[]}::uuid[])`;
  return db`${owner} ${documents}`;
}

async function searchVectors(db: Db, store: Extract<VectorStore, { kind: 'pgvector' }>, embedding: Float32Array, options: SearchOptions): Promise<Row[]> {
  // The extension's type and operator, qualified: the connection's search_path need not hold its schema.
  const schema = `"${store.schema.replaceAll('"', '""')}"`;
  const distance = db.unsafe(`operator(${schema}.<=>)`);
  const query = db`${`[${embedding.join(',')}]`}::${db.unsafe(schema)}.vector`;

  const exact = () => db<Row[]>`
    with candidates as materialized (
      select c.document_id, c.chunk_index, c.content, c.embedding_vector ${distance} ${query} as distance
      from docpipe.searchable_chunks c
      where c.embedding_vector is not null ${filters(db, options)}
    )
    select document_id, chunk_index, content, 1 - distance as score
    from candidates
    order by distance, document_id, chunk_index
    limit ${options.k}`;

  if (options.documentIds !== undefined) return exact();

  const indexed = await inTransaction(db, async (tx) => {
    await tx`select set_config('hnsw.ef_search', ${String(INDEX_SCAN.efSearch)}, true)`;
    if (store.iterativeScan) {
      await tx`
        select set_config('hnsw.iterative_scan', 'strict_order', true),
               set_config('hnsw.max_scan_tuples', ${String(INDEX_SCAN.maxScanTuples)}, true)`;
    }
    return tx<Row[]>`
      select c.document_id, c.chunk_index, c.content, 1 - (c.embedding_vector ${distance} ${query}) as score
      from docpipe.searchable_chunks c
      where c.embedding_vector is not null ${filters(tx, options)}
      order by c.embedding_vector ${distance} ${query}
      limit ${options.k}`;
  });
  if (indexed.length < options.k && options.owner !== null) return exact();
  return indexed;
}

/** A transaction of its own for the `set local`s, or a savepoint in the caller's (whose settings then last to its end). */
function inTransaction<T>(db: Db, fn: (tx: Db) => Promise<T>): Promise<T> {
  return ('begin' in db ? db.begin(fn) : db.savepoint(fn)) as Promise<T>;
}

async function searchArrays(db: Db, embedding: Float32Array, options: SearchOptions): Promise<Row[]> {
  // The filters select the documents first (the owner's index on document_status, or the ids),
  // then their chunks by primary key; only those are scored. Sums in float8: real's 24 bits
  // would blur close scores.
  return db<Row[]>`
    select document_id, chunk_index, content, score from (
      select c.document_id, c.chunk_index, c.content,
             (select sum(a::float8 * b) / nullif(sqrt(sum(a::float8 * a) * sum(b::float8 * b)), 0)
              from unnest(c.embedding, ${`{${embedding.join(',')}}`}::real[]) as v(a, b)) as score
      from docpipe.searchable_chunks c
      where c.embedding is not null ${filters(db, options)}
    ) scored
    order by score desc nulls last, document_id, chunk_index
    limit ${options.k}`;
}
