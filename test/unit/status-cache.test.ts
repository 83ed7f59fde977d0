// The status cache's rules on their own, with reads whose completion the test controls: a read
// racing a notification keeps nothing stale, a newer row is never replaced by an older one,
// nothing is kept while the listener is down, a drop or a re-listen forgets everything, and the
// bounds (entries, age) hold. test/e2e/status-cache.test.ts runs it against Postgres.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DocumentStatusRow } from '../../src/projections/document-status.ts';
import { StatusCache } from '../../src/services/api/status-cache.ts';

function row(id: string, version: number, owner = 'user-a'): DocumentStatusRow {
  const at = new Date();
  return {
    id, owner_id: owner, file_name: 'a.txt', media_type: 'text/plain', size_bytes: 1, sha256: 'x'.repeat(64), storage_key: `documents/${id}/original`,
    status: 'uploaded', stage: 'parse', progress: 0, run: 1, parse_attempts: 0, embed_attempts: 0, error_code: null, error_message: null,
    parser_job_id: null, parse_warning_code: null, parse_warning_message: null, chunk_count: 0, batches_total: 0, batches_done: 0, version,
    uploaded_at: at, parse_started_at: null, parsed_at: null, embed_started_at: null, ready_at: null, failed_at: null, deleted_at: null, updated_at: at,
  };
}

/** A load the test resolves when it chooses, counting the calls. */
function controlled() {
  let calls = 0;
  let release: (r: DocumentStatusRow | undefined) => void = () => {};
  return {
    get calls() {
      return calls;
    },
    load: () => {
      calls++;
      return new Promise<DocumentStatusRow | undefined>((resolve) => (release = resolve));
    },
    release: (r: DocumentStatusRow | undefined) => release(r),
  };
}

const loadOf = (r: DocumentStatusRow | undefined) => async () => r;

function live(options: ConstructorParameters<typeof StatusCache>[0] = {}): StatusCache {
  const cache = new StatusCache(options);
  cache.setListening(true);
  return cache;
}

test('a hit is served without loading; a notification of a newer version evicts it', async () => {
  const cache = live();
  assert.equal((await cache.read('d', loadOf(row('d', 3))))!.version, 3);
  let loads = 0;
  const counting = async () => (loads++, row('d', 4));
  assert.equal((await cache.read('d', counting))!.version, 3, 'served from the cache');
  assert.equal(loads, 0);
  cache.changed('d', 3); // an old or repeated announcement: the kept row already has it
  assert.equal((await cache.read('d', counting))!.version, 3);
  cache.changed('d', 4);
  assert.equal((await cache.read('d', counting))!.version, 4, 'read again after the notification');
  assert.equal(loads, 1);
  assert.equal(cache.stats.hits, 2);
});

test('a read in flight when its document changes keeps nothing older than the change', async () => {
  const cache = live();
  const slow = controlled();
  const reading = cache.read('d', slow.load);
  cache.changed('d', 5); // committed while the read was out; its snapshot may predate it
  slow.release(row('d', 4));
  assert.equal((await reading)!.version, 4, 'the read itself answers what it read');
  assert.equal(cache.size, 0, 'but the stale row is not kept');
  assert.equal((await cache.read('d', loadOf(row('d', 5))))!.version, 5);

  // A read whose row already includes the change keeps it.
  const fresh = live();
  const fast = controlled();
  const second = fresh.read('d', fast.load);
  fresh.changed('d', 5);
  fast.release(row('d', 5));
  await second;
  assert.equal(fresh.size, 1);
});

test('a kept row is never replaced by an older one', async () => {
  const cache = live();
  const older = controlled();
  const first = cache.read('d', older.load);
  // A second read (started later) returns first with the newer row.
  await cache.read('d', loadOf(row('d', 7)));
  older.release(row('d', 6));
  await first;
  let loads = 0;
  assert.equal((await cache.read('d', async () => (loads++, row('d', 0))))!.version, 7);
  assert.equal(loads, 0);
});

test('nothing is kept while the listener is down; a drop or a re-listen forgets everything, misses in flight included', async () => {
  const cache = new StatusCache();
  await cache.read('d', loadOf(row('d', 1)));
  assert.equal(cache.size, 0, 'not listening yet: nothing kept');
  cache.setListening(true);
  await cache.read('d', loadOf(row('d', 1)));
  await cache.read('e', loadOf(row('e', 1)));
  assert.equal(cache.size, 2);

  const inFlight = controlled();
  const reading = cache.read('f', inFlight.load);
  cache.setListening(false);
  assert.equal(cache.size, 0, 'the drop empties the cache');
  inFlight.release(row('f', 1));
  await reading;
  assert.equal(cache.size, 0, 'a miss that started before the drop keeps nothing');
  await cache.read('d', loadOf(row('d', 2)));
  assert.equal(cache.size, 0, 'down: nothing kept');

  cache.setListening(true);
  const across = controlled();
  const late = cache.read('g', across.load);
  cache.setListening(true); // listening again (a reconnect that was not seen dropping)
  across.release(row('g', 1));
  await late;
  assert.equal(cache.size, 0, 'a miss that started before a re-listen keeps nothing');
});

test('clear() (a notification naming no document) forgets everything', async () => {
  const cache = live();
  await cache.read('d', loadOf(row('d', 1)));
  const inFlight = controlled();
  const reading = cache.read('e', inFlight.load);
  cache.clear();
  inFlight.release(row('e', 1));
  await reading;
  assert.equal(cache.size, 0);
});

test('bounded: the least recently used row goes first; a row older than the maximum age is read again', async () => {
  const cache = live({ maxEntries: 3, maxAgeMs: 60_000 });
  for (const id of ['a', 'b', 'c']) await cache.read(id, loadOf(row(id, 1)));
  await cache.read('a', loadOf(row('a', 9))); // a hit: 'a' becomes the most recently used
  await cache.read('d', loadOf(row('d', 1))); // evicts 'b'
  assert.equal(cache.size, 3);
  let loads = 0;
  const count = (id: string) => async () => (loads++, row(id, 2));
  await cache.read('a', count('a'));
  await cache.read('c', count('c'));
  await cache.read('d', count('d'));
  assert.equal(loads, 0, 'a, c and d are kept');
  await cache.read('b', count('b'));
  assert.equal(loads, 1, 'b was evicted');

  const aging = live({ maxAgeMs: 30 });
  await aging.read('x', loadOf(row('x', 1)));
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal((await aging.read('x', loadOf(row('x', 2))))!.version, 2, 'read again past the maximum age');
});

test('an id in capitals is kept under the name its notification uses', async () => {
  const cache = live();
  const id = '4f0c1e2a-9b8d-4c7e-a6f5-3d2c1b0a9e8f';
  await cache.read(id.toUpperCase(), loadOf(row(id, 1)));
  let loads = 0;
  const next = async () => (loads++, row(id, 2));
  assert.equal((await cache.read(id.toUpperCase(), next))!.version, 1, 'a hit in capitals');
  assert.equal((await cache.read(id, next))!.version, 1, 'and in lowercase');
  cache.changed(id, 2);
  assert.equal((await cache.read(id.toUpperCase(), next))!.version, 2, 'evicted by the notification');
  assert.equal(loads, 1);
});

test('an absent document is not kept (it may be created a moment later)', async () => {
  const cache = live();
  assert.equal(await cache.read('d', loadOf(undefined)), undefined);
  assert.equal(cache.size, 0);
});
