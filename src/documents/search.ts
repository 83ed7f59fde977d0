// The chunks nearest to a query's embedding, by cosine similarity, among those that may be found:
// docpipe.searchable_chunks (migration 005), the current run of each ready document, so a
// reprocessed document's previous run and a deleted document never answer. Two storages:
// - pgvector: docpipe.match_chunks, ORDER BY embedding <=> query LIMIT k on the HNSW index
//   (approximate: recall as the index gives it; cost grows with log n);
// - real[] (no pgvector): exact, the owner's chunks scored one by one in SQL (cost grows with
//   the owner's chunks times the dimensions).
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

export async function searchChunks(db: Db, store: VectorStore, embedding: Float32Array, options: SearchOptions): Promise<SearchHit[]> {
  const ids = options.documentIds ?? null;
  const rows =
    store.kind === 'pgvector'
      ? await db<Row[]>`
          select document_id, chunk_index, content, similarity as score
          from docpipe.match_chunks(${`[${embedding.join(',')}]`}, ${options.k}, ${ids}::uuid[], ${options.owner})`
      : // The filters select the documents first (the owner's index on document_status), then
        // their chunks by primary key; only those are scored. Sums in float8: real's 24 bits
        // would blur close scores.
        await db<Row[]>`
          select document_id, chunk_index, content, score from (
            select c.document_id, c.chunk_index, c.content,
                   (select sum(a::float8 * b) / nullif(sqrt(sum(a::float8 * a) * sum(b::float8 * b)), 0)
                    from unnest(c.embedding, ${`{${embedding.join(',')}}`}::real[]) as v(a, b)) as score
            from docpipe.searchable_chunks c
            where c.embedding is not null
              and ${options.owner === null ? db`true` : db`c.owner_id = ${options.owner}`}
              and ${ids === null ? db`true` : db`c.document_id = any (${ids}::uuid[])`}
          ) scored
          order by score desc nulls last, document_id, chunk_index
          limit ${options.k}`;
  return rows.map((r) => ({ documentId: r.document_id, chunkIndex: r.chunk_index, score: r.score, text: r.content }));
}
