// The event store on a real Postgres: appends with an expected version, reads, optimistic
// concurrency between connections, the append-only log, and readAll's transaction-id rule.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { createSql, type Sql } from '../../src/db/client.ts';
import type { EventMetadata, NewEvent, RecordedEvent } from '../../src/events/catalog.ts';
import { appendToStream, appendToStreams, ConcurrencyError, readAll, readStream, readStreams } from '../../src/events/store.ts';
import { createDatabase, type TestDatabase } from '../helpers/db.ts';

// At the top level: createDatabase registers its drop with the file's after().
const db: TestDatabase = await createDatabase();
const sql: Sql = db.sql;
/** A second, independent pool: concurrent appends on two different clients. */
const other: Sql = createSql(db.url, { max: 4 });
after(() => other.end({ timeout: 5 }));

const meta = (overrides: Partial<EventMetadata> = {}): EventMetadata => ({
  correlationId: randomUUID(),
  causationId: null,
  actor: 'user:u1',
  requestId: 'req-1',
  ...overrides,
});

const parseStarted = (attempt: number): NewEvent => ({ type: 'ParseStarted', data: { run: 1, attempt, parser: 'local' } });
const uploaded: NewEvent = {
  type: 'DocumentUploaded',
  data: { ownerId: 'u1', fileName: 'a.txt', mediaType: 'text/plain', size: 5, sha256: 'f'.repeat(64), storageKey: 'documents/x/original', idempotencyKey: null },
};

async function append(streamId: string, expected: number, events: NewEvent[], metadata = meta(), client: Sql = sql): Promise<RecordedEvent[]> {
  return client.begin((tx) => appendToStream(tx, streamId, expected, events, metadata));
}

async function versions(streamId: string): Promise<number[]> {
  const rows = await sql<{ v: number }[]>`select stream_version as v from docpipe.events where stream_id = ${streamId} order by stream_version`;
  return rows.map((r) => r.v);
}

function assertConcurrencyError(err: unknown, streamId: string, expectedVersion: number): true {
  assert.ok(err instanceof ConcurrencyError, `expected a ConcurrencyError, got ${String(err)}`);
  assert.equal(err.code, 'CONCURRENCY_CONFLICT');
  assert.equal(err.streamId, streamId);
  assert.equal(err.expectedVersion, expectedVersion);
  return true;
}

describe('append and read', () => {
  test('a new stream at expected version 0, read back in order with metadata intact', async () => {
    const id = randomUUID();
    const first = meta({ causationId: null, actor: 'user:alice', requestId: 'req-a' });
    const appended = await append(id, 0, [uploaded, parseStarted(1)], first);
    assert.deepEqual(appended.map((e) => [e.streamId, e.streamVersion, e.type]), [[id, 1, 'DocumentUploaded'], [id, 2, 'ParseStarted']]);

    const second = meta({ correlationId: first.correlationId, causationId: appended[1]!.eventId, actor: 'worker', requestId: null });
    const more = await append(id, 2, [parseStarted(2)], second);
    assert.equal(more[0]!.streamVersion, 3);

    const read = await readStream(sql, id);
    assert.deepEqual(read, [...appended, ...more], 'read returns what append returned');
    assert.deepEqual(read.map((e) => e.streamVersion), [1, 2, 3]);
    assert.deepEqual(read.map((e) => e.type), ['DocumentUploaded', 'ParseStarted', 'ParseStarted']);
    assert.deepEqual(read[0]!.data, uploaded.data);
    assert.deepEqual(read[2]!.data, { run: 1, attempt: 2, parser: 'local' });
    assert.deepEqual(read[0]!.metadata, first);
    assert.deepEqual(read[1]!.metadata, first);
    assert.deepEqual(read[2]!.metadata, second);
    assert.ok(read.every((e) => e.typeVersion === 1));
    assert.ok(read.every((e) => e.createdAt instanceof Date));
    assert.ok(read.every((e) => typeof e.globalPosition === 'number'));
    assert.ok(read[0]!.globalPosition < read[1]!.globalPosition && read[1]!.globalPosition < read[2]!.globalPosition);
    assert.equal(new Set(read.map((e) => e.eventId)).size, 3);
    assert.deepEqual(await readStream(sql, randomUUID()), []);
  });

  test('appending nothing is a no-op', async () => {
    const id = randomUUID();
    assert.deepEqual(await append(id, 0, []), []);
    assert.deepEqual(await versions(id), []);
  });
});

describe('expected version', () => {
  test('a stale (lower) expected version is a ConcurrencyError and changes nothing', async () => {
    const id = randomUUID();
    await append(id, 0, [uploaded, parseStarted(1), parseStarted(2)]);
    await assert.rejects(append(id, 1, [parseStarted(3)]), (err) => assertConcurrencyError(err, id, 1));
    await assert.rejects(append(id, 0, [uploaded]), (err) => assertConcurrencyError(err, id, 0));
    assert.deepEqual(await versions(id), [1, 2, 3]);
  });

  test('an expected version ahead of the stream is a ConcurrencyError and changes nothing', async () => {
    const id = randomUUID();
    await append(id, 0, [uploaded]);
    await assert.rejects(append(id, 3, [parseStarted(1)]), (err) => assertConcurrencyError(err, id, 3));
    await assert.rejects(append(id, 2, [parseStarted(1)]), (err) => assertConcurrencyError(err, id, 2));
    // A stream that does not exist is at version 0.
    const missing = randomUUID();
    await assert.rejects(append(missing, 1, [parseStarted(1)]), (err) => assertConcurrencyError(err, missing, 1));
    assert.deepEqual(await versions(id), [1]);
    assert.deepEqual(await versions(missing), []);
    assert.deepEqual((await append(id, 1, [parseStarted(1)])).map((e) => e.streamVersion), [2]);
  });

  test(
    'an expected version ahead of the stream leaves no row behind when appended outside a transaction',
    async () => {
      const id = randomUUID();
      await append(id, 0, [uploaded]);
      await assert.rejects(appendToStream(sql, id, 3, [parseStarted(1)], meta()), (err) => assertConcurrencyError(err, id, 3));
      assert.deepEqual(await versions(id), [1]);
    },
  );
});

describe('concurrent appends', () => {
  test('two appends at the same expected version on two connections: exactly one wins, no gap, no duplicate (x20)', async () => {
    for (let i = 0; i < 20; i++) {
      const id = randomUUID();
      await append(id, 0, [uploaded]);
      // Uneven batch sizes: a loser must not leave part of its batch behind.
      const results = await Promise.allSettled([
        append(id, 1, [parseStarted(1), parseStarted(2)], meta({ actor: 'a' }), sql),
        append(id, 1, [parseStarted(1)], meta({ actor: 'b' }), other),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1, `iteration ${i}: ${JSON.stringify(results.map((r) => r.status))}`);
      assert.equal(lost.length, 1);
      assertConcurrencyError(lost[0]!.reason, id, 1);
      const stream = await readStream(sql, id);
      const winner = (won[0] as PromiseFulfilledResult<RecordedEvent[]>).value;
      assert.deepEqual(stream.map((e) => e.streamVersion), Array.from({ length: 1 + winner.length }, (_, k) => k + 1));
      assert.ok(stream.slice(1).every((e) => e.metadata.actor === winner[0]!.metadata.actor), 'only the winner wrote after version 1');
    }
  });

  test('an append that waits on an uncommitted one at the same version fails once the first commits', async () => {
    const id = randomUUID();
    await append(id, 0, [uploaded]);
    let commitFirst!: () => void;
    const gate = new Promise<void>((resolve) => (commitFirst = resolve));
    let firstAppended!: () => void;
    const appendedSignal = new Promise<void>((resolve) => (firstAppended = resolve));
    const first = sql.begin(async (tx) => {
      const events = await appendToStream(tx, id, 1, [parseStarted(1)], meta({ actor: 'first' }));
      firstAppended();
      await gate;
      return events;
    });
    await appendedSignal;
    const second = append(id, 1, [parseStarted(1)], meta({ actor: 'second' }), other);
    const secondSettled = second.then(() => 'fulfilled', () => 'rejected');
    // The second insert blocks on the first one's uncommitted key.
    await waitFor(async () => {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query ilike '%insert into docpipe.events%'`;
      return row!.n === 1;
    }, 'the second append to wait for the first');
    assert.equal(await Promise.race([secondSettled, delay(50).then(() => 'pending')]), 'pending');
    commitFirst();
    await first;
    await assert.rejects(second, (err) => assertConcurrencyError(err, id, 1));
    const stream = await readStream(sql, id);
    assert.deepEqual(stream.map((e) => [e.streamVersion, e.metadata.actor]), [[1, 'user:u1'], [2, 'first']]);
  });
});

describe('append-only log', () => {
  test('UPDATE, DELETE and TRUNCATE on docpipe.events are refused', async () => {
    const id = randomUUID();
    const [event] = await append(id, 0, [uploaded]);
    const refused = (op: string) => (err: unknown) => {
      const e = err as { code?: string; message?: string };
      assert.equal(e.code, '23001', `${op}: ${e.message}`); // restrict_violation
      assert.match(e.message ?? '', /append-only/);
      assert.match(e.message ?? '', new RegExp(op));
      return true;
    };
    await assert.rejects(sql`update docpipe.events set type = 'Tampered' where stream_id = ${id}`, refused('UPDATE'));
    await assert.rejects(sql`update docpipe.events set data = '{}'::jsonb`, refused('UPDATE'));
    await assert.rejects(sql`delete from docpipe.events where stream_id = ${id}`, refused('DELETE'));
    await assert.rejects(sql`truncate docpipe.events`, refused('TRUNCATE'));
    assert.deepEqual(await readStream(sql, id), [event]);
  });
});

describe('readAll', () => {
  test('returns the log by position after a given position, with a limit', async () => {
    const start = await maxPosition();
    const a = randomUUID();
    const b = randomUUID();
    const ea = await append(a, 0, [uploaded, parseStarted(1)]);
    const eb = await append(b, 0, [uploaded]);
    const all = await waitForRead(start, 3);
    assert.deepEqual(all, [...ea, ...eb]);
    assert.deepEqual(await readAll(sql, { after: start, limit: 2 }), ea);
    assert.deepEqual(await readAll(sql, { after: ea[1]!.globalPosition }), eb);
  });

  test('skips rows of transactions newer than the oldest one in flight (out-of-order commit)', async () => {
    const start = await maxPosition();
    const a = randomUUID();
    const b = randomUUID();

    // Transaction A appends first (takes the smaller position) and stays open.
    let commitA!: () => void;
    const gate = new Promise<void>((resolve) => (commitA = resolve));
    let appendedA!: (events: RecordedEvent[]) => void;
    const appendedSignal = new Promise<RecordedEvent[]>((resolve) => (appendedA = resolve));
    const txA = sql.begin(async (tx) => {
      appendedA(await appendToStream(tx, a, 0, [uploaded], meta({ actor: 'A' })));
      await gate;
    });
    try {
      const [eventA] = await appendedSignal;
      // Transaction B appends later and commits first.
      const [eventB] = await append(b, 0, [uploaded], meta({ actor: 'B' }), other);
      assert.ok(eventA!.globalPosition < eventB!.globalPosition, 'A holds the smaller position');

      // The naive reader sees B alone: storing B's position would skip A forever.
      const naive = await sql<{ stream_id: string }[]>`select stream_id from docpipe.events where global_position > ${start} order by global_position`;
      assert.deepEqual(naive.map((r) => r.stream_id), [b]);

      // readAll holds B back while A (an older transaction) is in flight.
      assert.deepEqual(await readAll(sql, { after: start }), []);
      assert.deepEqual(await readAll(sql, { after: start, allCommitted: true }), [eventB], 'allCommitted reads every committed row');

      commitA();
      await txA;
      const both = await waitForRead(start, 2);
      assert.deepEqual(both.map((e) => e.streamId), [a, b], 'both, in position order');
      assert.deepEqual(both.map((e) => e.eventId), [eventA!.eventId, eventB!.eventId]);
    } finally {
      commitA();
      await txA.catch(() => {});
    }
  });
});

async function maxPosition(): Promise<number> {
  const [row] = await sql<{ p: number }[]>`select coalesce(max(global_position), 0)::int as p from docpipe.events`;
  return row!.p;
}

/**
 * readAll with the xmin rule. Other test files share the cluster, and a transaction of theirs in
 * flight holds back the cluster-wide xmin for a moment: wait for `count` rows, then return them.
 */
async function waitForRead(after: number, count: number): Promise<RecordedEvent[]> {
  let rows: RecordedEvent[] = [];
  await waitFor(async () => (rows = await readAll(sql, { after })).length >= count, `${count} visible events`);
  return rows;
}

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await delay(20);
  }
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('appendToStreams (batched appends)', () => {
  test('appends to several streams in one statement and returns each append its events', async () => {
    const a = randomUUID();
    const b = randomUUID();
    await append(a, 0, [uploaded]);
    const [ra, rb, ra2] = await sql.begin((tx) =>
      appendToStreams(tx, [
        { streamId: a, expectedVersion: 1, events: [parseStarted(1)], metadata: meta() },
        { streamId: b, expectedVersion: 0, events: [uploaded, parseStarted(1)], metadata: meta({ actor: 'worker' }) },
        { streamId: a, expectedVersion: 2, events: [parseStarted(2)], metadata: meta() },
      ]),
    );
    assert.deepEqual(ra!.map((e) => [e.streamId, e.streamVersion]), [[a, 2]]);
    assert.deepEqual(rb!.map((e) => [e.streamId, e.streamVersion, e.metadata.actor]), [[b, 1, 'worker'], [b, 2, 'worker']]);
    assert.deepEqual(ra2!.map((e) => [e.streamId, e.streamVersion]), [[a, 3]]);
    assert.deepEqual(await versions(a), [1, 2, 3]);
  });

  test('a stream that moved on fails the whole batch with ConcurrencyError, writing nothing', async () => {
    const a = randomUUID();
    const b = randomUUID();
    await append(a, 0, [uploaded]);
    await append(a, 1, [parseStarted(1)], meta(), other); // another writer, after our read at version 1
    await assert.rejects(
      sql.begin((tx) =>
        appendToStreams(tx, [
          { streamId: b, expectedVersion: 0, events: [uploaded], metadata: meta() },
          { streamId: a, expectedVersion: 1, events: [parseStarted(2)], metadata: meta() },
        ]),
      ),
      ConcurrencyError,
    );
    assert.deepEqual(await versions(b), []);
    assert.deepEqual(await versions(a), [1, 2]);
  });

  test('readStreams returns every stream in version order, empty for unknown ones', async () => {
    const a = randomUUID();
    await append(a, 0, [uploaded, parseStarted(1)]);
    const unknown = randomUUID();
    const streams = await readStreams(sql, [a, unknown]);
    assert.deepEqual(streams.get(a)!.map((e) => e.streamVersion), [1, 2]);
    assert.deepEqual(streams.get(unknown), []);
  });
});
