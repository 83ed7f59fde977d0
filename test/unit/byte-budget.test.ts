import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createByteBudget } from '../../src/util/byte-budget.ts';

const settled = async <T>(p: Promise<T>) => Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => setImmediate(() => r(false)))]);

test('grants while the bytes fit; the next waits for a release, in order', async () => {
  const budget = createByteBudget(100);
  const a = await budget.acquire(60);
  const b = await budget.acquire(40);
  assert.equal(budget.inUse(), 100);
  const c = budget.acquire(50);
  const d = budget.acquire(10);
  assert.equal(await settled(c), false);
  assert.equal(await settled(d), false, 'a small job does not overtake the larger one ahead of it');
  assert.equal(budget.waiting(), 2);
  a();
  const releaseC = await c;
  const releaseD = await d;
  assert.equal(budget.inUse(), 100);
  b();
  releaseC();
  releaseD();
  releaseD(); // twice is harmless
  assert.equal(budget.inUse(), 0);
});

test('a document larger than the whole budget runs alone', async () => {
  const budget = createByteBudget(100);
  const small = await budget.acquire(10);
  const huge = budget.acquire(500);
  assert.equal(await settled(huge), false);
  small();
  const release = await huge;
  assert.equal(budget.inUse(), 500);
  const next = budget.acquire(1);
  assert.equal(await settled(next), false, 'nothing runs beside it');
  release();
  (await next)();
});

test('an aborted waiter leaves the queue and rejects with the signal\'s reason', async () => {
  const budget = createByteBudget(10);
  const held = await budget.acquire(10);
  const controller = new AbortController();
  const waiting = budget.acquire(5, controller.signal);
  controller.abort(new Error('shutting down'));
  await assert.rejects(waiting, /shutting down/);
  assert.equal(budget.waiting(), 0);
  held();
  assert.equal(budget.inUse(), 0);
  await assert.rejects(budget.acquire(1, AbortSignal.abort(new Error('already'))), /already/);
});
