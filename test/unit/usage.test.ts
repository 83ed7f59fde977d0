// The pure half of usage: the cost estimate by provider and tier, the range of days a query may
// cover (the API's INVALID_DATE_RANGE, the CLI's flags), and the fold from events to deltas.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { costNote, costSettings, CREDITS_PER_PAGE, estimateCostDollars, lastDays, parseDay, usageRange, UsageRangeError, type CostSettings } from '../../src/documents/usage.ts';
import type { EventPayloads, EventType, RecordedEvent } from '../../src/events/catalog.ts';
import { parseUsageArgs } from '../../src/ops/usage.ts';
import { foldUsage, usageDay } from '../../src/projections/usage.ts';
import { loadConfig } from '../../src/config.ts';

const pricing = { llamaparseCreditDollars: 0.001, openaiMillionTokensDollars: 0.02 };

describe('estimateCostDollars', () => {
  test('credits per page by tier are LlamaCloud\'s, the same as the adapter\'s', () => {
    assert.deepEqual({ ...CREDITS_PER_PAGE }, { fast: 1, cost_effective: 3, agentic: 10, agentic_plus: 45 });
  });

  test('LlamaParse: pages x credits of the tier x credit price; OpenAI: tokens x price per million', () => {
    const usage = { pages: 20, tokens: 10_000 };
    assert.deepEqual(estimateCostDollars(usage, { parser: 'llamaparse', tier: 'cost_effective', embedder: 'openai', pricing }), {
      parserDollars: 0.06,
      embedderDollars: 0.0002,
      totalDollars: 0.0602,
    });
    assert.equal(estimateCostDollars(usage, { parser: 'llamaparse', tier: 'agentic_plus', embedder: 'openai', pricing }).parserDollars, 0.9);
    assert.equal(estimateCostDollars(usage, { parser: 'llamaparse', tier: 'fast', embedder: 'local', pricing: { ...pricing, llamaparseCreditDollars: 0.00125 } }).parserDollars, 0.025);
    // No binary noise: 0.1 * 3 would be 0.30000000000000004.
    assert.equal(estimateCostDollars({ pages: 1, tokens: 0 }, { parser: 'llamaparse', tier: 'cost_effective', embedder: 'local', pricing: { ...pricing, llamaparseCreditDollars: 0.1 } }).parserDollars, 0.3);
  });

  test('local providers cost nothing', () => {
    const usage = { pages: 1000, tokens: 5_000_000 };
    assert.deepEqual(estimateCostDollars(usage, { parser: 'local', embedder: 'local', pricing }), { parserDollars: 0, embedderDollars: 0, totalDollars: 0 });
    assert.deepEqual(estimateCostDollars(usage, { parser: 'local', embedder: 'openai', pricing }), { parserDollars: 0, embedderDollars: 0.1, totalDollars: 0.1 });
    assert.deepEqual(estimateCostDollars(usage, { parser: 'llamaparse', tier: 'fast', embedder: 'local', pricing }), { parserDollars: 1, embedderDollars: 0, totalDollars: 1 });
  });

  test('costSettings reads the configuration; the note says what the estimate assumes', () => {
    assert.deepEqual(costSettings(loadConfig({})), { parser: 'local', tier: null, embedder: 'local', pricing });
    const remote: CostSettings = costSettings(
      loadConfig({ DOCPIPE_PARSER: 'llamaparse', LLAMAPARSE_API_KEY: 'llx-test', LLAMAPARSE_TIER: 'agentic', DOCPIPE_EMBEDDER: 'openai', OPENAI_API_KEY: 'sk-test', PRICE_OPENAI_MILLION_TOKENS_DOLLARS: '0.13' }),
    );
    assert.deepEqual(remote, { parser: 'llamaparse', tier: 'agentic', embedder: 'openai', pricing: { llamaparseCreditDollars: 0.001, openaiMillionTokensDollars: 0.13 } });
    assert.match(costNote(remote), /LlamaParse agentic: 10 credits per page at \$0\.001 per credit; OpenAI: \$0\.13 per million tokens/);
    assert.match(costNote(costSettings(loadConfig({}))), /local parser: free; the local embedder: free/);
  });
});

describe('usageRange', () => {
  const now = new Date('2026-03-15T23:30:00Z');

  test('defaults: the 30 days ending today (UTC)', () => {
    assert.deepEqual(usageRange({}, now), { from: '2026-02-14', to: '2026-03-15' });
    assert.deepEqual(usageRange({ to: '2026-01-31' }, now), { from: '2026-01-02', to: '2026-01-31' });
    assert.deepEqual(usageRange({ from: '2026-03-01' }, now), { from: '2026-03-01', to: '2026-03-15' });
    assert.deepEqual(usageRange({ from: '2026-03-15', to: '2026-03-15' }, now), { from: '2026-03-15', to: '2026-03-15' }, 'one day');
  });

  test('at most 366 days, from <= to, real dates only', () => {
    assert.deepEqual(usageRange({ from: '2024-01-01', to: '2024-12-31' }, now), { from: '2024-01-01', to: '2024-12-31' }, 'a leap year is 366 days');
    const refused: [Record<string, string>, RegExp][] = [
      [{ from: '2024-01-01', to: '2025-01-01' }, /at most 366 days at once, got 367/],
      [{ from: '2026-03-02', to: '2026-03-01' }, /from \(2026-03-02\) is after to \(2026-03-01\)/],
      [{ from: '2026-03-16' }, /is after to \(2026-03-15\)/],
      [{ from: '2026-02-30' }, /from must be a date as YYYY-MM-DD/],
      [{ to: '2026-3-1' }, /to must be a date/],
      [{ to: '0000-01-01' }, /to must be a date/],
      [{ from: '2026-03-01T00:00:00Z' }, /from must be a date/],
      [{ from: 'yesterday' }, /from must be a date/],
    ];
    for (const [input, message] of refused) {
      assert.throws(() => usageRange(input, now), (err: unknown) => err instanceof UsageRangeError && err.code === 'INVALID_DATE_RANGE' && message.test(err.message), JSON.stringify(input));
    }
    assert.equal(parseDay('2024-02-29'), Date.UTC(2024, 1, 29));
    assert.equal(parseDay('2025-02-29'), null);
    assert.deepEqual(lastDays(1, now), { from: '2026-03-15', to: '2026-03-15' });
    assert.deepEqual(lastDays(7, now), { from: '2026-03-09', to: '2026-03-15' });
  });

  test('docpipe usage flags', () => {
    assert.deepEqual(parseUsageArgs([], now), { ownerId: null, from: '2026-02-14', to: '2026-03-15', limit: 50, json: false });
    assert.deepEqual(parseUsageArgs(['--owner', 'user-a', '--since', '7d', '--json', '--limit', '5'], now), { ownerId: 'user-a', from: '2026-03-09', to: '2026-03-15', limit: 5, json: true });
    assert.deepEqual(parseUsageArgs(['--from', '2026-01-01', '--to', '2026-01-31'], now), { ownerId: null, from: '2026-01-01', to: '2026-01-31', limit: 50, json: false });
    assert.equal(parseUsageArgs(['--help'], now), 'help');
    for (const [args, message] of [
      [['--bogus'], /Unknown option '--bogus'/],
      [['--since', '30'], /--since "30": expected a number of days/],
      [['--since', '367d'], /at most 366d/],
      [['--since', '7d', '--from', '2026-01-01'], /not both/],
      [['--from', '2026-01-32'], /--from\/--to: from must be a date/],
      [['--from', '2025-01-01', '--to', '2026-03-01'], /at most 366 days/],
      [['--limit', '0'], /--limit "0": expected 1 to 10000/],
      [['--limit', '1.5'], /--limit/],
      [['--owner', ''], /--owner must be 1 to 255 characters/],
      [['extra'], /unexpected argument "extra"/],
    ] as [string[], RegExp][]) {
      assert.throws(() => parseUsageArgs(args, now), message, args.join(' '));
    }
  });
});

describe('foldUsage', () => {
  let position = 0;
  const event = <K extends EventType>(streamId: string, type: K, data: Partial<EventPayloads[K]>, createdAt: string): RecordedEvent =>
    ({
      eventId: randomUUID(),
      globalPosition: ++position,
      streamId,
      streamVersion: position,
      type,
      typeVersion: 1,
      data,
      metadata: { correlationId: 'c', causationId: null, actor: 'test', requestId: null },
      createdAt: new Date(createdAt),
    }) as unknown as RecordedEvent;
  const uploaded = (id: string, ownerId: string, size: number, at: string) => event(id, 'DocumentUploaded', { ownerId, size }, at);
  const parsed = (id: string, pages: number, at: string) => event(id, 'ParseSucceeded', { run: 1, pages }, at);
  const chunked = (id: string, tokenCount: number, at: string) => event(id, 'DocumentChunked', { run: 1, tokenCount, chunkCount: 1 }, at);

  test('several events of one owner in one batch make one delta per day', () => {
    const [a, b] = [randomUUID(), randomUUID()];
    const at = '2026-03-15T10:00:00Z';
    const deltas = foldUsage([
      uploaded(a, 'owner-1', 1000, at),
      event(a, 'ParseStarted', { run: 1 }, at),
      parsed(a, 4, at),
      chunked(a, 900, at),
      event(a, 'DocumentReady', { run: 1 }, at),
      uploaded(b, 'owner-1', 24, at),
      parsed(b, 1, at),
    ], new Map());
    assert.deepEqual(deltas, [{ ownerId: 'owner-1', day: '2026-03-15', documents: 2, bytes: 1024, pages: 5, tokens: 900 }]);
  });

  test('two owners, a day boundary (UTC), owners from the status rows; sorted by owner and day', () => {
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    const owners = new Map([[b, { owner_id: 'owner-b' }], [a, { owner_id: 'ignored: the upload names its owner' }]]);
    const deltas = foldUsage([
      uploaded(a, 'owner-z', 10, '2026-03-15T23:59:59.999Z'),
      parsed(a, 2, '2026-03-16T00:00:00.000Z'),
      parsed(b, 3, '2026-03-15T23:59:59.999Z'),
      chunked(b, 70, '2026-03-16T00:00:00.000Z'),
      chunked(c, 500, '2026-03-16T01:00:00Z'), // no owner known: counts for nobody
      parsed(b, 0, '2026-03-17T00:00:00Z'), // nothing to add: no row
    ], owners);
    assert.deepEqual(deltas, [
      { ownerId: 'owner-b', day: '2026-03-15', documents: 0, bytes: 0, pages: 3, tokens: 0 },
      { ownerId: 'owner-b', day: '2026-03-16', documents: 0, bytes: 0, pages: 0, tokens: 70 },
      { ownerId: 'owner-z', day: '2026-03-15', documents: 1, bytes: 10, pages: 0, tokens: 0 },
      { ownerId: 'owner-z', day: '2026-03-16', documents: 0, bytes: 0, pages: 2, tokens: 0 },
    ]);
    assert.equal(usageDay(new Date('2026-03-15T23:59:59.999-01:00')), '2026-03-16', 'the day is UTC whatever the offset');
  });

  test('events that use nothing make no deltas', () => {
    const a = randomUUID();
    const owners = new Map([[a, { owner_id: 'owner-1' }]]);
    const at = '2026-03-15T10:00:00Z';
    const types = ['ParseStarted', 'EmbeddingStarted', 'EmbeddingBatchStored', 'DocumentReady', 'DocumentFailed', 'ReprocessRequested', 'DocumentDeleted', 'StageAttemptFailed'] as const;
    assert.deepEqual(foldUsage(types.map((t) => event(a, t, {}, at)), owners), []);
    assert.deepEqual(foldUsage([], owners), []);
  });
});
