// Row "~10,000 uploads sending 1 byte per second" (today: 20,000 file descriptors, /healthz dead
// for 15 s, EMFILE 500s, 12,985 error-level log lines with stacks): against `docpipe all`, uploads
// that trickle are refused or cut off early while other clients are served. One careless client
// opens 10,000 of them; then 200 users open one each, more than the process takes at once.
import assert from 'node:assert/strict';
import net from 'node:net';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { accepted, finalState, openFiles, startAll, watchHealth, type AllProcess } from './harness.ts';

const all = await startAll({ MAX_CONNECTIONS: '1000', UPLOAD_CONCURRENCY_PER_USER: '4', UPLOAD_CONCURRENCY_MAX: '64', UPLOAD_MIN_BYTES_PER_SECOND: '1024' });
const port = Number(new URL(all.apiUrl).port);
const sample = await readFile(new URL('../fixtures/sample.pdf', import.meta.url));

interface Trickle {
  socket: net.Socket;
  /** The status line's code, once an answer arrived. */
  status: number | null;
  answeredAfterMs: number | null;
  closed: boolean;
  openedAt: number;
}

/** Opens an upload that declares 1 MB and then sends one byte of it per second. */
function trickle(token: string, onConnectError: () => void): Trickle {
  const boundary = '----trickle';
  const socket = net.connect({ port, host: '127.0.0.1' });
  const t: Trickle = { socket, status: null, answeredAfterMs: null, closed: false, openedAt: performance.now() };
  socket.setNoDelay(true);
  socket.on('error', () => {
    if (t.status === null) onConnectError();
  });
  socket.on('close', () => {
    t.closed = true;
  });
  let head = '';
  socket.on('data', (chunk) => {
    if (t.status !== null) return;
    head += chunk.toString('latin1');
    const match = /^HTTP\/1\.1 (\d{3})/.exec(head);
    if (match) {
      t.status = Number(match[1]);
      t.answeredAfterMs = performance.now() - t.openedAt;
    }
  });
  socket.write(
    `POST /v1/documents HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n` +
      `content-type: multipart/form-data; boundary=${boundary}\r\ncontent-length: 1048576\r\n\r\n` +
      `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="slow.txt"\r\ncontent-type: text/plain\r\n\r\n`,
  );
  return t;
}

/** Sends one more byte on every open trickle, once a second, until `untilMs`. */
async function dripUntil(trickles: Trickle[], untilMs: number): Promise<void> {
  while (performance.now() < untilMs) {
    for (const t of trickles) if (!t.closed && !t.socket.destroyed) t.socket.write('a');
    await sleep(1_000);
  }
}

async function tmpFiles(): Promise<string[]> {
  return readdir(path.join(all.storageDir, '.tmp')).catch(() => []);
}

/** Uploads a normal document as another user and waits for it: the service still serves. */
async function normalUploadWorks(sub: string): Promise<void> {
  const id = await accepted(all, sample, 'normal.pdf', sub);
  const doc = await finalState(all, id, 60_000, sub);
  assert.equal(doc.status, 'ready');
}

function levels(all: AllProcess): { errors: number; warnings: number; withStack: number } {
  const lines = all.logs();
  return {
    errors: lines.filter((l) => l.level >= 50).length,
    warnings: lines.filter((l) => l.level === 40).length,
    withStack: lines.filter((l) => typeof l.err?.stack === 'string').length,
  };
}

test('one client opens 10,000 trickling uploads: 4 are taken, the rest refused at once, the 4 cut off; others are served throughout', { timeout: 180_000 }, async (t) => {
  const baselineFds = await openFiles(all.pid);
  const logsBefore = levels(all);
  const health = watchHealth(all.apiUrl);
  const token = all.token('careless-client');
  const trickles: Trickle[] = [];
  let connectErrors = 0;
  let peakFds = 0;
  const fdWatch = setInterval(() => void openFiles(all.pid).then((n) => (peakFds = Math.max(peakFds, n)), () => {}), 200);
  const started = performance.now();
  try {
    // 1,000 new connections a second for 10 s, each dripping a byte a second.
    const drip = dripUntil(trickles, started + 25_000);
    for (let second = 0; second < 10; second++) {
      for (let i = 0; i < 1_000; i++) trickles.push(trickle(token, () => connectErrors++));
      if (second === 5) await normalUploadWorks('bystander-1');
      await sleep(Math.max(0, started + (second + 1) * 1_000 - performance.now()));
    }
    await drip;
  } finally {
    clearInterval(fdWatch);
    for (const tr of trickles) tr.socket.destroy();
  }
  const report = await health.stop();
  const byStatus = new Map<string, number>();
  for (const tr of trickles) byStatus.set(String(tr.status ?? (tr.closed ? 'closed' : 'open')), (byStatus.get(String(tr.status ?? (tr.closed ? 'closed' : 'open'))) ?? 0) + 1);
  const refusedLate = trickles.filter((tr) => tr.status === 429 && tr.answeredAfterMs! > 2_000).length;
  t.diagnostic(`answers: ${JSON.stringify(Object.fromEntries(byStatus))}; connect errors ${connectErrors}; refused later than 2 s: ${refusedLate}`);
  t.diagnostic(`/healthz max ${report.maxMs.toFixed(0)} ms over ${report.samples} probes; open files ${baselineFds} -> peak ${peakFds}`);

  assert.equal(report.failures, 0, '/healthz always answered within 1 s');
  assert.ok(report.maxMs < 1_000);
  assert.equal(byStatus.get('429') !== undefined && byStatus.get('429')! >= 9_000, true, 'nearly all were refused with 429 TOO_MANY_UPLOADS');
  assert.ok((byStatus.get('408') ?? 0) <= 8, 'only a few, within the per-user cap at any time, were taken, then cut off');
  assert.equal(byStatus.get('open') ?? 0, 0, 'none left hanging without an answer or a close');
  assert.ok(peakFds < baselineFds + 1_100, `file descriptors stay bounded (${peakFds})`);
  assert.deepEqual(await tmpFiles(), [], 'no temp file left behind');
  await normalUploadWorks('bystander-2');
  const logs = levels(all);
  assert.equal(logs.errors - logsBefore.errors, 0, 'no error-level log line');
  assert.equal(logs.withStack - logsBefore.withStack, 0, 'no stack trace logged for a client\'s doing');
});

test('200 users open one trickling upload each: 64 are taken and cut off within 25 s, the rest answered 503 at once', { timeout: 120_000 }, async (t) => {
  const health = watchHealth(all.apiUrl);
  const trickles = Array.from({ length: 200 }, (_, i) => trickle(all.token(`user-${i}`), () => {}));
  const started = performance.now();
  await dripUntil(trickles, started + 25_000);
  const report = await health.stop();
  for (const tr of trickles) tr.socket.destroy();
  const count = (status: number) => trickles.filter((tr) => tr.status === status).length;
  t.diagnostic(`503: ${count(503)}, 408: ${count(408)}, other: ${trickles.filter((tr) => ![503, 408].includes(tr.status ?? 0)).map((tr) => tr.status)}`);
  assert.equal(count(503), 136, 'past the process-wide cap: 503 SERVER_BUSY');
  assert.equal(count(408), 64, 'the taken ones are cut off for sending under UPLOAD_MIN_BYTES_PER_SECOND');
  assert.ok(trickles.filter((tr) => tr.status === 408).every((tr) => tr.answeredAfterMs! < 22_000), 'cut off within two windows');
  assert.equal(report.failures, 0);
  assert.ok(report.maxMs < 1_000);
  assert.deepEqual(await tmpFiles(), [], 'no temp file left behind');
  await normalUploadWorks('bystander-3');
});
