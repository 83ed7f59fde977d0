// The shared rate budget on a real Postgres: token buckets in docpipe.rate_buckets refilled by
// the database clock, shared by budgets on different connection pools (as worker processes
// would be), 429 blocks seen by every instance, and costs above capacity.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { createSql, type Sql } from '../../src/db/client.ts';
import { createRateBudget } from '../../src/providers/embedder/budget.ts';
import { ProviderError } from '../../src/providers/types.ts';
import { createDatabase, type TestDatabase } from '../helpers/db.ts';

const db: TestDatabase = await createDatabase({ migrate: true });
const sql: Sql = db.sql;
/** A second, independent pool: another worker process. */
const other: Sql = createSql(db.url, { max: 10 });
after(() => other.end({ timeout: 5 }));

const unique = (label: string) => `test:${label}:${randomUUID().slice(0, 8)}`;

async function bucket(name: string): Promise<{ tokens: number; blocked: boolean }> {
  const [row] = await sql<{ tokens: number; blocked: boolean }[]>`
    select tokens, coalesce(blocked_until > clock_timestamp(), false) as blocked from docpipe.rate_buckets where name = ${name}`;
  assert.ok(row, `bucket ${name} exists`);
  return row;
}

describe('rate budget', () => {
  test('within capacity: no wait, both buckets created full and deducted', async () => {
    const name = unique('within');
    const budget = createRateBudget(sql, { name, requestsPerMinute: 60, tokensPerMinute: 600 });
    const waited = await budget.acquire({ requests: 1, tokens: 100 });
    assert.ok(waited < 100, `waited ${waited} ms`);
    const tokens = await bucket(`${name}:tokens`);
    const requests = await bucket(`${name}:requests`);
    assert.ok(tokens.tokens >= 500 && tokens.tokens < 502, `tokens ${tokens.tokens}`);
    assert.ok(requests.tokens >= 59 && requests.tokens < 59.2, `requests ${requests.tokens}`);
    assert.ok((await budget.acquire({ requests: 1, tokens: 100 })) < 100);
  });

  test('over tokens/min: the next acquire waits about deficit / rate', async () => {
    const name = unique('deficit');
    // 600 tokens/min = 10 per second.
    const budget = createRateBudget(sql, { name, requestsPerMinute: 1000, tokensPerMinute: 600 });
    assert.ok((await budget.acquire({ requests: 1, tokens: 600 })) < 100);
    const waited = await budget.acquire({ requests: 1, tokens: 10 }); // 1 s of refill
    assert.ok(waited >= 850 && waited < 2000, `waited ${waited} ms`);
  });

  test('over requests/min: the requests bucket limits too', async () => {
    const name = unique('requests');
    // 120 requests/min = 2 per second.
    const budget = createRateBudget(sql, { name, requestsPerMinute: 120, tokensPerMinute: 1_000_000 });
    assert.ok((await budget.acquire({ requests: 120, tokens: 1 })) < 100);
    const waited = await budget.acquire({ requests: 1, tokens: 1 }); // 0.5 s
    assert.ok(waited >= 400 && waited < 1500, `waited ${waited} ms`);
  });

  test('two budgets over the same database share one bucket: concurrent acquires never exceed capacity + refill', async () => {
    const name = unique('shared');
    // 6000 tokens/min: capacity 6000, refill 100 per second.
    const options = { name, requestsPerMinute: 100_000, tokensPerMinute: 6000 };
    const a = createRateBudget(sql, options);
    const b = createRateBudget(other, options);
    const capacity = 6000;
    const rate = 100 / 1000; // per ms
    const cost = 100;
    const count = 64; // 6400 tokens: 400 over capacity, about 4 s of refill
    const started = performance.now();
    const grants: number[] = [];
    await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        await (i % 2 === 0 ? a : b).acquire({ requests: 1, tokens: cost });
        grants.push(performance.now() - started);
      }),
    );
    const elapsed = performance.now() - started;
    assert.equal(grants.length, count);
    grants.sort((x, y) => x - y);
    grants.forEach((t, i) => {
      const granted = (i + 1) * cost;
      assert.ok(granted <= capacity + rate * t + 1e-6, `${granted} tokens granted by ${t.toFixed(0)} ms: over capacity + refill`);
    });
    const minimum = (count * cost - capacity) / rate;
    assert.ok(elapsed >= minimum * 0.95, `all granted after ${elapsed.toFixed(0)} ms, refill alone needs ${minimum} ms`);
    assert.ok(elapsed < minimum + 4000, `took ${elapsed.toFixed(0)} ms`);
    assert.ok((await bucket(`${name}:tokens`)).tokens > -1e-6, 'the bucket never goes negative');
  });

  test('block(until) makes another budget instance wait until then', async () => {
    const name = unique('block');
    const options = { name, requestsPerMinute: 1000, tokensPerMinute: 100_000 };
    const a = createRateBudget(sql, options);
    const b = createRateBudget(other, options);
    await a.block(Date.now() + 800);
    assert.equal((await bucket(`${name}:requests`)).blocked, true);
    const waited = await b.acquire({ requests: 1, tokens: 10 });
    assert.ok(waited >= 700 && waited < 1800, `waited ${waited} ms`);
    // A shorter block never shortens a longer one; a block in the past is nothing.
    await a.block(Date.now() + 600);
    await a.block(Date.now() + 100);
    await a.block(Date.now() - 1000);
    const again = await b.acquire({ requests: 1, tokens: 10 });
    assert.ok(again >= 500 && again < 1500, `waited ${again} ms`);
  });

  test('a cost above capacity passes once the bucket is full', async () => {
    const name = unique('clamp');
    const budget = createRateBudget(sql, { name, requestsPerMinute: 60, tokensPerMinute: 600 });
    assert.ok((await budget.acquire({ requests: 1, tokens: 5000 })) < 100);
    const { tokens } = await bucket(`${name}:tokens`);
    assert.ok(tokens >= 0 && tokens < 2, `tokens ${tokens}`);
  });

  test('maxWaitMs bounds the wait; an abort signal stops it', async () => {
    const name = unique('bounded');
    const budget = createRateBudget(sql, { name, requestsPerMinute: 1000, tokensPerMinute: 60, maxWaitMs: 200 });
    await budget.acquire({ requests: 1, tokens: 60 });
    const started = performance.now();
    await assert.rejects(budget.acquire({ requests: 1, tokens: 30 }), (err: unknown) => {
      assert.ok(err instanceof ProviderError);
      assert.equal(err.code, 'RATE_BUDGET_EXHAUSTED');
      assert.equal(err.permanent, false);
      return true;
    });
    assert.ok(performance.now() - started < 500);

    const patient = createRateBudget(sql, { name, requestsPerMinute: 1000, tokensPerMinute: 60 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('shutting down')), 150);
    const abortStarted = performance.now();
    await assert.rejects(patient.acquire({ requests: 1, tokens: 30 }, controller.signal), /shutting down/);
    assert.ok(performance.now() - abortStarted < 1000);
  });
});
