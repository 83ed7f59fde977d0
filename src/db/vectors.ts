// Where the chunks' embeddings live, and with how many dimensions (migration 005): a pgvector
// column `embedding_vector vector(N)` where the extension exists (Supabase), `embedding real[]`
// elsewhere (the embedded PostgreSQL). Every service and `docpipe migrate` check at start-up that
// EMBEDDING_DIMENSIONS is what the database holds: vectors of two sizes cannot be compared, so a
// changed dimension would make every search wrong (real[]) or fail (pgvector), and the worker
// would store vectors that the column refuses.
import type { Db } from './client.ts';

export type VectorStore =
  | {
      kind: 'pgvector';
      /** The column's, fixed when migration 005 ran. */
      dimensions: number;
      /** The extension's schema (Supabase: `extensions`), which qualifies its type and operators. */
      schema: string;
      /**
       * Whether the server's pgvector has iterative index scans (0.8 and later:
       * hnsw.iterative_scan, hnsw.max_scan_tuples). Read once, when the store is opened: an
       * upgraded pgvector counts from the next start-up.
       */
      iterativeScan: boolean;
    }
  | {
      kind: 'array';
      /** Of the embeddings stored so far; null while there are none (or when `lengths` holds several). */
      dimensions: number | null;
      /** Every length the stored embeddings have, ascending: more than one is refused. */
      lengths: number[];
    };

export class EmbeddingDimensionsError extends Error {
  readonly code = 'EMBEDDING_DIMENSIONS_MISMATCH';
  constructor(
    readonly store: VectorStore,
    readonly configured: number,
  ) {
    super(EmbeddingDimensionsError.describe(store, configured));
    this.name = 'EmbeddingDimensionsError';
  }

  private static describe(store: VectorStore, configured: number): string {
    if (store.kind === 'array' && store.lengths.length > 1) {
      return (
        `EMBEDDING_DIMENSIONS is ${configured}, but the embeddings stored in the database have several dimensions (${store.lengths.join(', ')}): ` +
        'vectors of different sizes cannot be compared, so searches would rank them wrongly. Find the documents with ' +
        '`select document_id, array_length(embedding, 1) from docpipe.document_chunks group by 1, 2`, and reprocess those whose ' +
        `length is not EMBEDDING_DIMENSIONS (or start a new database)`
      );
    }
    const held =
      store.kind === 'pgvector'
        ? `the database's vector column is vector(${store.dimensions}) (docpipe.document_chunks.embedding_vector)`
        : `the embeddings stored in the database have ${store.dimensions} dimensions`;
    return (
      `EMBEDDING_DIMENSIONS is ${configured}, but ${held}: vectors of different sizes cannot be compared. ` +
      `Set EMBEDDING_DIMENSIONS=${store.dimensions} (and the embedding model that produced them); ` +
      'a new dimension needs every document embedded again, into a new database or a new column (a migration of its own)'
    );
  }
}

export async function inspectVectorStore(db: Db): Promise<VectorStore> {
  // to_regclass: before the first migration there is no table, and nothing to compare.
  const [column] = await db<{ chunks: boolean; typmod: number | null; schema: string | null }[]>`
    select to_regclass('docpipe.document_chunks') is not null as chunks, a.atttypmod as typmod, n.nspname as schema
    from (select) as one
    left join pg_attribute a
      on a.attrelid = to_regclass('docpipe.document_chunks') and a.attname = 'embedding_vector' and not a.attisdropped
    left join pg_type t on t.oid = a.atttypid
    left join pg_namespace n on n.oid = t.typnamespace`;
  // pgvector's type modifier is the dimension itself.
  if (column!.typmod !== null && column!.schema !== null) {
    return { kind: 'pgvector', dimensions: column!.typmod, schema: column!.schema, iterativeScan: await hasIterativeScan(db, column!.schema) };
  }
  if (!column!.chunks) return { kind: 'array', dimensions: null, lengths: [] };
  // Every length, not a sample: one row of another size would make every comparison with it
  // wrong. A full scan of the chunks, at start-up, on the storage meant for development.
  const rows = await db<{ dimensions: number }[]>`
    select distinct array_length(embedding, 1) as dimensions from docpipe.document_chunks
    where embedding is not null order by 1`;
  const lengths = rows.map((r) => r.dimensions);
  return { kind: 'array', dimensions: lengths.length === 1 ? lengths[0]! : null, lengths };
}

/**
 * Whether pgvector's iterative index scans exist on this server. pgvector registers its
 * settings when its library is loaded into the session, which parsing a value of its type does
 * (the literal below, at parse time, before pg_settings is read in the same statement): until
 * then pg_settings does not list them, whatever the version.
 */
async function hasIterativeScan(db: Db, schema: string): Promise<boolean> {
  const [row] = await db<{ found: boolean }[]>`
    select exists (select 1 from pg_settings where name = 'hnsw.iterative_scan')
       and exists (select 1 from pg_settings where name = 'hnsw.max_scan_tuples') as found
    from (select '[0]'::${db(schema)}.vector as loaded) as library`;
  return row!.found;
}

/** The database's vector store; EmbeddingDimensionsError when it holds another dimension than `configured`, or several. */
export async function openVectorStore(db: Db, configured: number): Promise<VectorStore> {
  const store = await inspectVectorStore(db);
  if (store.kind === 'array' && store.lengths.length > 1) throw new EmbeddingDimensionsError(store, configured);
  if (store.dimensions !== null && store.dimensions !== configured) throw new EmbeddingDimensionsError(store, configured);
  return store;
}
