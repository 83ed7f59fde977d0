// End to end through the real API, queue and in-process worker: every supported format goes
// from upload to ready with contiguous, embedded chunks and a complete, correlated event log;
// ETag and long-poll behave; listing is per user, newest first and paginated; delete purges;
// reprocess replaces chunks; Idempotency-Key de-duplicates uploads, even concurrent ones.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { api, startStack, waitForStatus, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

const FIXTURES = [
  { file: 'sample.txt', mediaType: 'text/plain', phrase: 'Terrible Tilly' },
  { file: 'sample.md', mediaType: 'text/markdown', phrase: 'Muckle Flugga' },
  { file: 'sample.html', mediaType: 'text/html', phrase: 'Pharos of Alexandria' },
  { file: 'sample.pdf', mediaType: 'application/pdf', phrase: 'Eddystone' },
  {
    file: 'sample.docx',
    mediaType: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
    phrase: 'Fresnel',
  },
] as const;

const fixture = (name: string) => readFile(path.join('test/fixtures', name));

/** Multipart upload with optional request id and Idempotency-Key headers. */
async function uploadWith(
  stack: TestStack,
  bytes: Buffer | Uint8Array,
  fileName: string,
  options: { sub?: string; idempotencyKey?: string; requestId?: string } = {},
): Promise<Response> {
  const form = new FormData();
  form.append('file', new Blob([bytes]), fileName);
  const headers: Record<string, string> = { authorization: `Bearer ${stack.token(options.sub ?? 'user-a')}` };
  if (options.idempotencyKey) headers['idempotency-key'] = options.idempotencyKey;
  if (options.requestId) headers['x-request-id'] = options.requestId;
  return fetch(new URL('/v1/documents', stack.apiUrl), { method: 'POST', body: form, headers });
}

async function accepted(res: Response): Promise<string> {
  const body = (await res.json()) as Json;
  assert.equal(res.status, 202, `upload answered ${res.status}: ${JSON.stringify(body)}`);
  assert.match(body.id, /^[0-9a-f-]{36}$/);
  assert.equal(body.statusUrl, `/v1/documents/${body.id}`);
  assert.equal(res.headers.get('location'), `/v1/documents/${body.id}`);
  assert.equal(body.status, 'uploaded');
  assert.equal(body.run, 1);
  return body.id as string;
}

interface ChunkRow {
  chunk_index: number;
  run: number;
  content: string;
  dims: number | null;
}

async function chunksOf(stack: TestStack, id: string): Promise<ChunkRow[]> {
  return stack.db.sql<ChunkRow[]>`
    select chunk_index, run, content, array_length(embedding, 1) as dims
    from docpipe.document_chunks where document_id = ${id} order by chunk_index`;
}

function assertChunks(stack: TestStack, chunks: ChunkRow[], expected: { count: number; run: number; phrase?: string }): void {
  assert.equal(chunks.length, expected.count, 'chunk rows = chunkCount');
  assert.deepEqual(chunks.map((c) => c.chunk_index), Array.from({ length: expected.count }, (_, i) => i), 'chunk_index 0..n-1');
  for (const c of chunks) {
    assert.equal(c.run, expected.run, `chunk ${c.chunk_index} belongs to run ${expected.run}`);
    assert.equal(c.dims, stack.config.embedder.dimensions, `chunk ${c.chunk_index} has an embedding of the configured dimensions`);
    assert.ok(c.content.trim().length > 0);
  }
  if (expected.phrase) assert.ok(chunks.some((c) => c.content.includes(expected.phrase!)), `some chunk contains "${expected.phrase}"`);
}

async function eventsOf(stack: TestStack, id: string, sub = 'user-a'): Promise<Json[]> {
  const res = await api(stack, sub)(`/v1/documents/${id}/events`);
  assert.equal(res.status, 200);
  return ((await res.json()) as Json).events as Json[];
}

async function getDoc(stack: TestStack, id: string, sub = 'user-a', headers: Record<string, string> = {}) {
  return api(stack, sub)(`/v1/documents/${id}`, { headers });
}

async function pollUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

// One stack (API + webhook + in-process worker) for the file; closed after the last test.
const stack = await startStack();
const readyDocs = new Map<string, { id: string; requestId: string }>();

test('every supported format goes from upload to ready, with chunks, embeddings and a correlated history', async (t) => {
  const uploads = [];
  for (const f of FIXTURES) {
    const requestId = `req-${f.file.replace('.', '-')}-${Date.now()}`;
    const res = await uploadWith(stack, await fixture(f.file), f.file, { requestId });
    assert.equal(res.headers.get('x-request-id'), requestId, 'the given request id is echoed');
    uploads.push({ ...f, id: await accepted(res), requestId });
  }

  for (const u of uploads) {
    await t.test(u.file, async () => {
      const doc = await waitForStatus(stack, u.id, ['ready', 'failed'], { timeoutMs: 30_000 });
      assert.equal(doc.status, 'ready', `ended ${doc.status}: ${JSON.stringify(doc.error)}`);
      assert.equal(doc.id, u.id);
      assert.equal(doc.fileName, u.file);
      assert.equal(doc.mediaType, u.mediaType);
      assert.equal(doc.progress, 100);
      assert.equal(doc.stage, null);
      assert.equal(doc.run, 1);
      assert.equal(doc.error, null);
      assert.ok(doc.attempts.parse >= 1);
      assert.ok(doc.attempts.embed >= 1);
      assert.ok(doc.chunkCount > 0);
      assert.equal(doc.embeddingBatches.done, doc.embeddingBatches.total);
      assert.equal(doc.embeddingBatches.total, Math.ceil(doc.chunkCount / stack.config.embedBatchSize));
      assert.match(doc.sha256, /^[0-9a-f]{64}$/);
      assert.equal(doc.size, (await fixture(u.file)).length);
      const ts = doc.timestamps;
      for (const k of ['uploadedAt', 'parseStartedAt', 'parsedAt', 'embedStartedAt', 'readyAt', 'updatedAt']) {
        assert.ok(ts[k] && !Number.isNaN(Date.parse(ts[k])), `timestamps.${k} is set`);
      }
      assert.equal(ts.failedAt, null);
      const order = ['uploadedAt', 'parseStartedAt', 'parsedAt', 'embedStartedAt', 'readyAt'].map((k) => Date.parse(ts[k]));
      assert.deepEqual([...order].sort((a, b) => a - b), order, 'stage timestamps are in order');
      assert.deepEqual(doc.links, { self: `/v1/documents/${u.id}`, events: `/v1/documents/${u.id}/events` });

      const chunks = await chunksOf(stack, u.id);
      assertChunks(stack, chunks, { count: doc.chunkCount, run: 1, phrase: u.phrase });
      if (u.file === 'sample.html') assert.ok(!chunks.some((c) => c.content.includes('this script must not appear')), 'no <script> text');

      const events = await eventsOf(stack, u.id);
      assert.deepEqual(events.map((e) => e.version), Array.from({ length: events.length }, (_, i) => i + 1), 'versions 1..n in order');
      const batches = doc.embeddingBatches.total;
      assert.deepEqual(events.map((e) => e.type), [
        'DocumentUploaded', 'ParseStarted', 'ParseSucceeded', 'EmbeddingStarted', 'DocumentChunked',
        ...Array<string>(batches).fill('EmbeddingBatchStored'), 'DocumentReady',
      ]);
      assert.equal(doc.version, events.length, 'the status version is the stream version');
      for (const e of events) {
        assert.equal(e.requestId, u.requestId, `${e.type} carries the upload's request id`);
        assert.equal(e.correlationId, u.requestId, `${e.type} carries the upload's correlation id`);
        assert.equal(e.actor, e.type === 'DocumentUploaded' ? 'user:user-a' : 'worker');
      }
      const stored = events.filter((e) => e.type === 'EmbeddingBatchStored');
      assert.deepEqual(stored.map((e) => e.data.batch), Array.from({ length: batches }, (_, i) => i));
      const positions = events.map((e) => e.position);
      assert.deepEqual([...positions].sort((a, b) => a - b), positions, 'global positions increase with the version');
      readyDocs.set(u.file, { id: u.id, requestId: u.requestId });
    });
  }
});

test('ETag is the quoted version; If-None-Match answers 304; ?wait on a terminal doc answers at once', async () => {
  const { id } = readyDocs.get('sample.txt')!;
  const res = await getDoc(stack, id);
  assert.equal(res.status, 200);
  const doc = (await res.json()) as Json;
  assert.equal(res.headers.get('etag'), `"${doc.version}"`);
  assert.match(res.headers.get('cache-control') ?? '', /no-cache/);

  const same = await getDoc(stack, id, 'user-a', { 'if-none-match': `"${doc.version}"` });
  assert.equal(same.status, 304);
  assert.equal(same.headers.get('etag'), `"${doc.version}"`);
  assert.equal(await same.text(), '');

  const stale = await getDoc(stack, id, 'user-a', { 'if-none-match': `"${doc.version - 1}"` });
  assert.equal(stale.status, 200);
  assert.equal(((await stale.json()) as Json).version, doc.version);

  // A ready (terminal) document will not change, so the long-poll does not wait: 304 at once.
  const started = performance.now();
  const waited = await api(stack)(`/v1/documents/${id}?wait=5`, { headers: { 'if-none-match': `"${doc.version}"` } });
  const elapsed = performance.now() - started;
  assert.equal(waited.status, 304);
  assert.ok(elapsed < 2_000, `a terminal document's long-poll answered in ${elapsed.toFixed(0)} ms, not after the wait`);
});

test('a long-poll wakes promptly when the worker moves the document on', async (t) => {
  const idle = await startStack({ worker: false });
  const id = await accepted(await uploadWith(idle, await fixture('sample.txt'), 'sample.txt'));
  const first = await getDoc(idle, id);
  const doc = (await first.json()) as Json;
  assert.equal(doc.status, 'uploaded');
  assert.equal(first.headers.get('etag'), `"${doc.version}"`);

  // Without a worker nothing happens: a reprocess of a document still processing is refused.
  const early = await api(idle)(`/v1/documents/${id}/reprocess`, { method: 'POST' });
  assert.equal(early.status, 409);
  const earlyBody = (await early.json()) as Json;
  assert.equal(earlyBody.error.code, 'ILLEGAL_TRANSITION');
  assert.ok(earlyBody.error.requestId);

  const pollStarted = performance.now();
  const poll = api(idle)(`/v1/documents/${id}?wait=20`, { headers: { 'if-none-match': `"${doc.version}"` } }).then(async (res) => ({
    res,
    body: res.status === 200 ? ((await res.json()) as Json) : null,
    at: performance.now(),
  }));
  // The poll must really be waiting (not answered early) before the worker starts.
  const early304 = await Promise.race([poll.then(() => 'answered'), sleep(1_000).then(() => 'waiting')]);
  assert.equal(early304, 'waiting', 'the long-poll waits while nothing changes');

  const workerStarted = performance.now();
  await idle.startWorker();
  const { res, body, at } = await poll;
  assert.equal(res.status, 200);
  assert.ok(body!.version > doc.version, `woke with version ${body!.version} > ${doc.version}`);
  assert.equal(res.headers.get('etag'), `"${body!.version}"`);
  const afterStart = at - workerStarted;
  t.diagnostic(`long-poll woke ${afterStart.toFixed(0)} ms after the worker started, version ${doc.version} -> ${body!.version}`);
  assert.ok(afterStart < 5_000, `woke ${afterStart.toFixed(0)} ms after the worker started (of a 20 s wait)`);
  assert.ok(at - pollStarted < 10_000);

  const done = await waitForStatus(idle, id, ['ready', 'failed'], { timeoutMs: 30_000 });
  assert.equal(done.status, 'ready');
});

test('GET /v1/documents lists only the caller\'s documents, newest first, with cursor pagination and a status filter', async () => {
  const base = await fixture('sample.txt');
  const mine: string[] = [];
  for (let i = 0; i < 5; i++) {
    mine.push(await accepted(await uploadWith(stack, Buffer.concat([base, Buffer.from(`\nCopy number ${i}.\n`)]), `list-${i}.txt`, { sub: 'user-list' })));
  }
  const theirs = await accepted(await uploadWith(stack, base, 'other.txt', { sub: 'user-list-other' }));
  const newestFirst = [...mine].reverse();

  const list = api(stack, 'user-list');
  const seen: string[] = [];
  const pages: Json[][] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 10; page++) {
    const res = await list(`/v1/documents?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Json;
    pages.push(body.documents);
    seen.push(...body.documents.map((d: Json) => d.id));
    cursor = body.nextCursor;
    if (cursor === null) break;
    assert.equal(typeof cursor, 'string');
  }
  assert.deepEqual(pages.map((p) => p.length), [2, 2, 1], 'limit=2 over 5 documents: 3 pages');
  assert.equal(new Set(seen).size, seen.length, 'no document on two pages');
  assert.deepEqual(seen, newestFirst, 'newest first');
  assert.ok(!seen.includes(theirs), 'another user\'s document is not listed');
  for (const d of pages.flat()) assert.ok(d.fileName.startsWith('list-'));

  const all = (await (await list('/v1/documents')).json()) as Json;
  assert.deepEqual(all.documents.map((d: Json) => d.id), newestFirst);
  assert.equal(all.nextCursor, null);

  for (const id of mine) assert.equal((await waitForStatus(stack, id, ['ready', 'failed'], { sub: 'user-list', timeoutMs: 30_000 })).status, 'ready');
  const broken = await accepted(await uploadWith(stack, Buffer.from('%PDF-1.4\nthis is not really a pdf\n'), 'broken.pdf', { sub: 'user-list' }));
  assert.equal((await waitForStatus(stack, broken, ['ready', 'failed'], { sub: 'user-list', timeoutMs: 30_000 })).status, 'failed');

  const ready = (await (await list('/v1/documents?status=ready')).json()) as Json;
  assert.deepEqual(ready.documents.map((d: Json) => d.id), newestFirst);
  for (const d of ready.documents) assert.equal(d.status, 'ready');
  const failed = (await (await list('/v1/documents?status=failed')).json()) as Json;
  assert.deepEqual(failed.documents.map((d: Json) => d.id), [broken]);

  const other = (await (await api(stack, 'user-list-other')('/v1/documents')).json()) as Json;
  assert.deepEqual(other.documents.map((d: Json) => d.id), [theirs]);
});

test('pagination does not skip documents uploaded within the same millisecond', async () => {
  const sub = 'user-same-ms';
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await accepted(await uploadWith(stack, Buffer.from(`Same millisecond note ${i} about the lamp room.\n`), `ms-${i}.txt`, { sub })));
  for (const id of ids) assert.equal((await waitForStatus(stack, id, ['ready', 'failed'], { sub, timeoutMs: 30_000 })).status, 'ready');
  // Postgres keeps microseconds; concurrent uploads can share a millisecond. Pin the upload
  // times (a read-model column only) to one millisecond, 10 µs apart (sent as text: postgres.js
  // would round a timestamptz parameter through a JS Date, to milliseconds).
  for (const [i, id] of ids.entries()) {
    await stack.db.sql`update docpipe.document_status set uploaded_at = ${`2024-05-01T12:00:00.1239${i}0Z`}::text::timestamptz where id = ${id}`;
  }
  const expected = [...ids].reverse();
  const list = api(stack, sub);
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 10; page++) {
    const body = (await (await list(`/v1/documents?limit=1${cursor ? `&cursor=${cursor}` : ''}`)).json()) as Json;
    seen.push(...body.documents.map((d: Json) => d.id));
    cursor = body.nextCursor;
    if (cursor === null) break;
  }
  assert.deepEqual(seen, expected, 'every document once, newest first');
});

test('DELETE answers 204; the document, its chunks and its files are gone', async () => {
  const { id } = readyDocs.get('sample.pdf')!;
  const dir = path.join((stack.config.storage as { dir: string }).dir, 'documents', id);
  assert.ok(existsSync(dir), 'the document has files before the delete');
  assert.ok((await chunksOf(stack, id)).length > 0);

  const res = await api(stack)(`/v1/documents/${id}`, { method: 'DELETE' });
  assert.equal(res.status, 204);
  assert.equal(await res.text(), '');

  const gone = await getDoc(stack, id);
  assert.equal(gone.status, 404);
  assert.equal(((await gone.json()) as Json).error.code, 'NOT_FOUND');
  assert.equal((await api(stack)(`/v1/documents/${id}/events`)).status, 404);
  assert.equal((await api(stack)(`/v1/documents/${id}`, { method: 'DELETE' })).status, 404, 'a second delete is 404');
  assert.equal((await api(stack)(`/v1/documents/${id}/reprocess`, { method: 'POST' })).status, 404);
  assert.equal((await chunksOf(stack, id)).length, 0, 'chunks removed with the delete');
  const listed = (await (await api(stack)('/v1/documents?limit=100')).json()) as Json;
  assert.ok(!listed.documents.some((d: Json) => d.id === id), 'not listed');

  await pollUntil('the purge job to remove the files', 10_000, async () => (existsSync(dir) ? undefined : true));
  const [history] = await stack.db.sql<{ types: string[] }[]>`
    select array_agg(type order by stream_version) as types from docpipe.events where stream_id = ${id}`;
  assert.equal(history!.types.at(-1), 'DocumentDeleted', 'the log keeps the history and ends with DocumentDeleted');
});

test('reprocess of a ready document starts run 2 and replaces the chunks', async () => {
  const { id } = readyDocs.get('sample.md')!;
  const before = (await (await getDoc(stack, id)).json()) as Json;
  assert.equal(before.status, 'ready');

  const reqId = `req-reprocess-${Date.now()}`;
  const res = await api(stack)(`/v1/documents/${id}/reprocess`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': reqId },
    body: JSON.stringify({ reason: 'new chunking settings' }),
  });
  const body = (await res.json()) as Json;
  assert.equal(res.status, 202, JSON.stringify(body));
  assert.equal(body.id, id);
  assert.equal(body.run, 2);
  assert.equal(body.statusUrl, `/v1/documents/${id}`);

  const doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 30_000 });
  assert.equal(doc.status, 'ready');
  assert.equal(doc.run, 2);
  assert.equal(doc.progress, 100);
  assert.equal(doc.chunkCount, before.chunkCount, 'same document, same chunking');
  assertChunks(stack, await chunksOf(stack, id), { count: doc.chunkCount, run: 2, phrase: 'Muckle Flugga' });

  const events = await eventsOf(stack, id);
  const at = events.findIndex((e) => e.type === 'ReprocessRequested');
  assert.ok(at > 0);
  assert.equal(events[at]!.data.run, 2);
  assert.equal(events[at]!.data.reason, 'new chunking settings');
  const run2 = events.slice(at);
  for (const e of run2) assert.equal(e.requestId, reqId, `${e.type} of run 2 carries the reprocess request id`);
  assert.deepEqual(run2.map((e) => e.type), [
    'ReprocessRequested', 'ParseStarted', 'ParseSucceeded', 'EmbeddingStarted', 'DocumentChunked',
    ...Array<string>(doc.embeddingBatches.total).fill('EmbeddingBatchStored'), 'DocumentReady',
  ]);
  assert.equal(events.filter((e) => e.type === 'DocumentReady').length, 2);

  // Without a body (reason is optional) a reprocess is accepted too.
  const again = await api(stack)(`/v1/documents/${id}/reprocess`, { method: 'POST' });
  assert.equal(again.status, 202, await again.clone().text());
  assert.equal(((await again.json()) as Json).run, 3);
  const third = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 30_000 });
  assert.equal(third.status, 'ready');
  assert.equal(third.run, 3);
  assertChunks(stack, await chunksOf(stack, id), { count: third.chunkCount, run: 3 });
});

test('Idempotency-Key: a replay answers 200 with the same id; another file is refused; concurrent uploads make one document', async () => {
  const sub = 'user-idem';
  const file = await fixture('sample.txt');
  const key = `key-${Date.now()}`;

  const first = await uploadWith(stack, file, 'a.txt', { sub, idempotencyKey: key });
  const id = await accepted(first);
  const replay = await uploadWith(stack, file, 'a.txt', { sub, idempotencyKey: key });
  const replayBody = (await replay.json()) as Json;
  assert.equal(replay.status, 200);
  assert.equal(replayBody.id, id);
  assert.equal(replayBody.statusUrl, `/v1/documents/${id}`);
  assert.equal(replayBody.run, 1);

  const other = await uploadWith(stack, Buffer.concat([file, Buffer.from('\nA different ending.\n')]), 'a.txt', { sub, idempotencyKey: key });
  const otherBody = (await other.json()) as Json;
  assert.equal(other.status, 409);
  assert.equal(otherBody.error.code, 'IDEMPOTENCY_KEY_REUSED');
  assert.ok(otherBody.error.requestId);

  // The same key of another user is another key.
  const foreign = await uploadWith(stack, file, 'a.txt', { sub: 'user-idem-2', idempotencyKey: key });
  const foreignId = await accepted(foreign);
  assert.notEqual(foreignId, id);

  const concurrentKey = `${key}-concurrent`;
  const racers = await Promise.all([1, 2, 3].map(() => uploadWith(stack, file, 'b.txt', { sub, idempotencyKey: concurrentKey })));
  const bodies = (await Promise.all(racers.map((r) => r.json()))) as Json[];
  assert.deepEqual(racers.map((r) => r.status).sort(), [200, 200, 202], JSON.stringify(bodies));
  assert.equal(new Set(bodies.map((b) => b.id)).size, 1, 'every racer got the same document');

  const rows = await stack.db.sql<{ id: string }[]>`select id from docpipe.document_status where owner_id = ${sub} order by uploaded_at`;
  assert.deepEqual(rows.map((r) => r.id), [id, bodies[0]!.id], 'one document per key');
  const uploadedEvents = await stack.db.sql<{ n: number }[]>`
    select count(*)::int as n from docpipe.events where type = 'DocumentUploaded' and data->>'ownerId' = ${sub}`;
  assert.equal(uploadedEvents[0]!.n, 2);
  // Replays and refusals leave no files behind: every directory under documents/ is a live document.
  const dirs = await readdir(path.join((stack.config.storage as { dir: string }).dir, 'documents'));
  const live = await stack.db.sql<{ id: string }[]>`select id from docpipe.document_status where status <> 'deleted'`;
  const liveIds = new Set(live.map((r) => r.id));
  for (const d of dirs) assert.ok(liveIds.has(d), `documents/${d} belongs to a live document`);
  for (const r of rows) assert.equal((await waitForStatus(stack, r.id, ['ready', 'failed'], { sub, timeoutMs: 30_000 })).status, 'ready');
});
