// The api's status cache against Postgres and its real LISTEN connection: a change is never
// served stale once its notification has reached the api (also with GETs in flight during the
// change); when the listening connection is killed, the cache is emptied and stays off until
// postgres.js listens again, and nothing stale is served meanwhile; a hit costs no query; another
// owner still gets the 404 of a missing document; a delete is seen at once. And the caching
// headers of the status route, the OpenAPI document and everything else (docs/CACHING.md).
//
// Changes are made through the real command path (execute) on a pool of the test's own, as the
// worker or another api machine would: the api hears of them only by the notification.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import postgres from 'postgres';
import { loadConfig } from '../../src/config.ts';
import type { Sql } from '../../src/db/client.ts';
import { execute, type CommandContext } from '../../src/documents/commands.ts';
import type { DocumentCommand } from '../../src/documents/document.ts';
import type { EventMetadata } from '../../src/events/catalog.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { statusCacheRequests } from '../../src/observability/metrics.ts';
import { signUserToken, type JwtSettings } from '../../src/security/tokens.ts';
import { buildApiApp, OPENAPI_CACHE_CONTROL } from '../../src/services/api/app.ts';
import { openRuntime } from '../../src/services/runtime.ts';
import { freePort } from '../../src/util/free-port.ts';
import { createDatabase } from '../helpers/db.ts';
import { stackEnv, TEST_JWT_SECRET, upload } from '../helpers/stack.ts';

type Json = Record<string, any>;

/**
 * The api's pool with a count of the statements it is given, and of those reading
 * document_status; `holdNextStatusRead` keeps the next status read's rows from the api (after
 * Postgres has answered it) until the test releases them: a read overtaken by a change.
 */
function counted(sql: Sql) {
  const counts = { statements: 0, statusReads: 0 };
  let hold: { arrived: () => void; released: Promise<void> } | null = null;
  const proxy = new Proxy(sql, {
    apply(target, thisArg, args) {
      counts.statements++;
      const strings = args[0] as readonly string[] | undefined;
      const text = Array.isArray(strings) ? strings.join('?') : '';
      if (text.includes('from docpipe.document_status')) counts.statusReads++;
      const query = Reflect.apply(target, thisArg, args) as Promise<unknown>;
      if (!hold || !text.includes('from docpipe.document_status where id =')) return query;
      const { arrived, released } = hold;
      hold = null;
      return (async () => {
        const rows = await query;
        arrived();
        await released;
        return rows;
      })();
    },
  });
  return {
    sql: proxy as Sql,
    counts,
    /** Arms the hold; `arrived` resolves once the held read's rows are in, `release` lets them through. */
    holdNextStatusRead() {
      let arrived!: () => void;
      let release!: () => void;
      const rowsIn = new Promise<void>((resolve) => (arrived = resolve));
      hold = { arrived, released: new Promise<void>((resolve) => (release = resolve)) };
      return { arrived: rowsIn, release };
    },
  };
}

// The api in process, as test/helpers/stack.ts builds it, but with its ApiApp at hand (the
// waiter's events, the cache) and its pool counted. No worker: documents stay `uploaded`, and
// only this test changes them.
const db = await createDatabase({ manual: true });
const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-status-cache-'));
const env = stackEnv({ databaseUrl: db.url, dataDir, apiPort: await freePort(), webhookPort: await freePort() });
const config = loadConfig(env);
const logger = createLogger(config.logLevel);
const runtime = await openRuntime(config, logger, 'test');
const jwt: JwtSettings = { secret: TEST_JWT_SECRET, audience: config.jwt.audience, issuer: config.jwt.issuer };
const pool = counted(runtime.sql);
const api = await buildApiApp({
  config, jwt, logger, ctx: { ...runtime.ctx, sql: pool.sql }, storage: runtime.providers.storage, embedder: runtime.providers.embedder,
  vectors: runtime.vectors, uploadSigningKey: runtime.uploadSigningKey, readiness: runtime.readiness,
});
const apiUrl = await api.app.listen({ host: '127.0.0.1', port: config.apiPort });
after(async () => {
  await api.app.close();
  await runtime.close();
  await db.drop();
  await rm(dataDir, { recursive: true, force: true });
});

const { waiter, statusCache: cache } = api;
const target = { apiUrl, token: (sub = 'user-a', o: { expiresInSeconds?: number } = {}) => signUserToken(jwt, sub, o) };
/** Another writer (a worker, another api machine): the test database's own pool. */
const elsewhere: CommandContext = { sql: db.sql, jobs: runtime.ctx.jobs };
const meta: EventMetadata = { correlationId: 'status-cache-test', causationId: null, actor: 'worker', requestId: null };

function get(id: string, sub = 'user-a', headers: Record<string, string> = {}, claims?: Record<string, unknown>): Promise<Response> {
  const token = signUserToken(jwt, sub, claims ? { claims } : {});
  return fetch(`${apiUrl}/v1/documents/${id}`, { headers: { authorization: `Bearer ${token}`, ...headers } });
}

async function getDoc(id: string, sub = 'user-a'): Promise<Json> {
  const res = await get(id, sub);
  const body = (await res.json()) as Json;
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(res.headers.get('etag'), `"${body.version}"`);
  return body;
}

async function newDocument(sub = 'user-a'): Promise<string> {
  const res = await upload(target, Buffer.from(`a document of ${sub}, ${Math.random()}`), 'a.txt', { sub });
  assert.equal(res.status, 202);
  return ((await res.json()) as { id: string }).id;
}

/** Resolves once the api's listener has handled the notification `<id>:<version>` (bounded). */
function notified(id: string, version: number, timeoutMs = 10_000): Promise<void> {
  const payload = `${id}:${version}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiter.events.off('notification', heard);
      reject(new Error(`no notification ${payload} within ${timeoutMs} ms`));
    }, timeoutMs);
    function heard(p: string) {
      if (p !== payload) return;
      clearTimeout(timer);
      waiter.events.off('notification', heard);
      resolve();
    }
    waiter.events.on('notification', heard);
  });
}

/** Bounded wait for one of the waiter's events (listen, drop). */
async function eventOf(name: 'listen' | 'drop', timeoutMs: number): Promise<void> {
  await once(waiter.events, name, { signal: AbortSignal.timeout(timeoutMs) });
}

/** Changes the document elsewhere through the command path; resolves with its new version once the api has heard of it. */
async function changeElsewhere(id: string, message: string, options: { wait?: boolean } = {}): Promise<number> {
  const command: DocumentCommand = { type: 'RecordAttemptFailure', run: 1, stage: 'parse', code: 'PARSE_ERROR', message };
  // The version is known only after the commit; the listener may hear it before execute returns,
  // so every notification is recorded from before the change.
  const heard: string[] = [];
  const record = (p: string) => heard.push(p);
  waiter.events.on('notification', record);
  try {
    const result = await execute(elsewhere, id, command, meta);
    const version = result.events.at(-1)!.streamVersion;
    if (options.wait !== false && !heard.includes(`${id}:${version}`)) await notified(id, version);
    return version;
  } finally {
    waiter.events.off('notification', record);
  }
}

test('the listener is up and a repeated GET is a hit', async () => {
  assert.equal(waiter.listening, true);
  assert.equal(cache.listening, true);
  const id = await newDocument();
  await getDoc(id);
  const hits = cache.stats.hits;
  await getDoc(id);
  assert.equal(cache.stats.hits, hits + 1);
});

test('a change is never served stale after its notification, also with GETs in flight during the change', async (t) => {
  const id = await newDocument();
  let version = (await getDoc(id)).version as number;
  const ITERATIONS = 60;
  let racedStale = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    // Even iterations race a hit (the row is cached), odd ones a miss (evicted by the last change).
    if (i % 2 === 0) await getDoc(id);
    const inFlight = Array.from({ length: 1 + (i % 4) }, () => get(id).then(async (r) => ((await r.json()) as Json).version as number));
    const changed = await changeElsewhere(id, `change ${i}`);
    assert.ok(changed > version);
    // What was in flight answers the old version or the new one, nothing else.
    for (const v of await Promise.all(inFlight)) {
      assert.ok(v === version || v === changed, `in flight: version ${v}, expected ${version} or ${changed}`);
      if (v === version) racedStale++;
    }
    // After the notification: the new row, whatever the cache held or was being filled with.
    const body = await getDoc(id);
    assert.equal(body.version, changed, `iteration ${i}: after the notification of ${changed}`);
    assert.equal(body.error?.message, `change ${i}`);
    // An If-None-Match of the old version is a 200 with the new one, never a 304.
    const conditional = await get(id, 'user-a', { 'if-none-match': `"${version}"` });
    assert.equal(conditional.status, 200);
    assert.equal(((await conditional.json()) as Json).version, changed);
    version = changed;
  }
  assert.ok(cache.stats.hits > ITERATIONS, `hits ${cache.stats.hits}: the cache served the unchanged reads`);
  t.diagnostic(`${racedStale} GETs in flight answered the version before their change`);
});

test('a read overtaken by a change (its rows in before the commit, handed over after the notification) is not kept', async () => {
  const id = await newDocument();
  for (let i = 0; i < 10; i++) {
    const before = (await getDoc(id)).version as number;
    await changeElsewhere(id, `evict ${i}`); // the row is out of the cache: the next GET reads
    const read = await getDoc(id);
    assert.equal(read.version, before + 1);
    await changeElsewhere(id, `prepare ${i}`);
    const held = pool.holdNextStatusRead();
    const overtaken = get(id);
    await held.arrived; // Postgres answered with the row as it was
    const changed = await changeElsewhere(id, `overtake ${i}`); // committed and heard meanwhile
    held.release();
    const inFlight = (await (await overtaken).json()) as Json;
    assert.equal(inFlight.version, changed - 1, 'the overtaken read answers what it read');
    const after = await getDoc(id);
    assert.equal(after.version, changed, `iteration ${i}: the overtaken row was not kept`);
    assert.equal(after.error.message, `overtake ${i}`);
  }
});

test('an id sent in capitals is served and evicted like the lowercase one', async () => {
  const id = await newDocument();
  const upper = id.toUpperCase();
  assert.equal((await getDoc(upper)).id, id);
  await getDoc(upper);
  const changed = await changeElsewhere(id, 'capitals');
  const body = await getDoc(upper);
  assert.equal(body.version, changed);
  assert.equal(body.error.message, 'capitals');
});

test('a long-poll wakes on a change made elsewhere and answers the new row, not the cached one', async () => {
  const id = await newDocument();
  const before = await getDoc(id);
  await getDoc(id); // cached
  const poll = fetch(`${apiUrl}/v1/documents/${id}?wait=10`, { headers: { authorization: `Bearer ${target.token()}`, 'if-none-match': `"${before.version}"` } });
  // The poll is registered (waiting) before the change is made.
  for (let i = 0; i < 200 && waiter.waiting === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(waiter.waiting, 1);
  const changed = await changeElsewhere(id, 'woken');
  const res = await poll;
  assert.equal(res.status, 200);
  const body = (await res.json()) as Json;
  assert.equal(body.version, changed);
  assert.equal(body.error.message, 'woken');
});

test('a hit costs no database query; a miss costs one read', async () => {
  const id = await newDocument();
  const hitsBefore = (await statusCacheRequests.get()).values.find((v) => v.labels.result === 'hit')?.value ?? 0;
  let before = { ...pool.counts };
  await getDoc(id);
  assert.equal(pool.counts.statusReads - before.statusReads, 1, 'the first GET reads the row');
  before = { ...pool.counts };
  for (let i = 0; i < 20; i++) await getDoc(id);
  assert.deepEqual(pool.counts, before, 'twenty more GETs: not one statement');
  const hitsAfter = (await statusCacheRequests.get()).values.find((v) => v.labels.result === 'hit')?.value ?? 0;
  assert.ok(hitsAfter - hitsBefore >= 20, `docpipe_status_cache_requests_total{result="hit"} rose by ${hitsAfter - hitsBefore}`);
  // A change made elsewhere: the next GET reads again, once.
  await changeElsewhere(id, 'read me again');
  before = { ...pool.counts };
  assert.equal((await getDoc(id)).error.message, 'read me again');
  assert.equal(pool.counts.statusReads - before.statusReads, 1);
});

test('another owner gets the 404 of a missing document from a cached row; the service role gets the row', async () => {
  const id = await newDocument('owner-1');
  const own = await getDoc(id, 'owner-1');
  await getDoc(id, 'owner-1');
  const before = { ...pool.counts };
  const foreign = await get(id, 'owner-2');
  const missing = await get('00000000-0000-4000-8000-000000000000', 'owner-2');
  assert.equal(foreign.status, 404);
  const foreignBody = (await foreign.json()) as Json;
  const missingBody = (await missing.json()) as Json;
  assert.deepEqual({ ...foreignBody.error, requestId: null }, { ...missingBody.error, requestId: null }, 'the same answer as a missing id');
  assert.equal(foreign.headers.get('etag'), null, 'no version leaks in a header');
  // Even with the right version: a 404, never a 304.
  const conditional = await get(id, 'owner-2', { 'if-none-match': `"${own.version}"` });
  assert.equal(conditional.status, 404);
  assert.equal(pool.counts.statusReads - before.statusReads, 1, 'only the missing id was read from the database');
  // Still reported as a foreign access (audit, threat detection), as without the cache.
  await api.audit.flush();
  const [audited] = await db.sql`select occurrences from docpipe.audit_log where action = 'document.foreign_access' and actor = 'user:owner-2'`;
  assert.ok(audited && audited.occurrences >= 2, 'the foreign accesses are audited');

  const service = await get(id, 'a-backend', {}, { role: 'service_role' });
  assert.equal(service.status, 200);
  assert.equal(((await service.json()) as Json).id, id);
});

test('a delete: its maker sees the 404 at once; a delete elsewhere is a 404 once it is notified', async () => {
  const mine = await newDocument();
  await getDoc(mine);
  await getDoc(mine); // cached
  const del = await fetch(`${apiUrl}/v1/documents/${mine}`, { method: 'DELETE', headers: { authorization: `Bearer ${target.token()}` } });
  assert.equal(del.status, 204);
  assert.equal((await get(mine)).status, 404, 'the deleting client sees it gone on its next GET');

  const other = await newDocument();
  await getDoc(other);
  await getDoc(other);
  const result = await execute(elsewhere, other, { type: 'Delete', reason: null }, meta);
  await notified(other, result.events.at(-1)!.streamVersion).catch(() => {}); // may have arrived already
  assert.equal((await get(other)).status, 404);
});

test('the listening connection killed: the cache is emptied, off while it reconnects (nothing stale served), on again after', async () => {
  const id = await newDocument();
  const start = await getDoc(id);
  await getDoc(id);
  assert.ok(cache.size > 0);
  const [listener] = await db.sql<{ pid: number }[]>`
    select pid from pg_stat_activity
    where datname = current_database() and query ilike 'listen%docpipe_status%' and pid <> pg_backend_pid()`;
  assert.ok(listener, 'the api\'s LISTEN connection is in pg_stat_activity');

  // No new connection may be made while the test looks: postgres.js retries its LISTEN and fails
  // until the database takes connections again. The pools keep the connections they have.
  const admin = postgres(process.env.DOCPIPE_TEST_ADMIN_URL!, { max: 1, onnotice: () => {} });
  await admin.unsafe(`alter database ${db.name} allow_connections false`);
  try {
    const dropped = eventOf('drop', 10_000);
    const [kill] = await db.sql<{ terminated: boolean }[]>`select pg_terminate_backend(${listener.pid}) as terminated`;
    assert.equal(kill?.terminated, true);
    await dropped;
    assert.equal(waiter.listening, false);
    assert.equal(cache.listening, false);
    assert.equal(cache.size, 0, 'emptied on the drop');

    // Changed while nobody listens: its notification is lost, and the api must not need it.
    let version = start.version as number;
    for (let i = 0; i < 5; i++) {
      version = await changeElsewhere(id, `unheard ${i}`, { wait: false });
      const before = pool.counts.statusReads;
      const body = await getDoc(id);
      assert.equal(body.version, version, 'read from the database while the listener is down');
      assert.equal(body.error.message, `unheard ${i}`);
      await getDoc(id);
      assert.equal(pool.counts.statusReads - before, 2, 'nothing is cached while the listener is down');
      assert.equal(cache.size, 0);
    }
    assert.equal(waiter.listening, false, 'still down while the database refuses connections');
  } finally {
    await admin.unsafe(`alter database ${db.name} allow_connections true`);
    await admin.end();
  }
  // postgres.js listens again by itself (its back-off is well under the wait).
  if (!waiter.listening) await eventOf('listen', 60_000);
  assert.equal(waiter.listening, true);
  assert.equal(cache.listening, true);
  const [again] = await db.sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = current_database() and query ilike 'listen%docpipe_status%' and pid <> pg_backend_pid()`;
  assert.ok(again && again.pid !== listener.pid, 'a new LISTEN connection');

  // Caching again, and kept true by notifications again.
  const now = await getDoc(id);
  const hits = cache.stats.hits;
  await getDoc(id);
  assert.equal(cache.stats.hits, hits + 1, 'cached again');
  const changed = await changeElsewhere(id, 'heard again');
  assert.ok(changed > now.version);
  const body = await getDoc(id);
  assert.equal(body.version, changed);
  assert.equal(body.error.message, 'heard again');
});

test('cache headers: the status route is private, no-cache with its ETag, 304 included; its 404 is no-store', async () => {
  const id = await newDocument();
  const res = await get(id);
  const body = (await res.json()) as Json;
  assert.equal(res.headers.get('cache-control'), 'private, no-cache');
  assert.equal(res.headers.get('etag'), `"${body.version}"`);
  const same = await get(id, 'user-a', { 'if-none-match': `"${body.version}"` });
  assert.equal(same.status, 304);
  assert.equal(same.headers.get('cache-control'), 'private, no-cache');
  assert.equal(same.headers.get('etag'), `"${body.version}"`);
  assert.equal(await same.text(), '');
  const weak = await get(id, 'user-a', { 'if-none-match': `W/"${body.version}"` });
  assert.equal(weak.status, 304);
  const missing = await get('00000000-0000-4000-8000-000000000001');
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get('cache-control'), 'no-store');
});

test('cache headers: /openapi.json is public with an ETag of its content, and answers 304 to it', async () => {
  const res = await fetch(`${apiUrl}/openapi.json`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('cache-control'), OPENAPI_CACHE_CONTROL);
  assert.match(OPENAPI_CACHE_CONTROL, /^public, max-age=\d+$/);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const etag = res.headers.get('etag');
  assert.match(etag ?? '', /^"[\w-]{27}"$/);
  const doc = (await res.json()) as Json;
  assert.equal(doc.openapi, '3.1.0');
  assert.ok(doc.paths['/v1/documents/{id}']);
  for (const inm of [etag!, `W/${etag}`, `"other", ${etag}`, '*']) {
    const again = await fetch(`${apiUrl}/openapi.json`, { headers: { 'if-none-match': inm } });
    assert.equal(again.status, 304, inm);
    assert.equal(again.headers.get('etag'), etag);
    assert.equal(again.headers.get('cache-control'), OPENAPI_CACHE_CONTROL);
    assert.equal(await again.text(), '');
  }
  const changed = await fetch(`${apiUrl}/openapi.json`, { headers: { 'if-none-match': '"an-older-deploy"' } });
  assert.equal(changed.status, 200);
  assert.equal((await changed.json() as Json).openapi, '3.1.0');
});

test('cache headers: everything else is no-store (user data, credentials, refusals, health)', async () => {
  const id = await newDocument();
  const auth = { authorization: `Bearer ${target.token()}` };
  const form = new FormData();
  form.append('file', new Blob(['another']), 'b.txt');
  const answers: [string, Response][] = [
    ['POST /v1/documents', await fetch(`${apiUrl}/v1/documents`, { method: 'POST', headers: auth, body: form })],
    ['GET /v1/documents', await fetch(`${apiUrl}/v1/documents`, { headers: auth })],
    ['GET /v1/documents/:id/events', await fetch(`${apiUrl}/v1/documents/${id}/events`, { headers: auth })],
    ['GET /v1/usage', await fetch(`${apiUrl}/v1/usage`, { headers: auth })],
    ['POST /v1/uploads', await fetch(`${apiUrl}/v1/uploads`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ fileName: 'c.txt', size: 10, contentType: 'text/plain' }) })],
    ['401', await fetch(`${apiUrl}/v1/documents`)],
    ['unmatched', await fetch(`${apiUrl}/v1/nothing-here`, { headers: auth })],
    ['/healthz', await fetch(`${apiUrl}/healthz`)],
  ];
  for (const [what, res] of answers) {
    await res.arrayBuffer();
    assert.equal(res.headers.get('cache-control'), 'no-store', `${what} (${res.status})`);
  }
  assert.equal(answers[0]![1].status, 202);
  assert.equal(answers[1]![1].status, 200);
  assert.equal(answers[4]![1].status, 201);
});
