// A worker process killed with SIGKILL in the middle of embedding loses nothing and does
// nothing twice: its job misses its heartbeat, pg-boss retries it on a new worker, and the
// lost attempt is recorded (WORKER_CRASHED). A document whose attempt had made progress
// (chunks recorded) resumes at the next batch and ends ready with exactly one DocumentChunked,
// one EmbeddingBatchStored per batch and one DocumentReady. A document whose attempt had made
// none is not handed out blindly again (it may be what killed the worker): it fails with
// WORKER_CRASHED, and a reprocess brings it to ready. The second worker then drains and exits
// 0 on SIGTERM.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { api, spawnCli, startStack, upload, waitForStatus, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

/** ~`bytes` of varied, deterministic prose (a seeded generator, so every run chunks alike). */
function largeText(seed: number, bytes: number): string {
  const subjects = ['The keeper', 'A relief crew', 'The inspector', 'An engineer', 'The lamp', 'The fog signal', 'A supply boat', 'The lens'];
  const verbs = ['recorded', 'repaired', 'polished', 'inspected', 'replaced', 'logged', 'tested', 'painted'];
  const objects = ['the brass fittings', 'the clockwork', 'the oil store', 'the gallery rail', 'the storm panes', 'the landing stage', 'the rain gauge', 'the signal gun'];
  const times = ['before dawn', 'at low water', 'during the gale', 'after the watch', 'in the spring', 'by lamplight', 'at noon', 'on the ebb tide'];
  let state = seed >>> 0 || 1;
  const next = (n: number) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
  const paragraphs: string[] = [];
  let size = 0;
  for (let p = 0; size < bytes; p++) {
    const sentences: string[] = [];
    for (let i = 0; i < 6; i++) {
      sentences.push(`${subjects[next(8)]} ${verbs[next(8)]} ${objects[next(8)]} ${times[next(8)]} in year ${1800 + next(200)}, entry ${p}.${i}.`);
    }
    const paragraph = sentences.join(' ');
    paragraphs.push(paragraph);
    size += paragraph.length + 2;
  }
  return paragraphs.join('\n\n') + '\n';
}

/** Keeps the child's output drained (a full pipe would block it) and its tail for diagnostics. */
function capture(child: ChildProcess): () => string {
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-8_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail;
}

async function exited(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode };
  const result = await Promise.race([
    once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null })),
    sleep(timeoutMs).then(() => null),
  ]);
  if (!result) throw new Error(`the worker child (pid ${child.pid}) did not exit within ${timeoutMs} ms`);
  return result;
}

async function statuses(stack: TestStack, ids: string[]): Promise<Json[]> {
  const call = api(stack);
  return Promise.all(
    ids.map(async (id) => {
      const res = await call(`/v1/documents/${id}`);
      assert.equal(res.status, 200);
      return (await res.json()) as Json;
    }),
  );
}

test('a worker killed mid-embedding is replaced; documents with progress resume and end ready with each batch stored once, the others fail WORKER_CRASHED', { timeout: 240_000 }, async (t) => {
  const stack = await startStack({
    worker: false,
    env: { EMBED_BATCH_SIZE: '1', CHUNK_MAX_TOKENS: '32', CHUNK_OVERLAP_TOKENS: '4' },
  });

  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await upload(stack, Buffer.from(largeText(i + 1, 60_000)), `logbook-${i}.txt`);
    const body = (await res.json()) as Json;
    assert.equal(res.status, 202, JSON.stringify(body));
    ids.push(body.id);
  }

  const first = spawnCli('worker', stack.env);
  const firstOutput = capture(first);

  // Wait until a document is part-way through its embedding batches.
  let caught: Json | undefined;
  const deadline = Date.now() + 60_000;
  while (!caught) {
    if (first.exitCode !== null || first.signalCode !== null) {
      throw new Error(`the first worker exited early (${first.exitCode ?? first.signalCode}):\n${firstOutput()}`);
    }
    if (Date.now() > deadline) throw new Error(`no document reached mid-embedding in time; worker output:\n${firstOutput()}`);
    const docs = await statuses(stack, ids);
    caught = docs.find((d) => d.status === 'embedding' && d.embeddingBatches.done > 0 && d.embeddingBatches.done < d.embeddingBatches.total * 0.8);
    if (!caught) {
      assert.ok(!docs.some((d) => d.status === 'ready'), 'the documents are large enough that none is ready before one is caught mid-embedding');
      await sleep(20);
    }
  }

  assert.ok(first.kill('SIGKILL'));
  const killed = await exited(first, 10_000);
  assert.equal(killed.signal, 'SIGKILL', 'the first worker died by SIGKILL');
  assert.equal(killed.code, null);

  const atKill = await statuses(stack, ids);
  const interrupted = atKill.filter((d) => d.status === 'embedding');
  t.diagnostic(
    `killed the worker with ${caught.id} at batch ${caught.embeddingBatches.done}/${caught.embeddingBatches.total}; at the kill: ` +
      atKill.map((d) => `${d.status} ${d.embeddingBatches.done}/${d.embeddingBatches.total}`).join(', '),
  );
  assert.ok(interrupted.some((d) => d.id === caught!.id), 'the caught document was left mid-embedding by the kill');
  // Nothing moves while no worker runs.
  await sleep(500);
  const still = await statuses(stack, ids);
  assert.deepEqual(still.map((d) => d.version), atKill.map((d) => d.version), 'no progress without a worker');

  const restartedAt = Date.now();
  const second = spawnCli('worker', stack.env);
  const secondOutput = capture(second);

  // The killed worker's jobs are retried once pg-boss sees their heartbeat missed (10 s here,
  // supervised every 2 s, then the retry delay): measure when work resumes.
  for (const resumeDeadline = Date.now() + 60_000; ; await sleep(200)) {
    const now = await statuses(stack, ids);
    if (now.some((d, i) => d.version !== atKill[i]!.version)) break;
    if (Date.now() > resumeDeadline) throw new Error(`no progress 60 s after the second worker started:\n${secondOutput()}`);
  }
  t.diagnostic(`work resumed ${Date.now() - restartedAt} ms after the second worker started`);

  // Which documents the kill cut short without progress: still parsing, or embedding with nothing chunked yet.
  const withoutProgress = new Set(atKill.filter((d) => d.status === 'parsing' || (d.status === 'embedding' && d.chunkCount === 0)).map((d) => d.id as string));
  assert.ok(!withoutProgress.has(caught.id), 'the caught document had made progress');
  const finals: Json[] = [];
  for (const id of ids) {
    let doc: Json;
    try {
      doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: Math.max(1_000, 120_000 - (Date.now() - restartedAt)) });
    } catch (err) {
      throw new Error(`${(err as Error).message}\nsecond worker output:\n${secondOutput()}`);
    }
    if (withoutProgress.has(id)) {
      assert.equal(doc.status, 'failed', `document ${id}, cut short without progress, is not retried blindly`);
      assert.equal(doc.error?.code, 'WORKER_CRASHED');
      const events = ((await (await api(stack)(`/v1/documents/${id}/events`)).json()) as Json).events as Json[];
      assert.deepEqual(events.slice(-2).map((e) => [e.type, e.data.code]), [['StageAttemptFailed', 'WORKER_CRASHED'], ['DocumentFailed', 'WORKER_CRASHED']]);
      // Nothing is lost: a reprocess runs it again.
      assert.equal((await api(stack)(`/v1/documents/${id}/reprocess`, { method: 'POST' })).status, 202);
      doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 60_000 });
      assert.equal(doc.status, 'ready', `document ${id} reprocessed: ${JSON.stringify(doc.error)}`);
      t.diagnostic(`document ${id} was cut short without progress: failed WORKER_CRASHED, then reprocessed to ready`);
      continue;
    }
    assert.equal(doc.status, 'ready', `document ${id} ended ${doc.status}: ${JSON.stringify(doc.error)}`);
    finals.push(doc);
  }
  t.diagnostic(`all documents ready ${Date.now() - restartedAt} ms after the second worker started`);

  for (const doc of finals) {
    const id = doc.id as string;
    assert.equal(doc.progress, 100);
    assert.equal(doc.embeddingBatches.total, doc.chunkCount, 'one chunk per batch');
    assert.equal(doc.embeddingBatches.done, doc.embeddingBatches.total);
    assert.ok(doc.chunkCount > 100, `a large document makes many chunks (${doc.chunkCount})`);

    const chunks = await stack.db.sql<{ chunk_index: number; run: number; dims: number | null }[]>`
      select chunk_index, run, array_length(embedding, 1) as dims
      from docpipe.document_chunks where document_id = ${id} order by chunk_index`;
    assert.equal(chunks.length, doc.chunkCount, 'chunk rows = chunkCount');
    assert.deepEqual(chunks.map((c) => c.chunk_index), Array.from({ length: doc.chunkCount }, (_, i) => i), 'contiguous, no duplicates');
    const missing = chunks.filter((c) => c.dims !== stack.config.embedder.dimensions).map((c) => c.chunk_index);
    assert.deepEqual(missing, [], 'every chunk has an embedding');
    assert.ok(chunks.every((c) => c.run === 1));

    const events = await stack.db.sql<{ type: string; batch: number | null; run: number | null; code: string | null }[]>`
      select type, (data->>'batch')::int as batch, (data->>'run')::int as run, data->>'code' as code
      from docpipe.events where stream_id = ${id} order by stream_version`;
    const count = (type: string) => events.filter((e) => e.type === type).length;
    assert.equal(count('DocumentChunked'), 1, 'chunked exactly once');
    assert.equal(count('DocumentReady'), 1, 'ready exactly once');
    assert.equal(count('DocumentFailed'), 0);
    const batches = events.filter((e) => e.type === 'EmbeddingBatchStored').map((e) => e.batch);
    assert.deepEqual(batches, Array.from({ length: doc.embeddingBatches.total }, (_, i) => i), 'each batch stored exactly once, in order');
    assert.ok(events.every((e) => e.run === null || e.run === 1));
    if (interrupted.some((d) => d.id === id)) {
      assert.ok(doc.attempts.embed >= 2, `the interrupted document was resumed by a second embed attempt (attempts.embed = ${doc.attempts.embed})`);
      assert.ok(count('EmbeddingStarted') >= 2);
      assert.equal(events.filter((e) => e.type === 'StageAttemptFailed' && e.code === 'WORKER_CRASHED').length, 1, 'the lost attempt is in the history');
    }
  }

  await t.test('SIGTERM drains the second worker, which exits 0 within the shutdown timeout', async () => {
    assert.ok(second.kill('SIGTERM'));
    const stopped = await exited(second, stack.config.shutdownTimeoutMs + 5_000);
    assert.equal(stopped.signal, null, `the second worker exited by itself, not by ${stopped.signal}`);
    assert.equal(stopped.code, 0, `graceful drain exits 0, got ${stopped.code}; output:\n${secondOutput()}`);
  });
});
