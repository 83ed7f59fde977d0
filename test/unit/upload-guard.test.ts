// The upload guard: per-user and global caps with their codes, slots released when the
// response closes, and the minimum-rate sweeper (on fake requests and a short window).
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { createUploadGuard, untilAborted } from '../../src/services/api/upload-guard.ts';
import { HttpError } from '../../src/services/errors.ts';

interface Fake {
  request: FastifyRequest;
  reply: FastifyReply;
  raw: { complete: boolean; readableFlowing: boolean | null; socket: { bytesRead: number } };
  close(): void;
}

function fake(): Fake {
  const raw = { complete: false, readableFlowing: true as boolean | null, socket: { bytesRead: 0 } };
  const res = new EventEmitter();
  return {
    request: { raw } as unknown as FastifyRequest,
    reply: { raw: res } as unknown as FastifyReply,
    raw,
    close: () => res.emit('close'),
  };
}

const refusedWith = (status: number, code: string) => (err: unknown) =>
  err instanceof HttpError && err.statusCode === status && err.code === code && Number(err.headers['retry-after']) > 0 && err.headers.connection === 'close';

test('per-user cap -> 429 TOO_MANY_UPLOADS; global cap -> 503 SERVER_BUSY; slots come back when responses close', () => {
  const guard = createUploadGuard({ perUser: 2, max: 3, minBytesPerSecond: 0 });
  const a1 = fake();
  const a2 = fake();
  guard.admit(a1.request, a1.reply, 'a');
  guard.admit(a2.request, a2.reply, 'a');
  assert.throws(() => guard.admit(fake().request, fake().reply, 'a'), refusedWith(429, 'TOO_MANY_UPLOADS'));
  const b1 = fake();
  guard.admit(b1.request, b1.reply, 'b');
  assert.equal(guard.active, 3);
  assert.throws(() => guard.admit(fake().request, fake().reply, 'c'), refusedWith(503, 'SERVER_BUSY'));
  assert.throws(() => guard.admit(fake().request, fake().reply, null), refusedWith(503, 'SERVER_BUSY'), 'the signed-URL route counts too');

  a1.close();
  a1.close(); // a second close event releases nothing more
  assert.equal(guard.active, 2);
  const a3 = fake();
  guard.admit(a3.request, a3.reply, 'a');
  assert.throws(() => guard.admit(fake().request, fake().reply, 'a'), refusedWith(429, 'TOO_MANY_UPLOADS'));
  guard.close();
});

test('a body below the minimum rate over the window is cut off (408 UPLOAD_TOO_SLOW); a fast one, a paused one and a complete one are not', async () => {
  const guard = createUploadGuard({ perUser: 10, max: 10, minBytesPerSecond: 1000, windowSeconds: 0.2, sweepIntervalMs: 20 });
  const slow = fake();
  const fast = fake();
  const paused = fake();
  const complete = fake();
  const leases = [slow, fast, paused, complete].map((f, i) => guard.admit(f.request, f.reply, `u${i}`));
  paused.raw.readableFlowing = false; // our own backpressure: not the client's fault
  complete.raw.complete = true;
  const feed = setInterval(() => {
    slow.raw.socket.bytesRead += 1; // 50 B/s
    fast.raw.socket.bytesRead += 100; // 5,000 B/s
  }, 20);
  try {
    await sleep(600);
  } finally {
    clearInterval(feed);
  }
  const [s, f, p, c] = leases.map((l) => l.signal);
  assert.equal(s!.aborted, true, 'the slow body is cut off');
  const reason = s!.reason as HttpError;
  assert.deepEqual([reason.statusCode, reason.code, reason.headers.connection], [408, 'UPLOAD_TOO_SLOW', 'close']);
  assert.match(reason.message, /1000 bytes per second over 0\.2 s/);
  assert.equal(f!.aborted, false);
  assert.equal(p!.aborted, false);
  assert.equal(c!.aborted, false);
  for (const x of [slow, fast, paused, complete]) x.close();
  assert.equal(guard.active, 0);
  guard.close();
});

test('minBytesPerSecond 0 disables the rate check', async () => {
  const guard = createUploadGuard({ perUser: 1, max: 1, minBytesPerSecond: 0, windowSeconds: 0.05, sweepIntervalMs: 10 });
  const idle = fake();
  const lease = guard.admit(idle.request, idle.reply, 'u');
  await sleep(150);
  assert.equal(lease.signal.aborted, false);
  idle.close();
  guard.close();
});

test('untilAborted: settles like the promise, or rejects with the reason at the abort', async () => {
  const controller = new AbortController();
  assert.equal(await untilAborted(Promise.resolve(1), controller.signal), 1);
  await assert.rejects(untilAborted(Promise.reject(new Error('boom')), controller.signal), /boom/);
  const never = new Promise<number>(() => {});
  const pending = untilAborted(never, controller.signal);
  controller.abort(new Error('stop'));
  await assert.rejects(pending, /stop/);
  // Already aborted: rejects at once, and a later rejection of the promise is not unhandled.
  await assert.rejects(untilAborted(sleep(5).then(() => Promise.reject(new Error('late'))), controller.signal), /stop/);
  await sleep(10);
});
