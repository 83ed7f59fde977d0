// Search on pgvector (migration 005's pgvector path), on PGlite: PostgreSQL 18 with pgvector, served
// over the wire protocol (test/helpers/pglite.ts), so the real migration runner, pipeline stages
// and search code run against it, as they do against Supabase: the extension goes to the schema
// `extensions`, the vector column follows EMBEDDING_DIMENSIONS, an HNSW index orders the search,
// existing real[] embeddings are moved over, a changed dimension is refused, reprocessed and
// deleted documents never answer, and docpipe.match_chunks under the documented row-level
// security shows each user their own chunks only.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { copyFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { migrate } from '../../src/db/migrate.ts';
import { EmbeddingDimensionsError, inspectVectorStore, openVectorStore, type VectorStore } from '../../src/db/vectors.ts';
import { execute, type CommandContext } from '../../src/documents/commands.ts';
import type { DocumentCommand } from '../../src/documents/document.ts';
import { originalKey, runEmbedStage, runParseStage, type PipelineDeps } from '../../src/documents/pipeline.ts';
import { searchChunks, type SearchOptions } from '../../src/documents/search.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { chunkMarkdown } from '../../src/providers/chunker.ts';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import { createPageCounter } from '../../src/providers/parser/pages.ts';
import { createLocalParser } from '../../src/providers/parser/local.ts';
import { createFsStorage } from '../../src/providers/storage/fs.ts';
import { QUEUES, type JobRequest } from '../../src/queue/jobs.ts';
import { createByteBudget } from '../../src/util/byte-budget.ts';
import { startVectorPostgres } from '../helpers/pglite.ts';
import { CORPUS, SEARCH_CHUNKING, VOLCANO_SENTENCE } from '../helpers/search-corpus.ts';

const DIMENSIONS = 256;
const MIGRATIONS_DIR = fileURLToPath(new URL('../../src/db/migrations/', import.meta.url));
// auth.uid() is a uuid on Supabase: owners are Supabase user ids.
const USER_A = '00000000-0000-4000-8000-00000000000a';
const USER_B = '00000000-0000-4000-8000-00000000000b';

const pg = await startVectorPostgres({ supabaseSchemas: true });
const { sql } = pg;
const embedder = createLocalEmbedder({ dimensions: DIMENSIONS });
const log = createLogger('silent');
const filesDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-pgvector-'));
after(() => rm(filesDir, { recursive: true, force: true }));

// The queue is pg-boss in production; here the jobs the commands enqueue are run in order by
// drain(), through the pipeline's own stage functions.
const queued: JobRequest[] = [];
const ctx: CommandContext = { sql, jobs: { send: async (_tx, jobs) => void queued.push(...jobs) } };
const storage = createFsStorage(filesDir);
const deps: PipelineDeps = {
  ctx,
  storage,
  parser: createLocalParser(),
  // The worker chunks in its sandbox; the chunking itself is this function.
  chunker: { chunk: async (markdown, options) => chunkMarkdown(Buffer.from(markdown).toString('utf8'), options) },
  pages: createPageCounter(async () => 1),
  embedder,
  chunking: SEARCH_CHUNKING,
  embedBatchSize: 2,
  memory: createByteBudget(64 * 1024 * 1024),
  remoteParse: { webhookBaseUrl: undefined, webhookSecret: undefined, pollAfterSeconds: 60 },
};
const meta = { correlationId: 'test', causationId: null, actor: 'test', requestId: null };

async function drain(): Promise<void> {
  for (let job = queued.shift(); job; job = queued.shift()) {
    if (job.queue === QUEUES.parse) await runParseStage(deps, job.data, { log });
    else if (job.queue === QUEUES.embed) await runEmbedStage(deps, job.data, { log });
  }
}

async function uploadDocument(owner: string, markdown: string): Promise<string> {
  const id = randomUUID();
  const bytes = Buffer.from(markdown, 'utf8');
  const stored = await storage.put(originalKey(id), Readable.from([bytes]));
  await execute(ctx, id, { type: 'Upload', ownerId: owner, fileName: 'doc.md', mediaType: 'text/markdown', size: stored.size, sha256: stored.sha256, storageKey: stored.key, idempotencyKey: null }, meta);
  return id;
}

const command = (id: string, c: DocumentCommand) => execute(ctx, id, c, meta);

async function search(store: VectorStore, query: string, options: Partial<SearchOptions> = {}) {
  const [vector] = await embedder.embed([query]);
  return searchChunks(sql, store, vector!, { k: 5, owner: USER_A, ...options });
}

const realArray = (v: Float32Array) => `{${v.join(',')}}`;

let store: VectorStore;
const docs: Record<keyof typeof CORPUS, string> = { lighthouses: '', beekeeping: '', volcanoes: '', sourdough: '' };
let legacyId: string;

describe('migration 005 on pgvector', () => {
  test('needs the dimension; then creates the extension in `extensions`, the vector(N) column and its HNSW index, and moves the stored real[] embeddings', async () => {
    // A database of the previous release: migrations 001-004, one document embedded as real[].
    const previous = await mkdtemp(path.join(os.tmpdir(), 'docpipe-migrations-'));
    after(() => rm(previous, { recursive: true, force: true }));
    for (const file of (await readdir(MIGRATIONS_DIR)).filter((f) => f < '005')) await copyFile(path.join(MIGRATIONS_DIR, file), path.join(previous, file));
    assert.deepEqual(await migrate(sql, { dir: previous }), [1, 2, 3, 4]);
    legacyId = await uploadDocument(USER_A, '# Legacy\n\nAn almanac of tide tables, moon phases and harbour pilotage notes for the estuary.');
    await drain();
    const [legacy] = await sql<{ embedding: number[] }[]>`select embedding from docpipe.document_chunks where document_id = ${legacyId}`;
    assert.equal(legacy!.embedding.length, DIMENSIONS, 'stored as real[] before 005');

    await assert.rejects(migrate(sql), /pgvector is available but docpipe\.embedding_dimensions is not set/);
    const [{ n }] = (await sql<{ n: number }[]>`select count(*)::int as n from docpipe.schema_migrations`) as unknown as [{ n: number }];
    assert.equal(n, 4, 'the refused migration left nothing behind');

    assert.deepEqual(await migrate(sql, { embeddingDimensions: DIMENSIONS }), [5]);
    const [column] = await sql<{ schema: string; type: string; index: string }[]>`
      select n.nspname as schema,
             format_type(a.atttypid, a.atttypmod) as type,
             pg_get_indexdef('docpipe.document_chunks_embedding_hnsw_idx'::regclass) as index
      from pg_extension e join pg_namespace n on n.oid = e.extnamespace,
           pg_attribute a
      where e.extname = 'vector' and a.attrelid = 'docpipe.document_chunks'::regclass and a.attname = 'embedding_vector'`;
    assert.deepEqual(column, {
      schema: 'extensions',
      type: `extensions.vector(${DIMENSIONS})`,
      index: 'CREATE INDEX document_chunks_embedding_hnsw_idx ON docpipe.document_chunks USING hnsw (embedding_vector extensions.vector_cosine_ops)',
    });
    const [moved] = await sql<{ embedding: number[] | null; vector: string }[]>`
      select embedding, embedding_vector::text as vector from docpipe.document_chunks where document_id = ${legacyId}`;
    assert.equal(moved!.embedding, null, 'the real[] copy is cleared: a vector is stored once');
    assert.deepEqual(JSON.parse(moved!.vector), legacy!.embedding, 'the vector is the real[] it replaced');

    store = await inspectVectorStore(sql);
    assert.deepEqual(store, { kind: 'pgvector', dimensions: DIMENSIONS });
  });

  test('a changed EMBEDDING_DIMENSIONS is refused at start-up, naming the column', async () => {
    assert.deepEqual(await openVectorStore(sql, DIMENSIONS), store);
    await assert.rejects(openVectorStore(sql, 1536), (err: unknown) => {
      assert.ok(err instanceof EmbeddingDimensionsError);
      assert.equal(err.code, 'EMBEDDING_DIMENSIONS_MISMATCH');
      assert.match(err.message, new RegExp(`EMBEDDING_DIMENSIONS is 1536, but the database's vector column is vector\\(${DIMENSIONS}\\).*Set EMBEDDING_DIMENSIONS=${DIMENSIONS}`));
      return true;
    });
  });

  test('the pipeline writes its chunks\' vectors to the vector column', async () => {
    for (const name of ['lighthouses', 'beekeeping', 'volcanoes'] as const) docs[name] = await uploadDocument(USER_A, CORPUS[name]);
    docs.sourdough = await uploadDocument(USER_B, CORPUS.sourdough);
    await drain();
    const rows = await sql<{ document_id: string; n: number; vectors: number; dims: number[]; arrays: number }[]>`
      select document_id, count(*)::int as n, count(embedding_vector)::int as vectors,
             array_agg(distinct extensions.vector_dims(embedding_vector)) as dims, count(embedding)::int as arrays
      from docpipe.document_chunks where document_id = any (${Object.values(docs)}::uuid[]) group by document_id`;
    assert.equal(rows.length, 4);
    for (const row of rows) {
      assert.ok(row.n >= 2, `several chunks per document (${row.n})`);
      assert.deepEqual([row.vectors, row.dims, row.arrays], [row.n, [DIMENSIONS], 0]);
    }
  });
});

describe('search on pgvector', () => {
  test('a query made of a chunk\'s text finds that chunk first; a sentence of one document finds that document first', async () => {
    const chunks = await sql<{ document_id: string; chunk_index: number; content: string }[]>`
      select document_id, chunk_index, content from docpipe.document_chunks
      where document_id = any (${[docs.lighthouses, docs.beekeeping, docs.volcanoes]}::uuid[]) order by document_id, chunk_index`;
    for (const chunk of chunks) {
      const [first] = await search(store, chunk.content);
      assert.deepEqual([first!.documentId, first!.chunkIndex, first!.text], [chunk.document_id, chunk.chunk_index, chunk.content]);
      assert.ok(Math.abs(first!.score - 1) < 1e-5, `cosine similarity with itself is 1 (${first!.score})`);
    }
    const hits = await search(store, VOLCANO_SENTENCE);
    assert.equal(hits[0]!.documentId, docs.volcanoes);
    assert.ok(hits[0]!.text.includes(VOLCANO_SENTENCE));
    assert.ok(hits.every((h, i) => i === 0 || h.score <= hits[i - 1]!.score), 'best first');
  });

  test('owners and documentIds scope the results; k bounds them', async () => {
    const mine = await search(store, CORPUS.sourdough, { k: 50 });
    assert.ok(mine.length > 0 && mine.every((h) => h.documentId !== docs.sourdough), 'another user\'s document never answers');
    const theirs = await search(store, CORPUS.sourdough, { owner: USER_B, k: 50 });
    assert.ok(theirs.length > 0 && theirs.every((h) => h.documentId === docs.sourdough));
    const everyone = await search(store, CORPUS.sourdough, { owner: null });
    assert.equal(everyone[0]!.documentId, docs.sourdough, 'the service role searches everyone\'s');
    const within = await search(store, VOLCANO_SENTENCE, { documentIds: [docs.beekeeping, docs.lighthouses], k: 50 });
    assert.ok(within.length > 0 && within.every((h) => h.documentId === docs.beekeeping || h.documentId === docs.lighthouses));
    assert.equal((await search(store, VOLCANO_SENTENCE, { k: 2 })).length, 2);
  });

  test('ORDER BY embedding <=> query LIMIT k is answered by the HNSW index', async () => {
    const [query] = await embedder.embed([VOLCANO_SENTENCE]);
    const plan = await sql.begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      const rows = await tx.unsafe(
        `explain select document_id, chunk_index from docpipe.document_chunks
         order by embedding_vector operator(extensions.<=>) $1::extensions.vector limit 5`,
        [`[${query!.join(',')}]`],
      );
      return rows.map((r) => Object.values(r)[0]).join('\n');
    });
    assert.match(plan, /Index Scan using document_chunks_embedding_hnsw_idx/);
  });

  test('a selective filter still fills k: match_chunks\' index scan goes on past ef_search candidates (hnsw.iterative_scan)', async () => {
    // Another owner holds 300 chunks nearer to the query than any of user A's: the first 100
    // candidates of the index (ef_search) are all theirs, and a scan that stopped there would
    // leave user A with nothing.
    const crowd = randomUUID();
    await sql`
      insert into docpipe.document_status (id, owner_id, file_name, media_type, size_bytes, sha256, storage_key, status, run, version, uploaded_at, updated_at)
      values (${crowd}, 'crowd', 'crowd.md', 'text/markdown', 1, ${'0'.repeat(64)}, 'k', 'ready', 1, 1, now(), now())`;
    const texts = Array.from({ length: 300 }, (_, i) => `${VOLCANO_SENTENCE} variant ${i}`);
    const vectors = await embedder.embed(texts);
    await sql`
      insert into docpipe.document_chunks ${sql(texts.map((content, i) => ({ document_id: crowd, chunk_index: i, run: 1, content, token_count: 20, embedding: realArray(vectors[i]!) })))}`;
    const everyone = await search(store, VOLCANO_SENTENCE, { owner: null, k: 50 });
    assert.ok(everyone.every((h) => h.documentId === crowd), 'the crowd is nearest');

    // On a table this small the planner scores user A's few chunks exactly (their documents
    // first), which is right; on a large one it takes the index. Sorts are disabled to make it
    // take the index here.
    const viaIndex = () =>
      sql.begin(async (tx) => {
        await tx`set local enable_sort = off`;
        const [vector] = await embedder.embed([VOLCANO_SENTENCE]);
        return searchChunks(tx, store, vector!, { k: 5, owner: USER_A });
      });
    const mine = await viaIndex();
    assert.equal(mine.length, 5);
    assert.equal(mine[0]!.documentId, docs.volcanoes);
    // The same without the function's setting: the scan stops after ef_search candidates.
    await sql`alter function docpipe.match_chunks reset "hnsw.iterative_scan"`;
    try {
      assert.equal((await viaIndex()).length, 0, 'the index was used, and the setting is what fills k');
    } finally {
      await sql`alter function docpipe.match_chunks set hnsw.iterative_scan = strict_order`;
    }
  });
});

describe('reprocessed and deleted documents never answer (pgvector)', () => {
  test('a reprocess hides the previous run at once, though its rows stay until the new run replaces them', async () => {
    await command(docs.volcanoes, { type: 'Reprocess', reason: 'test' });
    const [old] = await sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_chunks where document_id = ${docs.volcanoes} and run = 1`;
    assert.ok(old!.n > 0, 'run 1 is still in the table');
    assert.ok((await search(store, VOLCANO_SENTENCE, { k: 50 })).every((h) => h.documentId !== docs.volcanoes));
    await drain();
    const hits = await search(store, VOLCANO_SENTENCE);
    assert.equal(hits[0]!.documentId, docs.volcanoes);
    const runs = await sql<{ run: number }[]>`select distinct run from docpipe.document_chunks where document_id = ${docs.volcanoes}`;
    assert.deepEqual(runs.map((r) => r.run), [2]);
  });

  test('a deleted document never answers, even with its rows still in the table', async () => {
    // The API removes the chunks with DocumentDeleted; here they stay, so the filter alone is tested.
    await command(docs.beekeeping, { type: 'Delete', reason: null });
    const [left] = await sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_chunks where document_id = ${docs.beekeeping}`;
    assert.ok(left!.n > 0);
    const hits = await search(store, CORPUS.beekeeping, { k: 50 });
    assert.ok(hits.length > 0 && hits.every((h) => h.documentId !== docs.beekeeping));
  });
});

describe('docpipe.match_chunks under row-level security (docs/PROVIDERS.md, "Search")', () => {
  test('with the documented policies, a signed-in user sees their own chunks only', async () => {
    // What Supabase has: the roles, auth.uid() from the request's JWT claims, and usage of `extensions`.
    await sql.unsafe(`
      create role authenticated nologin;
      create schema auth;
      create function auth.uid() returns uuid language sql stable as
        $$ select nullif(current_setting('request.jwt.claims', true)::jsonb ->> 'sub', '')::uuid $$;
      grant usage on schema auth, extensions to authenticated;`);
    const docsText = await readFile(fileURLToPath(new URL('../../docs/PROVIDERS.md', import.meta.url)), 'utf8');
    const section = docsText.slice(docsText.indexOf('\n## Search'));
    const policies = /```sql\n([^`]*enable row level security[^`]*)```/.exec(section)?.[1];
    assert.ok(policies, 'docs/PROVIDERS.md, "Search", has the policies in a sql block');
    await sql.unsafe(policies);

    const [query] = await embedder.embed([CORPUS.sourdough]);
    const asUser = (sub: string) =>
      sql.begin(async (tx) => {
        await tx`set local role authenticated`;
        await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub, role: 'authenticated' })}, true)`;
        const matched = await tx<{ document_id: string; similarity: number }[]>`
          select document_id, similarity from docpipe.match_chunks(${`[${query!.join(',')}]`}, 50)`;
        const [chunks] = await tx<{ n: number }[]>`select count(*)::int as n from docpipe.document_chunks`;
        return { documents: new Set(matched.map((m) => m.document_id)), chunks: chunks!.n };
      });
    const a = await asUser(USER_A);
    assert.deepEqual([...a.documents].sort(), [docs.lighthouses, docs.volcanoes, legacyId].sort(), 'user A: their ready documents, not the deleted one');
    const b = await asUser(USER_B);
    assert.deepEqual([...b.documents], [docs.sourdough]);
    const [{ total }] = (await sql<{ total: number }[]>`select count(*)::int as total from docpipe.document_chunks`) as unknown as [{ total: number }];
    assert.ok(a.chunks > 0 && b.chunks > 0 && a.chunks + b.chunks < total, 'the chunks table itself is filtered too');
    const nobody = await asUser(randomUUID());
    assert.equal(nobody.documents.size, 0);
  });
});
