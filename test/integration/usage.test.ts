// docpipe.usage_daily on a real database: the writer adds deltas (one statement for many rows,
// none for no deltas); the command handler adds to it in the append's transaction, for several
// events of one owner and for two owners in one batch, and sends no statement for commands that
// use nothing; a rollback leaves nothing; the rebuild refolds the whole log, across a day
// boundary (UTC), into the rows the inline path wrote. And the queries behind GET /v1/usage and
// `docpipe usage`.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { Db } from '../../src/db/client.ts';
import { executeBatchIn, type BatchItem, type CommandContext } from '../../src/documents/commands.ts';
import type { DocumentCommand } from '../../src/documents/document.ts';
import type { EventMetadata } from '../../src/events/catalog.ts';
import { queryUsage, queryUsageByOwner, rebuildUsage, rollupUsage, usageDay, writeUsage, type UsageDelta } from '../../src/projections/usage.ts';
import { createDatabase } from '../helpers/db.ts';

const db = await createDatabase();
const { sql } = db;
const ctx: CommandContext = { sql, jobs: { send: async () => {} } };
const meta: EventMetadata = { correlationId: 'usage-test', causationId: null, actor: 'worker', requestId: null };

interface UsageRow {
  owner_id: string;
  day: string;
  documents: number;
  bytes: number;
  pages: number;
  tokens: number;
}

const usageRows = async (owners?: string[]): Promise<UsageRow[]> =>
  (
    await sql<{ owner_id: string; day: string; documents: bigint; bytes: bigint; pages: bigint; tokens: bigint }[]>`
      select owner_id, to_char(day, 'YYYY-MM-DD') as day, sum(documents)::bigint as documents, sum(bytes)::bigint as bytes, sum(pages)::bigint as pages, sum(tokens)::bigint as tokens
      from (select * from docpipe.usage_daily union all select * from docpipe.usage_deltas) u
      where ${owners ? sql`owner_id = any(${owners})` : sql`true`}
      group by owner_id, day
      order by owner_id, day`
  ).map((r) => ({ ...r, documents: Number(r.documents), bytes: Number(r.bytes), pages: Number(r.pages), tokens: Number(r.tokens) }));

/** `tx`, counting the statements that name a usage table. */
function counting(tx: Db): { tx: Db; usageStatements: () => number } {
  let n = 0;
  const proxy = new Proxy(tx, {
    apply(target, thisArg, args: unknown[]) {
      const strings = args[0] as { raw?: readonly string[] } | undefined;
      if (strings?.raw?.some((s) => s.includes('usage_daily') || s.includes('usage_deltas'))) n++;
      return Reflect.apply(target as never, thisArg, args);
    },
  });
  return { tx: proxy, usageStatements: () => n };
}

async function batch(items: BatchItem[]): Promise<{ usageStatements: number; day: string }> {
  return sql.begin(async (tx) => {
    const c = counting(tx);
    const outcomes = await executeBatchIn(c.tx, ctx, items);
    for (const o of outcomes) assert.ok(o?.ok, `refused: ${o && !o.ok ? o.error.message : 'skipped'}`);
    const [now] = await tx<{ now: Date }[]>`select now() as now`;
    return { usageStatements: c.usageStatements(), day: usageDay(now!.now) };
  });
}

const upload = (ownerId: string, size: number): DocumentCommand => ({
  type: 'Upload',
  ownerId,
  fileName: 'a.md',
  mediaType: 'text/markdown',
  size,
  sha256: 'a'.repeat(64),
  storageKey: `documents/${randomUUID()}/original`,
  idempotencyKey: null,
});
const item = (documentId: string, command: DocumentCommand): BatchItem => ({ documentId, command, metadata: meta });
const toChunked = (id: string, pages: number, tokens: number): BatchItem[] => [
  item(id, { type: 'StartParse', run: 1, parser: 'local' }),
  item(id, { type: 'CompleteParse', run: 1, parsedKey: 'parsed/1', pages, characters: 100, sha256: 'b'.repeat(64) }),
  item(id, { type: 'StartEmbedding', run: 1 }),
  item(id, { type: 'RecordChunks', run: 1, chunkCount: 3, tokenCount: tokens, batchSize: 2 }),
];

describe('the writer', () => {
  test('no deltas: no statement', async () => {
    const refuse = (() => assert.fail('a statement was sent')) as unknown as Db;
    await writeUsage(refuse, []);
  });

  test('many rows in one statement; later deltas add to them', async () => {
    const deltas: UsageDelta[] = [
      { ownerId: 'w-1', day: '2001-03-15', documents: 1, bytes: 100, pages: 2, tokens: 300 },
      { ownerId: 'w-1', day: '2001-03-16', documents: 0, bytes: 0, pages: 5, tokens: 0 },
      { ownerId: 'w-2', day: '2001-03-15', documents: 2, bytes: 2 ** 40, pages: 0, tokens: 0 },
    ];
    await sql.begin(async (tx) => {
      const c = counting(tx);
      await writeUsage(c.tx, deltas);
      assert.equal(c.usageStatements(), 1);
    });
    await writeUsage(sql, [
      { ownerId: 'w-1', day: '2001-03-16', documents: 1, bytes: 7, pages: 1, tokens: 40 },
      { ownerId: 'w-2', day: '2001-03-17', documents: 1, bytes: 1, pages: 0, tokens: 0 },
    ]);
    assert.deepEqual(await usageRows(['w-1', 'w-2']), [
      { owner_id: 'w-1', day: '2001-03-15', documents: 1, bytes: 100, pages: 2, tokens: 300 },
      { owner_id: 'w-1', day: '2001-03-16', documents: 1, bytes: 7, pages: 6, tokens: 40 },
      { owner_id: 'w-2', day: '2001-03-15', documents: 2, bytes: 2 ** 40, pages: 0, tokens: 0 },
      { owner_id: 'w-2', day: '2001-03-17', documents: 1, bytes: 1, pages: 0, tokens: 0 },
    ]);
  });
});

describe('inline, in executeBatchIn', () => {
  const [a1, a2, b1] = [randomUUID(), randomUUID(), randomUUID()];

  test('one batch: several events of one owner, and a second owner: one statement', async () => {
    const { usageStatements, day } = await batch([
      item(a1, upload('owner-a', 1000)),
      item(a2, upload('owner-a', 250)),
      item(b1, upload('owner-b', 40)),
      ...toChunked(a1, 3, 900),
      ...toChunked(b1, 1, 60),
    ]);
    assert.equal(usageStatements, 1);
    assert.deepEqual(await usageRows(['owner-a', 'owner-b']), [
      { owner_id: 'owner-a', day, documents: 2, bytes: 1250, pages: 3, tokens: 900 },
      { owner_id: 'owner-b', day, documents: 1, bytes: 40, pages: 1, tokens: 60 },
    ]);
  });

  test('commands that use nothing send no usage statement', async () => {
    const { usageStatements } = await batch([
      item(a1, { type: 'StoreEmbeddingBatch', run: 1, batch: 0, model: 'local', dimensions: 8 }),
      item(a1, { type: 'StoreEmbeddingBatch', run: 1, batch: 1, model: 'local', dimensions: 8 }),
      item(a1, { type: 'MarkReady', run: 1 }),
      item(a2, { type: 'StartParse', run: 1, parser: 'local' }),
    ]);
    assert.equal(usageStatements, 0);
  });

  test('a reprocessed document is parsed and embedded again, and counted again; the owner comes from its status row', async () => {
    const before = (await usageRows(['owner-a']))[0]!;
    const { usageStatements, day } = await batch([item(a1, { type: 'Reprocess', reason: null }), ...toChunked(a1, 3, 900).map((i) => ({ ...i, command: { ...i.command, run: 2 } as DocumentCommand }))]);
    assert.equal(usageStatements, 1);
    assert.equal(before.day, day);
    assert.deepEqual(await usageRows(['owner-a']), [{ ...before, pages: before.pages + 3, tokens: before.tokens + 900 }]);
  });

  test('a rolled-back transaction leaves no usage', async () => {
    const before = await usageRows();
    await assert.rejects(
      sql.begin(async (tx) => {
        await executeBatchIn(tx, ctx, [item(randomUUID(), upload('owner-a', 5)), item(randomUUID(), upload('owner-c', 5))]);
        throw new Error('roll back');
      }),
      /roll back/,
    );
    assert.deepEqual(await usageRows(), before);
  });
});

describe('queries', () => {
  test('one owner, all owners, per owner biggest first', async () => {
    const day = (await usageRows(['owner-a']))[0]!.day;
    const a = await queryUsage(sql, { ownerId: 'owner-a', from: day, to: day });
    assert.deepEqual(a, { days: [{ day, documents: 2, bytes: 1250, pages: 6, tokens: 1800 }], totals: { documents: 2, bytes: 1250, pages: 6, tokens: 1800 } });
    const w1 = await queryUsage(sql, { ownerId: 'w-1', from: '2001-03-01', to: '2001-03-31' });
    assert.deepEqual(w1.days.map((d) => d.day), ['2001-03-15', '2001-03-16'], 'the days with usage, oldest first');
    assert.deepEqual(w1.totals, { documents: 2, bytes: 107, pages: 8, tokens: 340 });
    assert.deepEqual((await queryUsage(sql, { ownerId: 'w-1', from: '2001-03-16', to: '2001-03-16' })).totals, { documents: 1, bytes: 7, pages: 6, tokens: 40 }, 'both ends included');
    assert.deepEqual(await queryUsage(sql, { ownerId: 'nobody', from: '2001-03-01', to: '2001-03-31' }), { days: [], totals: { documents: 0, bytes: 0, pages: 0, tokens: 0 } });
    const all = await queryUsage(sql, { ownerId: null, from: '2001-03-15', to: '2001-03-15' });
    assert.deepEqual(all.days, [{ day: '2001-03-15', documents: 3, bytes: 100 + 2 ** 40, pages: 2, tokens: 300 }], 'all owners, summed per day');

    const march = { from: '2001-03-01', to: '2001-03-31' };
    // Free providers: the biggest by tokens, then pages, bytes, documents.
    assert.deepEqual((await queryUsageByOwner(sql, { ...march, limit: 10 })).owners.map((o) => o.ownerId), ['w-1', 'w-2']);
    // Priced pages: w-1 has 8, w-2 none; priced bytes do not exist, so w-2's terabyte is not "bigger".
    const priced = await queryUsageByOwner(sql, { ...march, limit: 1, pageDollars: 0.003, tokenDollars: 0 });
    assert.deepEqual(priced, { owners: [{ ownerId: 'w-1', documents: 2, bytes: 107, pages: 8, tokens: 340 }], ownerCount: 2 });
    assert.deepEqual(await queryUsageByOwner(sql, { ...march, ownerId: 'w-2', limit: 10 }), { owners: [{ ownerId: 'w-2', documents: 3, bytes: 2 ** 40 + 1, pages: 0, tokens: 0 }], ownerCount: 1 });
    assert.deepEqual(await queryUsageByOwner(sql, { from: '2001-01-01', to: '2001-01-31', limit: 10 }), { owners: [], ownerCount: 0 });
  });
});

describe('roll-up', () => {
  test('folds the deltas into the daily rows: the sums do not change, the deltas are gone; an uncommitted delta stays for the next run', async () => {
    await writeUsage(sql, [
      { ownerId: 'r-1', day: '2001-05-01', documents: 1, bytes: 10, pages: 1, tokens: 100 },
      { ownerId: 'r-1', day: '2001-05-01', documents: 2, bytes: 20, pages: 0, tokens: 5 },
      { ownerId: 'r-2', day: '2001-05-02', documents: 1, bytes: 1, pages: 0, tokens: 0 },
    ]);
    const before = await usageRows(['r-1', 'r-2']);
    // A writer in flight: its delta is not visible to the roll-up, and must survive it.
    let release!: () => void;
    const holding = new Promise<void>((r) => (release = r));
    let inserted!: () => void;
    const insertedYet = new Promise<void>((r) => (inserted = r));
    const writer = sql.begin(async (tx) => {
      await writeUsage(tx, [{ ownerId: 'r-1', day: '2001-05-01', documents: 0, bytes: 0, pages: 0, tokens: 7 }]);
      inserted();
      await holding;
    });
    await insertedYet;
    const moved = await rollupUsage(sql, { batchSize: 2 });
    assert.ok(moved >= 3, `moved ${moved}`);
    assert.deepEqual(await usageRows(['r-1', 'r-2']), before, 'the sums are the same before and after');
    const [left] = await sql<{ n: number }[]>`select count(*)::int as n from docpipe.usage_deltas where owner_id in ('r-1', 'r-2')`;
    assert.equal(left!.n, 0);
    release();
    await writer;
    assert.equal((await usageRows(['r-1']))[0]!.tokens, 112, 'the committed delta counts');
    assert.equal(await rollupUsage(sql), 1);
    const [daily] = await sql<{ tokens: bigint }[]>`select tokens from docpipe.usage_daily where owner_id = 'r-1' and day = '2001-05-01'`;
    assert.equal(Number(daily!.tokens), 112);
    await sql`delete from docpipe.usage_daily where owner_id in ('r-1', 'r-2')`;
  });
});

describe('rebuild', () => {
  test('refolds the whole log: the inline rows, plus a stream appended across midnight (UTC)', async () => {
    // The writer's test rows have no events: the rebuild drops them.
    await sql`delete from docpipe.usage_daily where owner_id in ('w-1', 'w-2')`;
    await sql`delete from docpipe.usage_deltas where owner_id in ('w-1', 'w-2')`;
    const inline = await usageRows();
    assert.ok(inline.length >= 2);
    // A stream whose events straddle midnight, written straight into the log (no inline write):
    // the upload in the last microsecond of 15 March, the parse and the chunking on the 16th.
    const id = randomUUID();
    const events: [number, string, Record<string, unknown>, string][] = [
      [1, 'DocumentUploaded', { ownerId: 'owner-night', fileName: 'n.md', mediaType: 'text/markdown', size: 77, sha256: 'c'.repeat(64), storageKey: 'k', idempotencyKey: null }, '2001-03-15 23:59:59.999999+00'],
      [2, 'ParseStarted', { run: 1, attempt: 1, parser: 'local' }, '2001-03-16 00:00:00+00'],
      [3, 'ParseSucceeded', { run: 1, parsedKey: 'p', pages: 4, characters: 10, sha256: 'd'.repeat(64), partial: null }, '2001-03-16 00:00:00+00'],
      [4, 'DocumentChunked', { run: 1, chunkCount: 2, tokenCount: 123, batchSize: 2, batches: 1 }, '2001-03-16 00:00:01+00'],
    ];
    for (const [version, type, data, at] of events) {
      await sql`
        insert into docpipe.events (stream_id, stream_version, type, type_version, data, metadata, created_at)
        values (${id}, ${version}, ${type}, ${type === 'ParseSucceeded' ? 2 : 1}, ${sql.json(data as never)}, ${sql.json(meta as never)}, ${at}::timestamptz)`;
    }
    // A corrupted row, which the rebuild must not keep (rolled up first, so the row is there), and a stray delta.
    await rollupUsage(sql);
    const damaged = await sql`update docpipe.usage_daily set tokens = tokens + 999999 where owner_id = 'owner-a'`;
    assert.ok(damaged.count > 0);
    await sql`insert into docpipe.usage_deltas (owner_id, day, tokens) values ('owner-a', '2001-01-01', 5)`;

    const result = await sql.begin((tx) => rebuildUsage(tx, { batchSize: 7 }));
    assert.equal(result.usageRows, inline.length + 2);
    const expected = [
      ...inline,
      { owner_id: 'owner-night', day: '2001-03-15', documents: 1, bytes: 77, pages: 0, tokens: 0 },
      { owner_id: 'owner-night', day: '2001-03-16', documents: 0, bytes: 0, pages: 4, tokens: 123 },
    ].sort((x, y) => (x.owner_id + x.day < y.owner_id + y.day ? -1 : 1));
    assert.deepEqual(await usageRows(), expected);
    // Idempotent.
    await sql.begin((tx) => rebuildUsage(tx));
    assert.deepEqual(await usageRows(), expected);
  });
});
