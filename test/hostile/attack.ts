// One hostile upload against a running `docpipe all`, judged as the issue states the bar: the
// bomb ends failed with its code (or ready), a normal document uploaded alongside ends ready,
// /healthz answers within 1 s throughout, and the memory of the service and its sandbox stays
// bounded. Returns the figures; the tests assert on them.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { accepted, eventTypes, finalState, watchHealth, watchMemory, type AllProcess, type HealthReport, type MemoryReport } from './harness.ts';

type Json = Record<string, any>;

export interface AttackResult {
  bomb: Json;
  normal: Json;
  events: string[];
  health: HealthReport;
  memory: MemoryReport;
  seconds: number;
}

const normalDocument = readFile(new URL('../fixtures/sample.pdf', import.meta.url));

/** Uploads `bomb` and, alongside it, a normal PDF; waits for both to finish. */
export async function attack(all: AllProcess, bomb: Buffer | Uint8Array, fileName: string, timeoutMs: number): Promise<AttackResult> {
  const health = watchHealth(all.apiUrl);
  const memory = watchMemory(all.pid);
  const started = performance.now();
  try {
    const bombId = await accepted(all, bomb, fileName);
    const normalId = await accepted(all, await normalDocument, 'alongside.pdf');
    const [bombDoc, normalDoc] = await Promise.all([finalState(all, bombId, timeoutMs), finalState(all, normalId, timeoutMs)]);
    return {
      bomb: bombDoc,
      normal: normalDoc,
      events: await eventTypes(all, bombId),
      health: await health.stop(),
      memory: await memory.stop(),
      seconds: (performance.now() - started) / 1000,
    };
  } catch (err) {
    await health.stop();
    await memory.stop();
    throw new Error(`${(err as Error).message}\n--- docpipe all output ---\n${all.tail()}`, { cause: err });
  }
}

/** The bar every hostile document must clear, whatever it is. */
export function assertSurvived(result: AttackResult, label: string): void {
  const figures = `${label}: ${result.seconds.toFixed(1)} s, /healthz max ${result.health.maxMs.toFixed(0)} ms over ${result.health.samples} probes, ` +
    `RSS peak main ${result.memory.peakMainMb} MB (from ${result.memory.startMainMb}), sandbox ${result.memory.peakChildrenMb} MB`;
  assert.equal(result.health.failures, 0, `/healthz failed to answer within 1 s: ${figures}`);
  assert.ok(result.health.maxMs < 1_000, `/healthz answered within 1 s throughout: ${figures}`);
  // Half its 10 probes a second, after the prober's own start (a child process: up to about
  // 0.5 s), and at least one: a document now can be done in well under a second.
  const expected = Math.max(1, Math.min(10, Math.floor(Math.max(0, result.seconds - 0.5) * 5)));
  assert.ok(result.health.samples >= expected, `the prober ran throughout (${result.health.samples} probes over ${result.seconds.toFixed(2)} s)`);
  assert.equal(result.normal.status, 'ready', `the normal document alongside ended ${result.normal.status}: ${JSON.stringify(result.normal.error)}`);
}

/** A bomb refused by a limit or the sandbox: failed once, with `code`, no retry, no chunk. */
export function assertFailedOnce(result: AttackResult, code: string, message: RegExp): void {
  assert.equal(result.bomb.status, 'failed', `the bomb ended ${result.bomb.status}`);
  assert.equal(result.bomb.error?.code, code, JSON.stringify(result.bomb.error));
  assert.match(result.bomb.error.message, message);
  assert.equal(result.bomb.attempts.parse + result.bomb.attempts.embed <= 2, true, 'one attempt of the stage that failed');
  assert.ok(!result.events.includes('StageAttemptFailed'), `no retried attempt: ${result.events.join(', ')}`);
  assert.equal(result.events.filter((e) => e === 'DocumentFailed').length, 1);
  assert.equal(result.bomb.chunkCount, 0);
}
