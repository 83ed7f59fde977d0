// Search on pgvector (migration 005's pgvector path), on PGlite: PostgreSQL 18 with pgvector, served
// over the wire protocol (test/helpers/pglite.ts), so the real migration runner, pipeline stages
// and search code run against it, as they do against Supabase: the extension goes to the schema
// `extensions`, the vector column follows EMBEDDING_DIMENSIONS, an HNSW index orders the search,
// existing real[] embeddings are moved over, a changed dimension is refused, reprocessed and
// deleted documents never answer, a selective filter still fills k when the index walk stops
// early, and docpipe.match_chunks under the documented row-level security shows each user their
// own chunks only. A role that may not create the extension gets the real[] path.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import type { Db } from '../../src/db/client.ts';
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
/** The crowd's document: 1,000 chunks nearer to VOLCANO_SENTENCE than any of user A's (withCrowdAndScanLimit). */
let crowd: string | undefined;
const docs: Record<keyof typeof CORPUS, string> = { lighthouses: '', beekeeping: '', volcanoes: '', sourdough: '' };
let legacyId: string;

// Another owner holds 1,000 chunks nearer to the query than any of user A's, and the session
// lets an index walk visit 100 tuples past its first ef_search candidates at most
// (hnsw.max_scan_tuples: 20,000 by default; in production, 30,000 nearer chunks did what 1,000
// do here). Sorts are disabled so that the planner
// takes the index wherever it can: on a table this small it would rather score user A's few
// chunks exactly, which is right, and hides the walk's limit.
async function withCrowdAndScanLimit<T>(fn: () => Promise<T>): Promise<T> {
  if (!crowd) {
    crowd = randomUUID();
    await sql`
      insert into docpipe.document_status (id, owner_id, file_name, media_type, size_bytes, sha256, storage_key, status, run, version, uploaded_at, updated_at)
      values (${crowd}, 'crowd', 'crowd.md', 'text/markdown', 1, ${'0'.repeat(64)}, 'k', 'ready', 1, 1, now(), now())`;
    const texts = Array.from({ length: 1000 }, (_, i) => `${VOLCANO_SENTENCE} variant ${i}`);
    const vectors = await embedder.embed(texts);
    await sql`
      insert into docpipe.document_chunks ${sql(texts.map((content, i) => ({ document_id: crowd, chunk_index: i, run: 1, content, token_count: 20, embedding: realArray(vectors[i]!) })))}`;
    const everyone = await search(store, VOLCANO_SENTENCE, { owner: null, k: 50 });
    assert.ok(everyone.every((h) => h.documentId === crowd), 'the crowd is nearest');
  }
  // PGlite is one session (the pool has one connection): session settings hold for what follows.
  // Plans cached while the table was small (prepared statements', and on PostgreSQL 18 SQL
  // functions') would score user A's few chunks exactly, whatever the settings: planned afresh.
  await sql`discard plans`;
  await sql`set enable_sort = off`;
  await sql`set hnsw.max_scan_tuples = 100`;
  try {
    return await fn();
  } finally {
    await sql`reset enable_sort`;
    await sql`reset hnsw.max_scan_tuples`;
    await sql`reset plan_cache_mode`;
  }
}

/** How many rows an index walk alone gives (user A's, or under RLS whatever the caller sees) under the session's limit. */
async function indexWalkAlone(query: Float32Array, db: Db, owner: string | null = USER_A): Promise<number> {
  const rows = await db.unsafe(
    `select document_id from docpipe.searchable_chunks
     where embedding_vector is not null ${owner === null ? '' : 'and owner_id = $2'}
     order by embedding_vector operator(extensions.<=>) $1::extensions.vector limit 5`,
    owner === null ? [`[${query.join(',')}]`] : [`[${query.join(',')}]`, owner],
  );
  return rows.length;
}

describe('migration 005 on pgvector', () => {
  test('needs the dimension; then creates the extension in `extensions`, the vector(N) column and its HNSW index, and moves the stored real[] embeddings', async () => {
    // A database without 005: one document embedded as real[]. The migrations after 005 are there
    // too (the pipeline of today writes their tables); 005 applies on its own afterwards.
    const previous = await mkdtemp(path.join(os.tmpdir(), 'docpipe-migrations-'));
    after(() => rm(previous, { recursive: true, force: true }));
    const all = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{3}_.*\.sql$/.test(f)).sort();
    const versions = all.map((f) => Number(f.slice(0, 3)));
    for (const file of all.filter((f) => !f.startsWith('005_'))) await copyFile(path.join(MIGRATIONS_DIR, file), path.join(previous, file));
    assert.deepEqual(await migrate(sql, { dir: previous }), versions.filter((v) => v !== 5));
    legacyId = await uploadDocument(USER_A, '# Legacy\n\nAn almanac of tide tables, moon phases and harbour pilotage notes for the estuary.');
    await drain();
    const [legacy] = await sql<{ embedding: number[] }[]>`select embedding from docpipe.document_chunks where document_id = ${legacyId}`;
    assert.equal(legacy!.embedding.length, DIMENSIONS, 'stored as real[] before 005');

    await assert.rejects(migrate(sql), /pgvector is available but docpipe\.embedding_dimensions is not set/);
    const [{ n }] = (await sql<{ n: number }[]>`select count(*)::int as n from docpipe.schema_migrations`) as unknown as [{ n: number }];
    assert.equal(n, versions.length - 1, 'the refused migration left nothing behind');

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
    assert.deepEqual(store, { kind: 'pgvector', dimensions: DIMENSIONS, schema: 'extensions', iterativeScan: true });
  });

  test('the trigger: a vector written to `embedding` moves to the vector column; an explicit null clears both; other updates keep it', async () => {
    const id = randomUUID();
    const [one, two] = await embedder.embed(['tide tables', 'moon phases']);
    const floats = (text: string) => [...Float32Array.from(JSON.parse(text) as number[])];
    const row = async () =>
      (await sql<{ embedding: number[] | null; vector: string | null }[]>`
        select embedding, embedding_vector::text as vector from docpipe.document_chunks where document_id = ${id}`)[0]!;
    await sql`insert into docpipe.document_chunks (document_id, chunk_index, run, content, token_count) values (${id}, 0, 1, 'x', 1)`;
    assert.deepEqual(await row(), { embedding: null, vector: null }, 'a chunk not embedded yet');
    await sql`update docpipe.document_chunks set embedding = ${realArray(one!)}::real[] where document_id = ${id}`;
    assert.deepEqual([(await row()).embedding, floats((await row()).vector!)], [null, [...one!]]);
    await sql`update docpipe.document_chunks set content = 'y' where document_id = ${id}`;
    assert.deepEqual(floats((await row()).vector!), [...one!], 'an update that does not name `embedding` keeps the vector');
    await sql`update docpipe.document_chunks set embedding = ${realArray(two!)}::real[] where document_id = ${id}`;
    assert.deepEqual(floats((await row()).vector!), [...two!], 'a new vector replaces the old');
    await sql`update docpipe.document_chunks set embedding = null where document_id = ${id}`;
    assert.deepEqual(await row(), { embedding: null, vector: null }, 'writing null to `embedding` removes the vector');
    await sql`delete from docpipe.document_chunks where document_id = ${id}`;
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

  test('a selective owner still gets k results when the index walk stops early (scan limit; an older pgvector\'s ef_search)', async () => {
    await withCrowdAndScanLimit(async () => {
      const [query] = await embedder.embed([VOLCANO_SENTENCE]);
      const walked = await sql.begin(async (tx) => {
        await tx`set local hnsw.iterative_scan = strict_order`;
        await tx`set local hnsw.ef_search = 100`;
        return indexWalkAlone(query!, tx);
      });
      assert.ok(walked < 5, `the walk visits the crowd, and stops short (${walked} rows)`);

      const mine = await search(store, VOLCANO_SENTENCE);
      assert.equal(mine.length, 5);
      assert.equal(mine[0]!.documentId, docs.volcanoes);
      assert.ok(mine.every((h) => h.documentId !== crowd));
      // pgvector before 0.8: no iterative scan, the walk ends after ef_search (100) candidates,
      // all the crowd's. The owner's chunks are then scored exactly.
      const older = await search({ ...(store as Extract<VectorStore, { kind: 'pgvector' }>), iterativeScan: false }, VOLCANO_SENTENCE);
      assert.deepEqual(older, mine);
    });
  });

  test('documentIds under generic plans (plan_cache_mode = force_generic_plan): the documents\' chunks, scored exactly', async () => {
    await withCrowdAndScanLimit(async () => {
      await sql`set plan_cache_mode = force_generic_plan`;
      const [{ n }] = (await sql<{ n: number }[]>`
        select count(*)::int as n from docpipe.searchable_chunks where document_id = ${docs.volcanoes}`) as unknown as [{ n: number }];
      assert.ok(n >= 2);
      // On this server, and as on a pgvector before 0.8 (no iterative scan).
      const stores = [store, { ...(store as Extract<VectorStore, { kind: 'pgvector' }>), iterativeScan: false }];
      for (const [owner, where] of stores.flatMap((st) => [USER_A, null].map((o) => [o, st] as const))) {
        // Several times: a prepared statement's plan is the one cached at the first.
        for (let i = 0; i < 3; i++) {
          const within = await search(where, VOLCANO_SENTENCE, { owner, documentIds: [docs.volcanoes], k: 50 });
          assert.equal(within.length, n, `all ${n} chunks of the document (owner ${owner}, iterative scan: ${where.kind === 'pgvector' && where.iterativeScan})`);
          assert.ok(within.every((h) => h.documentId === docs.volcanoes));
          assert.ok(within[0]!.text.includes(VOLCANO_SENTENCE));
        }
      }
      assert.deepEqual(await search(store, VOLCANO_SENTENCE, { owner: USER_B, documentIds: [docs.volcanoes] }), [], 'another owner\'s document');
    });
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
  const vectorOf = async (text: string) => `[${(await embedder.embed([text]))[0]!.join(',')}]`;
  /** As Supabase runs a request: the role, and the token's claims. */
  const asRole = <T>(role: 'authenticated' | 'service_role', sub: string, fn: (tx: Db) => Promise<T>) =>
    sql.begin(async (tx) => {
      await tx.unsafe(`set local role ${role}`);
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub, role })}, true)`;
      return fn(tx);
    });
  const match = (tx: Db, query: string, count: number, documentIds: string[] | null = null, owner: string | null = null) =>
    tx<{ document_id: string; chunk_index: number; similarity: number }[]>`
      select document_id, chunk_index, similarity from docpipe.match_chunks(${query}, ${count}, ${documentIds}::uuid[], ${owner})`;
  const OTHER_SUB = 'user_2kQ9xTtEXAMPLE';
  let otherDoc: string;

  test('with the documented policies, a signed-in user sees their own chunks only', async () => {
    // What Supabase has: the roles, auth.jwt() and auth.uid() from the request's JWT claims, and
    // usage of `extensions`.
    await sql.unsafe(`
      create role authenticated nologin;
      create role service_role nologin bypassrls;
      create schema auth;
      create function auth.jwt() returns jsonb language sql stable as
        $$ select coalesce(nullif(current_setting('request.jwt.claim', true), ''), nullif(current_setting('request.jwt.claims', true), ''))::jsonb $$;
      create function auth.uid() returns uuid language sql stable as
        $$ select nullif(current_setting('request.jwt.claims', true)::jsonb ->> 'sub', '')::uuid $$;
      grant usage on schema auth, extensions to authenticated, service_role;`);
    const docsText = await readFile(fileURLToPath(new URL('../../docs/PROVIDERS.md', import.meta.url)), 'utf8');
    const section = docsText.slice(docsText.indexOf('\n## Search'));
    const policies = /```sql\n([^`]*enable row level security[^`]*)```/.exec(section)?.[1];
    assert.ok(policies, 'docs/PROVIDERS.md, "Search", has the policies in a sql block');
    await sql.unsafe(policies);

    const query = await vectorOf(CORPUS.sourdough);
    const asUser = (sub: string) =>
      asRole('authenticated', sub, async (tx) => {
        const matched = await match(tx, query, 50);
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

  test('a user whose `sub` is not a uuid (third-party auth) sees their own chunks', async () => {
    otherDoc = await uploadDocument(OTHER_SUB, CORPUS.beekeeping);
    await drain();
    const seen = await asRole('authenticated', OTHER_SUB, async (tx) => match(tx, await vectorOf(CORPUS.beekeeping), 50));
    assert.ok(seen.length > 0 && seen.every((m) => m.document_id === otherDoc));
  });

  test('the grants: the document list\'s other columns stay hidden; anyone without the grant may not call the function; the service role sees every owner', async () => {
    const [own] = await asRole('authenticated', USER_A, (tx) => tx`select id, owner_id, status, run from docpipe.document_status limit 1`);
    assert.equal(own!.owner_id, USER_A);
    await assert.rejects(
      asRole('authenticated', USER_A, (tx) => tx`select storage_key from docpipe.document_status`),
      /permission denied for table document_status/,
    );
    await sql.unsafe('create role stranger nologin; grant usage on schema docpipe, extensions to stranger');
    await assert.rejects(
      sql.begin(async (tx) => {
        await tx`set local role stranger`;
        await match(tx, await vectorOf('lamp'), 5);
      }),
      /permission denied for function match_chunks/,
    );
    const query = await vectorOf(CORPUS.sourdough);
    const all = await asRole('service_role', 'backend', (tx) => match(tx, query, 50));
    assert.equal(all[0]!.document_id, docs.sourdough, 'every owner\'s chunks');
    const onlyA = await asRole('service_role', 'backend', (tx) => match(tx, query, 50, null, USER_A));
    assert.ok(onlyA.length > 0 && onlyA.every((m) => m.document_id !== docs.sourdough && m.document_id !== otherDoc));
  });

  test('a selective user still gets match_count rows when the index walk stops early; documents named are scored exactly', async () => {
    await withCrowdAndScanLimit(async () => {
      const [vector] = await embedder.embed([VOLCANO_SENTENCE]);
      const query = `[${vector!.join(',')}]`;
      await asRole('authenticated', USER_A, async (tx) => {
        await tx`set local hnsw.iterative_scan = strict_order`;
        const walked = await indexWalkAlone(vector!, tx, null);
        assert.ok(walked < 5, `under RLS too, the walk visits the crowd, and stops short (${walked} rows)`);
        const mine = await match(tx, query, 5);
        assert.equal(mine.length, 5);
        assert.equal(mine[0]!.document_id, docs.volcanoes);
        assert.ok(mine.every((m, i) => i === 0 || m.similarity <= mine[i - 1]!.similarity), 'best first');
        const within = await match(tx, query, 50, [docs.volcanoes]);
        const [{ n }] = (await tx<{ n: number }[]>`
          select count(*)::int as n from docpipe.searchable_chunks where document_id = ${docs.volcanoes}`) as unknown as [{ n: number }];
        assert.equal(within.length, n);
        assert.ok(within.every((m) => m.document_id === docs.volcanoes));
      });
      const b = await asRole('authenticated', USER_B, (tx) => match(tx, query, 50, [docs.volcanoes]));
      assert.equal(b.length, 0, 'another user\'s document, named');
      // The backend naming an owner: the same, without RLS.
      const owner = await asRole('service_role', 'backend', (tx) => match(tx, query, 5, null, USER_A));
      assert.equal(owner.length, 5);
      assert.equal(owner[0]!.document_id, docs.volcanoes);
    });
  });

  test('the iterative scan is decided at each call, by the server\'s settings, and lasts to the end of the caller\'s transaction', async () => {
    const setting = await sql.begin(async (tx) => {
      await match(tx, await vectorOf('lamp'), 5);
      const [row] = await tx<{ iterative: string; ef: string }[]>`
        select current_setting('hnsw.iterative_scan') as iterative, current_setting('hnsw.ef_search') as ef`;
      return row;
    });
    assert.deepEqual(setting, { iterative: 'strict_order', ef: '100' });
    const [later] = await sql<{ iterative: string }[]>`select current_setting('hnsw.iterative_scan') as iterative`;
    assert.equal(later!.iterative, 'off', 'not past the transaction');
  });
});

describe('migration 005 where pgvector is available but this role may not create it', () => {
  test('it keeps real[] and says how to enable pgvector; its transaction has no statement timeout and a larger maintenance_work_mem; mixed real[] lengths are refused', async () => {
    const other = await startVectorPostgres({ supabaseSchemas: true });
    const warnings: string[] = [];
    const db = postgres(other.url, { max: 1, onnotice: (n) => void warnings.push(`${n.severity}: ${n.message} (${n.hint})`) });
    after(() => db.end({ timeout: 5 }));
    // A role like a hosted database's, not a superuser: pgvector is not a trusted extension.
    await db.unsafe(`
      create role migrator nosuperuser;
      grant create on database postgres to migrator;
      set role migrator;
      set statement_timeout = '2min';`);
    // The migrations, with a probe after 005 in its transaction: the settings it runs under.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-migrations-'));
    after(() => rm(dir, { recursive: true, force: true }));
    for (const file of await readdir(MIGRATIONS_DIR)) await copyFile(path.join(MIGRATIONS_DIR, file), path.join(dir, file));
    const v5 = (await readdir(dir)).find((f) => f.startsWith('005_'))!;
    const probe = `\ncreate table docpipe.probe as select current_setting('statement_timeout') as statement_timeout, current_setting('maintenance_work_mem') as maintenance_work_mem;\n`;
    await writeFile(path.join(dir, v5), (await readFile(path.join(dir, v5), 'utf8')) + probe);

    const versions = (await readdir(dir)).filter((f) => /^\d{3}_.*\.sql$/.test(f)).map((f) => Number(f.slice(0, 3))).sort((a, b) => a - b);
    assert.ok(versions.includes(5));
    assert.deepEqual(await migrate(db, { dir, embeddingDimensions: DIMENSIONS }), versions);
    assert.deepEqual([...(await db`select * from docpipe.probe`)], [{ statement_timeout: '0', maintenance_work_mem: '128MB' }]);
    const [state] = await db<{ extension: boolean; vector: boolean; array: boolean; view: boolean; fn: boolean }[]>`
      select exists (select 1 from pg_extension where extname = 'vector') as extension,
             exists (select 1 from information_schema.columns where table_schema = 'docpipe' and table_name = 'document_chunks' and column_name = 'embedding_vector') as vector,
             exists (select 1 from information_schema.columns where table_schema = 'docpipe' and table_name = 'document_chunks' and column_name = 'embedding') as array,
             to_regclass('docpipe.searchable_chunks') is not null as view,
             to_regproc('docpipe.match_chunks') is not null as fn`;
    assert.deepEqual(state, { extension: false, vector: false, array: true, view: true, fn: false });
    assert.deepEqual(await inspectVectorStore(db), { kind: 'array', dimensions: null, lengths: [] });

    // On real[], every stored length counts, not a sample: two lengths are refused, naming both.
    const doc = randomUUID();
    await db`insert into docpipe.document_chunks (document_id, chunk_index, run, content, token_count, embedding)
             values (${doc}, 0, 1, 'a', 1, '{1,0,0}'), (${doc}, 1, 1, 'b', 1, '{1,0,0,0}')`;
    assert.deepEqual(await inspectVectorStore(db), { kind: 'array', dimensions: null, lengths: [3, 4] });
    for (const configured of [3, 4]) {
      await assert.rejects(openVectorStore(db, configured), (err: unknown) => {
        assert.ok(err instanceof EmbeddingDimensionsError);
        assert.match(err.message, new RegExp(`^EMBEDDING_DIMENSIONS is ${configured}, but the embeddings stored in the database have several dimensions \\(3, 4\\)`));
        return true;
      });
    }
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0]!, /^WARNING: pgvector is available, but migrator may not create the extension: embeddings stay in real\[\].*create the extension as a superuser/);
  });
});
