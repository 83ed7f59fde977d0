// Natural batching: an idle batcher runs an item at once and alone; items arriving while a
// batch runs go together in the next, up to maxBatch; a failed batch rejects only its items.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createBatcher } from '../../src/util/batcher.ts';

test('idle: one item runs alone, at once', async () => {
  const batches: number[][] = [];
  const b = createBatcher<number, number>(async (items) => (batches.push(items), items.map((x) => x * 2)), { maxBatch: 10 });
  assert.equal(await b.submit(3), 6);
  assert.deepEqual(batches, [[3]]);
  assert.equal(b.pending, 0);
});

test('items that arrive while a batch runs go together, in order, up to maxBatch', async () => {
  const batches: number[][] = [];
  const b = createBatcher<number, string>(async (items) => {
    batches.push(items);
    await sleep(20);
    return items.map(String);
  }, { maxBatch: 4 });
  const first = b.submit(0);
  await sleep(1);
  const rest = Array.from({ length: 9 }, (_, i) => b.submit(i + 1));
  assert.equal(b.pending, 10);
  assert.deepEqual(await Promise.all([first, ...rest]), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  assert.deepEqual(batches, [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]);
});

test('a failed batch rejects its own items only; the next batch still runs', async () => {
  const b = createBatcher<number, number>(async (items) => {
    await sleep(5);
    if (items.includes(1)) throw new Error('boom');
    return items;
  }, { maxBatch: 1 });
  const results = await Promise.allSettled([b.submit(1), b.submit(2)]);
  assert.equal(results[0]!.status, 'rejected');
  assert.deepEqual(results[1], { status: 'fulfilled', value: 2 });
});

test('a batch that answers the wrong number of results rejects its items', async () => {
  const b = createBatcher<number, number>(async () => [], { maxBatch: 5 });
  await assert.rejects(b.submit(1), /0 results for 1 items/);
});

test('concurrency: up to N batches run at once, each item in exactly one', async () => {
  let inFlight = 0;
  let most = 0;
  const seen: number[] = [];
  const b = createBatcher<number, number>(async (items) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await sleep(10);
    seen.push(...items);
    inFlight--;
    return items.map((x) => -x);
  }, { maxBatch: 3, concurrency: 2 });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => b.submit(i)));
  assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => -i));
  assert.deepEqual([...seen].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
  assert.equal(most, 2);
  assert.equal(b.pending, 0);
});
