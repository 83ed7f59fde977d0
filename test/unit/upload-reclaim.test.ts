// The upload guard's memory reclaim: every `reclaimEveryBytes` of body counted through
// UploadLease.received, one minor GC (observed as V8 reports it, through perf_hooks); none
// below the threshold, none when it is 0.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { createUploadGuard, exposeGc } from '../../src/services/api/upload-guard.ts';

function admitted(reclaimEveryBytes: number) {
  const guard = createUploadGuard({ perUser: 10, max: 10, minBytesPerSecond: 0, reclaimEveryBytes });
  const raw = { complete: false, readableFlowing: true, socket: { bytesRead: 0 } };
  const res = new EventEmitter();
  const lease = guard.admit({ raw } as unknown as FastifyRequest, { raw: res } as unknown as FastifyReply, 'u');
  return { lease, close: () => (res.emit('close'), guard.close()) };
}

/** Minor GCs V8 reports while `run` runs (entries arrive asynchronously: waited for). */
async function minorGcsDuring(run: () => void): Promise<number> {
  let minor = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor++;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  run();
  await sleep(100);
  observer.disconnect();
  return minor;
}

test('gc is available to the process, with or without --expose-gc', () => {
  assert.equal(typeof exposeGc(), 'function');
});

test('one minor GC per reclaimEveryBytes of body, none below it, none when off', async () => {
  const on = admitted(1024 * 1024);
  // 40 MiB in 64 KiB chunks: 40 collections. A few natural ones may come on top, not fewer.
  const forced = await minorGcsDuring(() => {
    for (let i = 0; i < 640; i++) on.lease.received(64 * 1024);
  });
  assert.ok(forced >= 40 && forced <= 45, `minor GCs: ${forced}`);
  // 960 KiB more: below the threshold (the counter restarted at the last collection).
  const below = await minorGcsDuring(() => {
    for (let i = 0; i < 15; i++) on.lease.received(64 * 1024);
  });
  assert.ok(below <= 2, `minor GCs below the threshold: ${below}`);
  on.close();

  const off = admitted(0);
  const none = await minorGcsDuring(() => {
    for (let i = 0; i < 640; i++) off.lease.received(64 * 1024);
  });
  assert.ok(none <= 2, `minor GCs with the reclaim off: ${none}`);
  off.close();
});
