// How WORKER_CONCURRENCY and WORKER_BATCH_SIZE become pg-boss fetch loops and batch sizes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { batchPlan } from '../../src/services/worker/worker.ts';

test('never more jobs in flight than WORKER_CONCURRENCY, batches no larger than WORKER_BATCH_SIZE', () => {
  for (let concurrency = 1; concurrency <= 256; concurrency++) {
    for (const maxBatch of [1, 2, 3, 8, 16, 64, 256]) {
      const { fetchers, batchSize } = batchPlan(concurrency, maxBatch);
      assert.ok(fetchers >= 1 && batchSize >= 1, `${concurrency}/${maxBatch}`);
      assert.ok(fetchers * batchSize <= concurrency, `${concurrency}/${maxBatch}: ${fetchers} x ${batchSize}`);
      assert.ok(batchSize <= maxBatch, `${concurrency}/${maxBatch}: batch ${batchSize}`);
      // Rounding loses at most one job per fetch loop.
      assert.ok(fetchers * batchSize > concurrency - fetchers, `${concurrency}/${maxBatch}: ${fetchers} x ${batchSize}`);
    }
  }
});

test('two fetch loops where the concurrency allows, so one slow batch never holds every slot', () => {
  assert.deepEqual(batchPlan(1, 16), { fetchers: 1, batchSize: 1 });
  assert.deepEqual(batchPlan(4, 16), { fetchers: 2, batchSize: 2 });
  assert.deepEqual(batchPlan(64, 16), { fetchers: 4, batchSize: 16 });
  assert.deepEqual(batchPlan(8, 1), { fetchers: 8, batchSize: 1 });
});
