// A provider rate budget shared by every worker process, kept as two token buckets in
// Postgres (docpipe.rate_buckets): `${name}:requests` and `${name}:tokens`. Each bucket holds
// at most its per-minute limit and refills continuously at limit/60 per second. All time
// arithmetic uses the database clock (clock_timestamp()), never the machine's, so workers in
// different regions with skewed clocks agree on one budget.
//
// acquire() is ONE statement (one implicit transaction): it locks both rows in name order,
// refills them by the time elapsed, and deducts the cost only when both have enough and no
// 429 block is in force; otherwise it changes nothing and answers how long to wait. The rows
// are created full on first use. block() records a 429's Retry-After so the whole fleet
// backs off, not only the worker that was told.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from '../../db/client.ts';
import { rateBudgetWait } from '../../observability/metrics.ts';
import { ProviderError } from '../types.ts';

export interface RateCost {
  requests: number;
  tokens: number;
}

export interface RateBudget {
  /**
   * Waits until the cost fits both buckets, deducts it, and resolves with the milliseconds
   * waited. A cost above a bucket's capacity is clamped to the capacity. Rejects with the
   * signal's reason when aborted, and with a non-permanent ProviderError
   * (RATE_BUDGET_EXHAUSTED) when the wait would exceed `maxWaitMs`.
   */
  acquire(cost: RateCost, signal?: AbortSignal): Promise<number>;
  /**
   * A 429's Retry-After: nobody is granted anything before `untilMs` (epoch ms of this
   * machine, converted to a delay so only the relative time matters). Never shortens a block.
   */
  block(untilMs: number): Promise<void>;
}

export interface RateBudgetOptions {
  /** Budget name, e.g. 'openai:text-embedding-3-small'. */
  name: string;
  requestsPerMinute: number;
  tokensPerMinute: number;
  /** Longest total wait of one acquire before it gives up. Default 900000 (15 min). */
  maxWaitMs?: number;
}

/** Sleep at least this long between attempts: the deficit can round to nothing. */
const MIN_SLEEP_MS = 5;
/** Random extra sleep (fraction of the wait) so waiters do not all wake at the same instant. */
const JITTER = 0.1;

interface BucketState {
  name: string;
  available: number;
  cost: number;
  rate: number;
  blocked_seconds: number;
  granted: boolean;
}

export function createRateBudget(sql: Sql, options: RateBudgetOptions): RateBudget {
  const { name } = options;
  const rpm = positive(options.requestsPerMinute, 'requestsPerMinute');
  const tpm = positive(options.tokensPerMinute, 'tokensPerMinute');
  const maxWaitMs = options.maxWaitMs ?? 900_000;
  const requestsBucket = `${name}:requests`;
  const tokensBucket = `${name}:tokens`;
  // 'requests' sorts before 'tokens': insert and lock in that order everywhere (no deadlock).
  const [first, second] = [requestsBucket, tokensBucket].sort();
  let created = false;

  async function ensureRows(): Promise<void> {
    await sql`
      insert into docpipe.rate_buckets (name, tokens, updated_at)
      values (${requestsBucket}, ${rpm}::float8, clock_timestamp()), (${tokensBucket}, ${tpm}::float8, clock_timestamp())
      on conflict (name) do nothing`;
    created = true;
  }

  /** One attempt: deducts and returns null, or returns the seconds to wait. */
  async function tryTake(requests: number, tokens: number): Promise<number | null> {
    const rows = await sql<BucketState[]>`
      with params (name, cap, rate, cost) as (
        values (${requestsBucket}::text, ${rpm}::float8, ${rpm / 60}::float8, ${requests}::float8),
               (${tokensBucket}::text, ${tpm}::float8, ${tpm / 60}::float8, ${tokens}::float8)
      ),
      locked as (
        select b.name, b.tokens, b.updated_at, b.blocked_until
        from docpipe.rate_buckets b
        where b.name in (${first!}, ${second!})
        order by b.name
        for update
      ),
      state as (
        select p.name, p.cost, p.rate,
          least(p.cap, l.tokens + p.rate * greatest(0, extract(epoch from clock_timestamp() - l.updated_at)::float8)) as available,
          coalesce(greatest(0, extract(epoch from l.blocked_until - clock_timestamp())::float8), 0) as blocked_seconds
        from locked l join params p using (name)
      ),
      decision as (
        select count(*) = 2 and bool_and(available >= cost) and bool_and(blocked_seconds <= 0) as granted from state
      ),
      spent as (
        update docpipe.rate_buckets b
        set tokens = least(p.cap, b.tokens + p.rate * greatest(0, extract(epoch from clock_timestamp() - b.updated_at)::float8)) - p.cost,
            updated_at = greatest(b.updated_at, clock_timestamp())
        from params p, decision d
        where d.granted and b.name = p.name
        returning b.name
      )
      select s.name, s.available, s.cost, s.rate, s.blocked_seconds, d.granted
      from state s cross join decision d`;
    if (rows.length < 2) return -1; // rows missing: create them, then try again
    if (rows[0]!.granted) return null;
    let wait = 0;
    for (const row of rows) {
      wait = Math.max(wait, row.blocked_seconds, (row.cost - row.available) / row.rate);
    }
    return wait;
  }

  return {
    async acquire(cost, signal) {
      // Clamped to capacity: such a cost passes once the bucket is full, never sooner.
      const requests = clamp(cost.requests, rpm);
      const tokens = clamp(cost.tokens, tpm);
      const started = performance.now();
      let waited = 0;
      for (let attempt = 0; ; attempt++) {
        signal?.throwIfAborted();
        if (!created) await ensureRows();
        const waitSeconds = await tryTake(requests, tokens);
        if (waitSeconds === null) break;
        if (waitSeconds < 0) {
          if (attempt > 3) throw new Error(`rate budget ${name}: its rows cannot be created`);
          created = false;
          continue;
        }
        const waitMs = Math.max(MIN_SLEEP_MS, waitSeconds * 1000) * (1 + Math.random() * JITTER);
        waited = performance.now() - started;
        if (waited + waitMs > maxWaitMs) {
          rateBudgetWait.observe({ bucket: name }, waited / 1000);
          throw new ProviderError(
            'RATE_BUDGET_EXHAUSTED',
            `rate budget ${name}: no capacity within ${Math.round(maxWaitMs / 1000)} s (next in ${Math.ceil(waitMs)} ms)`,
            false,
            { retryAfterMs: Math.ceil(waitMs) },
          );
        }
        await sleep(waitMs, undefined, signal ? { signal } : undefined).catch((err: unknown) => {
          throw signal?.aborted ? signal.reason : err;
        });
      }
      waited = performance.now() - started;
      rateBudgetWait.observe({ bucket: name }, waited / 1000);
      return waited;
    },

    async block(untilMs) {
      const delayMs = untilMs - Date.now();
      if (!(delayMs > 0)) return;
      // One row carries the block (acquire reads both): a one-row update cannot deadlock.
      await sql`
        insert into docpipe.rate_buckets as b (name, tokens, updated_at, blocked_until)
        values (${requestsBucket}, ${rpm}::float8, clock_timestamp(), clock_timestamp() + ${delayMs / 1000}::float8 * interval '1 second')
        on conflict (name) do update
        set blocked_until = greatest(coalesce(b.blocked_until, excluded.blocked_until), excluded.blocked_until)`;
    },
  };
}

function positive(value: number, label: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${label} must be a positive number, got ${value}`);
  return value;
}

function clamp(value: number, capacity: number): number {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`rate budget cost must be a non-negative number, got ${value}`);
  return Math.min(value, capacity);
}
