// The sandbox pool with real child processes: results come back, and every way a task can go
// wrong (memory outside and inside the V8 heap, time, a crash, an abort) kills only its child,
// fails only that task with the right reason, and leaves the pool serving the next one.
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { test } from 'node:test';
import { createLogger } from '../../src/observability/logger.ts';
import { createSandbox, SandboxAbortedError, SandboxTaskError, SandboxUnavailableError, type Sandbox } from '../../src/providers/sandbox/pool.ts';
import { rebuildError } from '../../src/providers/sandbox/tasks.ts';
import { createSandboxedParser } from '../../src/providers/sandbox/sandboxed.ts';
import { DEFAULT_PARSER_LIMITS, DocumentLimitError, DocumentTooComplexError, UnparseableDocumentError } from '../../src/providers/types.ts';
import type { TestTask } from '../helpers/sandbox-child.ts';

const logger = createLogger('silent');
const entry = new URL('../helpers/sandbox-child.ts', import.meta.url);

function pool(t: { after(fn: () => Promise<void>): void }, options: Partial<{ processes: number; memoryMb: number; timeoutMs: number }> = {}): Sandbox {
  const sandbox = createSandbox({ entry, processes: 2, memoryMb: 256, timeoutMs: 10_000, logger, ...options });
  t.after(() => sandbox.close());
  return sandbox;
}

const run = <T>(sandbox: Sandbox, task: TestTask, signal?: AbortSignal) => sandbox.run<T>(task, { signal });

async function tooComplex(promise: Promise<unknown>, reason: DocumentTooComplexError['reason']): Promise<DocumentTooComplexError> {
  const err = await promise.then(
    () => assert.fail('expected the task to fail'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof DocumentTooComplexError, `expected DocumentTooComplexError, got ${String(err)}`);
  assert.equal(err.reason, reason, err.message);
  assert.equal(err.code, 'DOCUMENT_TOO_COMPLEX');
  return err;
}

test('tasks run in child processes with an empty environment; results and errors come back', async (t) => {
  const sandbox = pool(t);
  assert.deepEqual(await run(sandbox, { kind: 'echo', value: { a: [1, 2], b: new Uint8Array([7, 8]) } }), { a: [1, 2], b: new Uint8Array([7, 8]) });
  assert.deepEqual(await run(sandbox, { kind: 'env' }), [], 'no secret of the worker reaches the child');
  const pid = await run<number>(sandbox, { kind: 'pid' });
  assert.notEqual(pid, process.pid);
  const err = await run(sandbox, { kind: 'throw', name: 'DocumentLimitError', message: 'too many pages' }).catch((e: unknown) => e);
  assert.ok(err instanceof SandboxTaskError);
  assert.equal(err.error.name, 'DocumentLimitError');
});

test('tasks beyond the process count queue and all finish; at most `processes` children exist', async (t) => {
  const sandbox = pool(t, { processes: 2 });
  const started = performance.now();
  const results = await Promise.all(Array.from({ length: 6 }, () => run<string>(sandbox, { kind: 'sleep', ms: 200 })));
  assert.deepEqual(results, Array(6).fill('slept'));
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 550, `6 tasks of 200 ms on 2 processes take three rounds (${elapsed.toFixed(0)} ms)`);
  assert.equal(sandbox.stats().started, 2);
});

test('memory outside the V8 heap (ArrayBuffers) past the limit: the watchdog kills the child, reason memory', async (t) => {
  const sandbox = pool(t, { memoryMb: 200 });
  const err = await tooComplex(run(sandbox, { kind: 'external', mb: 400, holdMs: 5_000 }), 'memory');
  assert.match(err.message, /SANDBOX_MEMORY_MB/);
  assert.equal(await run(sandbox, { kind: 'echo', value: 'next' }), 'next', 'the pool serves the next task');
  assert.equal(sandbox.stats().killed.memory, 1);
});

test('a V8 heap exhausted: the child dies out of memory, reason memory', async (t) => {
  const sandbox = pool(t, { memoryMb: 160 });
  await tooComplex(run(sandbox, { kind: 'heap' }), 'memory');
  assert.equal(await run(sandbox, { kind: 'echo', value: 'still here' }), 'still here');
});

test('a task past the time limit is killed, reason time; a crash is reason crash', async (t) => {
  const sandbox = pool(t, { timeoutMs: 500 });
  const started = performance.now();
  const err = await tooComplex(run(sandbox, { kind: 'spin' }), 'time');
  assert.ok(performance.now() - started < 5_000);
  assert.match(err.message, /SANDBOX_TIMEOUT_SECONDS/);
  await tooComplex(run(sandbox, { kind: 'exit', code: 3 }), 'crash');
  assert.equal(await run(sandbox, { kind: 'echo', value: 1 }), 1);
});

test('a stack overflow inside the child comes back as DOCUMENT_TOO_COMPLEX (stack)', async (t) => {
  const sandbox = pool(t);
  const err = await run(sandbox, { kind: 'recurse' }).catch((e: unknown) => e);
  assert.ok(err instanceof SandboxTaskError);
  const rebuilt = rebuildError(err.error);
  assert.ok(rebuilt instanceof DocumentTooComplexError);
  assert.equal(rebuilt.reason, 'stack');
  assert.ok(rebuildError({ name: 'DocumentLimitError', message: 'm', setting: 'PDF_MAX_PAGES' }) instanceof DocumentLimitError);
  assert.ok(rebuildError({ name: 'TypeError', message: 'x is undefined' }) instanceof UnparseableDocumentError);
});

test('one signal shared by many tasks (the worker\'s shutdown signal) keeps no listener once they are done', async (t) => {
  const sandbox = pool(t, { processes: 2 });
  const controller = new AbortController();
  await Promise.all(Array.from({ length: 20 }, (_, i) => run(sandbox, { kind: 'echo', value: i }, controller.signal)));
  assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
});

test('an abort kills the running task (SandboxAbortedError, not the document\'s fault) and drops a queued one', async (t) => {
  const sandbox = pool(t, { processes: 1 });
  const controller = new AbortController();
  const running = assert.rejects(run(sandbox, { kind: 'spin' }, controller.signal), SandboxAbortedError);
  const queued = assert.rejects(run(sandbox, { kind: 'echo', value: 'never' }, controller.signal), SandboxAbortedError);
  setTimeout(() => controller.abort(), 200);
  await Promise.all([running, queued]);
  assert.equal(sandbox.stats().killed.aborted, 1, 'only the running task had a child to kill');
  assert.equal(await run(sandbox, { kind: 'echo', value: 'after' }), 'after');
  await assert.rejects(run(sandbox, { kind: 'echo', value: 1 }, AbortSignal.abort()), SandboxAbortedError);
});

test('a child left large by a task is replaced; close() ends the children and refuses new tasks', async (t) => {
  const sandbox = pool(t, { processes: 1, memoryMb: 400 });
  const first = await run<number>(sandbox, { kind: 'pid' });
  await run(sandbox, { kind: 'external', mb: 250, holdMs: 0 });
  await new Promise((resolve) => setTimeout(resolve, 200)); // the size check runs beside the next dispatch
  const second = await run<number>(sandbox, { kind: 'pid' });
  assert.notEqual(second, first, 'the grown child was recycled');
  const third = await run<number>(sandbox, { kind: 'pid' });
  assert.equal(third, second, 'a small child is kept');
  await sandbox.close();
  assert.throws(() => process.kill(third, 0), 'the child is gone after close()');
  await assert.rejects(run(sandbox, { kind: 'echo', value: 1 }), SandboxUnavailableError);
});

test('plain text and markdown parse in the worker; every other format goes to the sandbox', async () => {
  // A closed sandbox refuses every task: what still parses did not use it.
  const sandbox = createSandbox({ entry, processes: 1, memoryMb: 256, timeoutMs: 10_000, logger });
  await sandbox.close();
  const parser = createSandboxedParser(sandbox, DEFAULT_PARSER_LIMITS);
  assert.deepEqual(await parser.parse(Buffer.from('a\r\nb'), 'text/plain'), { markdown: 'a\nb', pages: 1 });
  assert.deepEqual(await parser.parse(Buffer.from('# t\r\n'), 'text/markdown'), { markdown: '# t\n', pages: 1 });
  await assert.rejects(parser.parse(Buffer.from('  \n'), 'text/plain'), UnparseableDocumentError);
  await assert.rejects(parser.parse(Buffer.from('<p>x</p>'), 'text/html'), SandboxUnavailableError);
});
