// A deploy stops the worker with SIGTERM while a document is being chunked in its sandbox. The
// worker gives running jobs part of its drain budget, then aborts this one: the sandbox task is
// killed, the attempt is recorded as WORKER_SHUTDOWN (not a crash), the worker exits 0 within
// SHUTDOWN_TIMEOUT_MS, and the next worker finishes the document. Nothing fails, nothing is
// done twice.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { api, spawnCli, startStack, upload, waitForStatus } from '../helpers/stack.ts';

type Json = Record<string, any>;

function capture(child: ChildProcess): () => string {
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-8_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail;
}

test('SIGTERM mid-chunking: the attempt is recorded as WORKER_SHUTDOWN, the worker exits 0, the next one finishes the document', { timeout: 180_000 }, async () => {
  const stack = await startStack({ worker: false, env: { SHUTDOWN_TIMEOUT_MS: '4000' } });
  // About 30 MB of prose: several seconds of chunking in the sandbox.
  const sentence = 'The keeper climbed the spiral stair at dusk to light the lamp, and the fog rolled in. ';
  const res = await upload(stack, Buffer.from(sentence.repeat(350_000)), 'long.txt');
  const { id } = (await res.json()) as Json;
  assert.equal(res.status, 202);

  const first = spawnCli('worker', stack.env);
  const output = capture(first);
  const call = api(stack);
  for (const deadline = Date.now() + 60_000; ; await sleep(50)) {
    const doc = (await (await call(`/v1/documents/${id}`)).json()) as Json;
    if (doc.status === 'embedding' && doc.chunkCount === 0) break; // chunking is under way
    assert.ok(doc.status !== 'ready' && doc.status !== 'failed', `the document finished before the stop: ${doc.status}`);
    if (Date.now() > deadline) throw new Error(`the document never reached chunking:\n${output()}`);
  }
  await sleep(300);
  const stopping = performance.now();
  first.kill('SIGTERM');
  const [code, signal] = (await Promise.race([once(first, 'exit'), sleep(15_000).then(() => [null, 'TIMEOUT'])])) as [number | null, string | null];
  const stopMs = performance.now() - stopping;
  assert.equal(signal, null, `the worker exited by itself:\n${output()}`);
  assert.equal(code, 0, `a drained worker exits 0:\n${output()}`);
  assert.ok(stopMs < stack.config.shutdownTimeoutMs, `it stopped within SHUTDOWN_TIMEOUT_MS (${stopMs.toFixed(0)} ms)`);

  const interrupted = ((await (await call(`/v1/documents/${id}/events`)).json()) as Json).events as Json[];
  const last = interrupted.at(-1)!;
  assert.equal(last.type, 'StageAttemptFailed', `the aborted attempt is recorded: ${interrupted.map((e) => e.type).join(', ')}`);
  assert.equal(last.data.code, 'WORKER_SHUTDOWN');
  assert.equal(last.data.stage, 'embed');

  const second = spawnCli('worker', stack.env);
  const secondOutput = capture(second);
  let doc: Json;
  try {
    doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 120_000 });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${secondOutput()}`);
  }
  assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
  const events = ((await (await call(`/v1/documents/${id}/events`)).json()) as Json).events as Json[];
  const codes = events.filter((e) => e.type === 'StageAttemptFailed').map((e) => e.data.code);
  assert.deepEqual(codes, ['WORKER_SHUTDOWN'], 'one interrupted attempt, and no crash');
  assert.equal(events.filter((e) => e.type === 'DocumentChunked').length, 1, 'chunked once');
  assert.equal(events.filter((e) => e.type === 'DocumentFailed').length, 0);
  second.kill('SIGTERM');
  await once(second, 'exit');
});
