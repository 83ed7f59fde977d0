// A rebuild from the log gives exactly the rows the inline path wrote (document_status and
// usage_daily), repairs a damaged read model, and removes chunks that belong to no current run.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { execute, type CommandContext } from '../../src/documents/commands.ts';
import type { DocumentCommand, DocumentStatus } from '../../src/documents/document.ts';
import type { EventMetadata } from '../../src/events/catalog.ts';
import { rebuildProjections } from '../../src/projections/rebuild.ts';
import { rollupUsage } from '../../src/projections/usage.ts';
import type { JobRequest } from '../../src/queue/jobs.ts';
import { createDatabase } from '../helpers/db.ts';

const db = await createDatabase();
const { sql } = db;

// The queue is not under test here: record the jobs instead of sending them.
const sent: JobRequest[] = [];
const ctx: CommandContext = { sql, jobs: { send: async (_tx, jobs) => void sent.push(...jobs) } };

const upload = (n: number): DocumentCommand => ({
  type: 'Upload',
  ownerId: `user-${n % 3}`,
  fileName: `doc-${n}.md`,
  mediaType: 'text/markdown',
  size: 1000 + n,
  sha256: n.toString(16).padStart(64, '0'),
  storageKey: `documents/${n}/original`,
  idempotencyKey: n % 2 ? `key-${n}` : null,
});
const startParse = (run: number): DocumentCommand => ({ type: 'StartParse', run, parser: 'local' });
const completeParse = (run: number): DocumentCommand => ({ type: 'CompleteParse', run, parsedKey: `parsed/${run}`, pages: 2, characters: 900, sha256: 'e'.repeat(64) });
const startEmbedding = (run: number): DocumentCommand => ({ type: 'StartEmbedding', run });
const chunks = (run: number, chunkCount = 10, batchSize = 4): DocumentCommand => ({ type: 'RecordChunks', run, chunkCount, tokenCount: chunkCount * 50, batchSize });
const batch = (run: number, n: number): DocumentCommand => ({ type: 'StoreEmbeddingBatch', run, batch: n, model: 'local', dimensions: 8 });
const attemptFailed = (run: number, stage: 'parse' | 'embed'): DocumentCommand => ({ type: 'RecordAttemptFailure', run, stage, code: 'TRANSIENT', message: `${stage} hiccup` });
const toReady = (run: number): DocumentCommand[] => [startParse(run), completeParse(run), startEmbedding(run), chunks(run), batch(run, 0), batch(run, 1), batch(run, 2), { type: 'MarkReady', run }];

interface Scenario {
  name: string;
  status: DocumentStatus;
  run: number;
  commands: (n: number) => DocumentCommand[];
}

const SCENARIOS: Scenario[] = [
  { name: 'uploaded', status: 'uploaded', run: 1, commands: (n) => [upload(n)] },
  { name: 'parsing', status: 'parsing', run: 1, commands: (n) => [upload(n), startParse(1)] },
  { name: 'parsing after a failed attempt', status: 'parsing', run: 1, commands: (n) => [upload(n), startParse(1), attemptFailed(1, 'parse'), startParse(1)] },
  { name: 'parsed', status: 'parsed', run: 1, commands: (n) => [upload(n), startParse(1), attemptFailed(1, 'parse'), startParse(1), completeParse(1)] },
  { name: 'embedding, not chunked', status: 'embedding', run: 1, commands: (n) => [upload(n), startParse(1), completeParse(1), startEmbedding(1)] },
  { name: 'embedding, some batches', status: 'embedding', run: 1, commands: (n) => [upload(n), startParse(1), completeParse(1), startEmbedding(1), chunks(1), batch(1, 0)] },
  {
    name: 'embedding, retried after a failed batch',
    status: 'embedding',
    run: 1,
    commands: (n) => [upload(n), startParse(1), completeParse(1), startEmbedding(1), chunks(1), batch(1, 0), attemptFailed(1, 'embed'), startEmbedding(1), batch(1, 1)],
  },
  { name: 'ready', status: 'ready', run: 1, commands: (n) => [upload(n), ...toReady(1)] },
  {
    name: 'failed while parsing',
    status: 'failed',
    run: 1,
    commands: (n) => [upload(n), startParse(1), attemptFailed(1, 'parse'), { type: 'Fail', run: 1, stage: 'parse', code: 'DEAD_LETTERED', message: 'retries exhausted' }],
  },
  {
    name: 'failed while embedding',
    status: 'failed',
    run: 1,
    commands: (n) => [upload(n), startParse(1), completeParse(1), startEmbedding(1), chunks(1), batch(1, 0), { type: 'Fail', run: 1, stage: 'embed', code: 'EMBED_REJECTED', message: 'bad input' }],
  },
  { name: 'reprocessed, then ready', status: 'ready', run: 2, commands: (n) => [upload(n), ...toReady(1), { type: 'Reprocess', reason: 'new model' }, ...toReady(2)] },
  {
    name: 'reprocessed after a failure, then uploaded',
    status: 'uploaded',
    run: 2,
    commands: (n) => [upload(n), startParse(1), { type: 'Fail', run: 1, stage: 'parse', code: 'UNPARSEABLE', message: 'no text' }, { type: 'Reprocess', reason: null }],
  },
  { name: 'deleted when ready', status: 'deleted', run: 1, commands: (n) => [upload(n), ...toReady(1), { type: 'Delete', reason: 'user' }] },
  { name: 'deleted when uploaded', status: 'deleted', run: 1, commands: (n) => [upload(n), { type: 'Delete', reason: null }] },
  {
    name: 'deleted while embedding, after a reprocess',
    status: 'deleted',
    run: 2,
    commands: (n) => [upload(n), ...toReady(1), { type: 'Reprocess', reason: null }, startParse(2), completeParse(2), startEmbedding(2), { type: 'Delete', reason: null }],
  },
];

const PER_SCENARIO = 4;

interface Doc {
  id: string;
  n: number;
  scenario: Scenario;
  commands: DocumentCommand[];
}

const docs: Doc[] = [];
for (let n = 0; n < SCENARIOS.length * PER_SCENARIO; n++) {
  const scenario = SCENARIOS[n % SCENARIOS.length]!;
  docs.push({ id: randomUUID(), n, scenario, commands: scenario.commands(n) });
}
const docOf = (name: string, k = 0) => docs.filter((d) => d.scenario.name === name)[k]!;

const meta = (doc: Doc): EventMetadata => ({ correlationId: `corr-${doc.n}`, causationId: null, actor: 'worker', requestId: null });

/** Runs every document's commands, round by round, documents of a round concurrently: the log interleaves streams. */
async function buildLog(): Promise<number> {
  let events = 0;
  const longest = Math.max(...docs.map((d) => d.commands.length));
  for (let step = 0; step < longest; step++) {
    const results = await Promise.all(
      docs.filter((d) => step < d.commands.length).map((d) => execute(ctx, d.id, d.commands[step]!, meta(d))),
    );
    events += results.reduce((sum, r) => sum + r.events.length, 0);
  }
  return events;
}

const snapshot = async () => [...(await sql`select * from docpipe.document_status order by id`)];
const usageSnapshot = async () => {
  // Deltas folded in first (the maintenance job's roll-up), so the snapshot is one row per owner and day.
  await rollupUsage(sql);
  return [...(await sql`select * from docpipe.usage_daily order by owner_id, day`)];
};
const chunkRows = async () =>
  await sql<{ document_id: string; chunk_index: number; run: number }[]>`
    select document_id, chunk_index, run from docpipe.document_chunks order by document_id, chunk_index`;

async function insertChunk(documentId: string, chunkIndex: number, run: number): Promise<void> {
  await sql`
    insert into docpipe.document_chunks (document_id, chunk_index, run, content, token_count, embedding)
    values (${documentId}, ${chunkIndex}, ${run}, ${`chunk ${chunkIndex} of run ${run}`}, 12, ${[0.5, -0.25, 1]}::real[])`;
}

const totalEvents = await buildLog();
const expected = await snapshot();
const expectedUsage = await usageSnapshot();

describe('projection rebuild', () => {
  test('the log covers every state, and the inline rows match each scenario', async () => {
    assert.equal(expected.length, docs.length);
    assert.deepEqual([...new Set(expected.map((r) => r.status))].sort(), ['deleted', 'embedding', 'failed', 'parsed', 'parsing', 'ready', 'uploaded']);
    const [types] = await sql<{ types: string[] }[]>`select array_agg(distinct type order by type) as types from docpipe.events`;
    assert.deepEqual(types!.types, [
      'DocumentChunked', 'DocumentDeleted', 'DocumentFailed', 'DocumentReady', 'DocumentUploaded', 'EmbeddingBatchStored',
      'EmbeddingStarted', 'ParseStarted', 'ParseSucceeded', 'ReprocessRequested', 'StageAttemptFailed',
    ]);
    const byId = new Map(expected.map((r) => [r.id as string, r]));
    for (const doc of docs) {
      const row = byId.get(doc.id);
      assert.ok(row, `${doc.scenario.name}: row`);
      assert.equal(row.status, doc.scenario.status, doc.scenario.name);
      assert.equal(row.run, doc.scenario.run, doc.scenario.name);
      assert.equal(row.version, doc.commands.length, `${doc.scenario.name}: one event per command`);
      assert.equal(Number(row.size_bytes), 1000 + doc.n);
    }
    assert.equal(sent.filter((j) => j.queue === 'docpipe-parse').length, docs.length + PER_SCENARIO * 3, 'one parse job per upload and per reprocess');
    // usage_daily: every upload, every parse and every chunking, reprocessed runs included.
    const sum = (field: string) => expectedUsage.reduce((n, r) => n + Number(r[field]), 0);
    assert.equal(sum('documents'), docs.length);
    assert.equal(sum('bytes'), docs.reduce((n, d) => n + 1000 + d.n, 0));
    const count = (type: string) => docs.reduce((n, d) => n + d.commands.filter((c) => c.type === type).length, 0);
    assert.equal(sum('pages'), 2 * count('CompleteParse'));
    assert.equal(sum('tokens'), 500 * count('RecordChunks'));
    assert.deepEqual([...new Set(expectedUsage.map((r) => r.owner_id))].sort(), ['user-0', 'user-1', 'user-2']);
  });

  test('rebuildProjections gives exactly the rows of the inline path', async () => {
    const result = await rebuildProjections(sql);
    assert.equal(result.documents, docs.length);
    assert.equal(result.events, totalEvents);
    assert.equal(result.orphanChunksRemoved, 0);
    assert.equal(result.usageRows, expectedUsage.length);
    assert.deepEqual(await snapshot(), expected);
    assert.deepEqual(await usageSnapshot(), expectedUsage);
  });

  test('a rebuild restores deleted and corrupted rows and drops rows with no stream', async () => {
    const gone = docs.slice(0, 7).map((d) => d.id);
    const corrupted = docs.slice(7, 14).map((d) => d.id);
    await sql`delete from docpipe.document_status where id in ${sql(gone)}`;
    await sql`
      update docpipe.document_status
      set status = 'failed', progress = 3, run = 9, error_code = 'CORRUPT', error_message = 'x', chunk_count = 77,
          version = 999, file_name = 'evil.exe', ready_at = now(), updated_at = now()
      where id in ${sql(corrupted)}`;
    const stray = randomUUID();
    await sql`
      insert into docpipe.document_status (id, owner_id, file_name, media_type, size_bytes, sha256, storage_key, status, version, uploaded_at, updated_at)
      values (${stray}, 'nobody', 'stray.txt', 'text/plain', 1, 'x', 'k', 'ready', 1, now(), now())`;
    assert.notDeepEqual(await snapshot(), expected);
    // usage_daily too: a row lost, a row inflated, a row of nobody's.
    await sql`delete from docpipe.usage_daily where owner_id = 'user-0'`;
    await sql`update docpipe.usage_daily set tokens = tokens + 12345, documents = 0 where owner_id = 'user-1'`;
    await sql`insert into docpipe.usage_daily (owner_id, day, documents, bytes) values ('nobody', '2001-01-01', 1, 1)`;
    assert.notDeepEqual(await usageSnapshot(), expectedUsage);

    const result = await rebuildProjections(sql);
    assert.equal(result.documents, docs.length);
    assert.deepEqual(await snapshot(), expected);
    assert.deepEqual(await usageSnapshot(), expectedUsage);
  });

  test('orphan chunks (deleted document, stale run, no document) are removed; current ones stay', async () => {
    const ready = docOf('ready');
    const reprocessedReady = docOf('reprocessed, then ready');
    const reprocessedUploaded = docOf('reprocessed after a failure, then uploaded');
    const deletedReady = docOf('deleted when ready');
    const deletedAfterReprocess = docOf('deleted while embedding, after a reprocess');
    const embedding = docOf('embedding, some batches');

    const keep: [string, number, number][] = [
      [ready.id, 0, 1], [ready.id, 1, 1], [ready.id, 2, 1],
      [reprocessedReady.id, 0, 2], [reprocessedReady.id, 1, 2],
      [embedding.id, 0, 1], [embedding.id, 1, 1],
    ];
    const orphans: [string, number, number][] = [
      [reprocessedReady.id, 5, 1], [reprocessedReady.id, 6, 1], // run 1 of a document now in run 2
      [reprocessedUploaded.id, 0, 1], // run 1 chunks after a reprocess
      [deletedReady.id, 0, 1], [deletedReady.id, 1, 1], // a deleted document
      [deletedAfterReprocess.id, 0, 2], // a deleted document, current run
      [randomUUID(), 0, 1], // no such document
      [ready.id, 3, 2], // a run the document never reached
    ];
    for (const [id, index, run] of [...keep, ...orphans]) await insertChunk(id, index, run);

    const result = await rebuildProjections(sql);
    assert.equal(result.orphanChunksRemoved, orphans.length);
    const sortKey = ([id, index]: [string, number, number]) => `${id}:${String(index).padStart(4, '0')}`;
    const expectedChunks = [...keep].sort((a, b) => sortKey(a).localeCompare(sortKey(b)));
    assert.deepEqual(
      (await chunkRows()).map((r) => [r.document_id, r.chunk_index, r.run]),
      expectedChunks,
    );
    const [kept] = await sql<{ content: string; token_count: number; embedding: number[] }[]>`
      select content, token_count, embedding from docpipe.document_chunks where document_id = ${ready.id} and chunk_index = 1`;
    assert.deepEqual(kept, { content: 'chunk 1 of run 1', token_count: 12, embedding: [0.5, -0.25, 1] }, 'kept chunks are untouched');
    assert.deepEqual(await snapshot(), expected, 'the status rows are still the inline ones');
    assert.deepEqual(await usageSnapshot(), expectedUsage, 'and the usage rows');

    // Idempotent: nothing more to remove, nothing changed.
    const again = await rebuildProjections(sql);
    assert.equal(again.orphanChunksRemoved, 0);
    assert.equal((await chunkRows()).length, keep.length);
    assert.deepEqual(await snapshot(), expected);
  });

  test('the inline path keeps working on top of a rebuilt table', async () => {
    const doc = docOf('uploaded');
    await execute(ctx, doc.id, startParse(1), meta(doc));
    await execute(ctx, doc.id, completeParse(1), meta(doc));
    const inline = await snapshot();
    const inlineUsage = await usageSnapshot();
    await rebuildProjections(sql);
    assert.deepEqual(await snapshot(), inline);
    assert.deepEqual(await usageSnapshot(), inlineUsage);
    const pages = (rows: Record<string, unknown>[]) => rows.reduce((n, r) => n + Number(r.pages), 0);
    assert.equal(pages(inlineUsage), pages(expectedUsage) + 2, 'the parse on top of the rebuilt table was counted');
    const row = inline.find((r) => r.id === doc.id)!;
    assert.equal(row.status, 'parsed');
    assert.equal(row.version, 3);
  });
});

test('a rebuild notifies "*" on the status channel at its commit, so every api process empties its status cache', async () => {
  const payloads: string[] = [];
  let heard!: () => void;
  const star = new Promise<void>((resolve) => (heard = resolve));
  // listen() resolves once the LISTEN is in place.
  const sub = await sql.listen('docpipe_status', (payload) => {
    payloads.push(payload);
    if (payload === '*') heard();
  });
  after(() => sub.unlisten());
  await rebuildProjections(sql);
  await Promise.race([star, new Promise((_, reject) => setTimeout(() => reject(new Error(`no '*' notification; heard ${JSON.stringify(payloads)}`)), 5_000).unref())]);
  assert.ok(payloads.includes('*'));
});
