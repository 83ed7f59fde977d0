// Where the chunks' embeddings live, and with how many dimensions (migration 005): a pgvector
// column `embedding_vector vector(N)` where the extension exists (Supabase), `embedding real[]`
// elsewhere (the embedded PostgreSQL). Every service and `docpipe migrate` check at start-up that
// EMBEDDING_DIMENSIONS is what the database holds: vectors of two sizes cannot be compared, so a
// changed dimension would make every search wrong (real[]) or fail (pgvector), and the worker
// would store vectors that the column refuses.
import type { Db } from './client.ts';

export type VectorStore =
  /** `dimensions`: the column's, fixed when migration 005 ran. */
  | { kind: 'pgvector'; dimensions: number }
  /** `dimensions`: of the embeddings stored so far; null while there are none. */
  | { kind: 'array'; dimensions: number | null };

export class EmbeddingDimensionsError extends Error {
  readonly code = 'EMBEDDING_DIMENSIONS_MISMATCH';
  constructor(
    readonly store: VectorStore,
    readonly configured: number,
  ) {
    const held =
      store.kind === 'pgvector'
        ? `the database's vector column is vector(${store.dimensions}) (docpipe.document_chunks.embedding_vector)`
        : `the embeddings stored in the database have ${store.dimensions} dimensions`;
    super(
      `EMBEDDING_DIMENSIONS is ${configured}, but ${held}: vectors of different sizes cannot be compared. ` +
        `Set EMBEDDING_DIMENSIONS=${store.dimensions} (and the embedding model that produced them); ` +
        'a new dimension needs every document embedded again, into a new database or a new column (a migration of its own)',
    );
    this.name = 'EmbeddingDimensionsError';
  }
}

export async function inspectVectorStore(db: Db): Promise<VectorStore> {
  // to_regclass: before the first migration there is no table, and nothing to compare.
  const [column] = await db<{ chunks: boolean; typmod: number | null }[]>`
    select to_regclass('docpipe.document_chunks') is not null as chunks,
           (select atttypmod from pg_attribute
            where attrelid = to_regclass('docpipe.document_chunks') and attname = 'embedding_vector' and not attisdropped) as typmod`;
  // pgvector's type modifier is the dimension itself.
  if (column!.typmod !== null) return { kind: 'pgvector', dimensions: column!.typmod };
  if (!column!.chunks) return { kind: 'array', dimensions: null };
  const [sample] = await db<{ dimensions: number }[]>`
    select array_length(embedding, 1) as dimensions from docpipe.document_chunks where embedding is not null limit 1`;
  return { kind: 'array', dimensions: sample?.dimensions ?? null };
}

/** The database's vector store; EmbeddingDimensionsError when it holds another dimension than `configured`. */
export async function openVectorStore(db: Db, configured: number): Promise<VectorStore> {
  const store = await inspectVectorStore(db);
  if (store.dimensions !== null && store.dimensions !== configured) throw new EmbeddingDimensionsError(store, configured);
  return store;
}
