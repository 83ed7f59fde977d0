// The second line of defence: with the limits raised out of the way, the same bombs reach the
// parser, and the sandbox (a child process with a memory bound, a time limit and its own stack)
// takes the hit. Each document fails once with DOCUMENT_TOO_COMPLEX; `docpipe all` keeps
// answering and finishes the normal document beside it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertFailedOnce, assertSurvived, attack } from './attack.ts';
import { htmlNested, pdfWithInflatingStream, pdfWithPages } from './bombs.ts';
import { startAll } from './harness.ts';

const UNLIMITED = String(2 ** 40);
const all = await startAll({
  PDF_MAX_PAGES: '10000000',
  PDF_MAX_STREAM_BYTES: UNLIMITED,
  PDF_MAX_INFLATED_BYTES: UNLIMITED,
  HTML_MAX_DEPTH: '100000',
  SANDBOX_MEMORY_MB: '512',
  SANDBOX_TIMEOUT_SECONDS: '20',
  MAX_DOCUMENT_TOKENS: '5000',
});

test('HTML nested 100,000 deep past HTML_MAX_DEPTH: the parser overflows its stack in the sandbox; DOCUMENT_TOO_COMPLEX once', { timeout: 120_000 }, async (t) => {
  const result = await attack(all, Buffer.from(htmlNested(100_000)), 'deep.html', 60_000);
  t.diagnostic(`${result.seconds.toFixed(1)} s, /healthz max ${result.health.maxMs.toFixed(0)} ms`);
  assertSurvived(result, 'html stack');
  assertFailedOnce(result, 'DOCUMENT_TOO_COMPLEX', /nested too deeply|stack/);
});

test('a PDF stream inflating to 1 GB past the stream limits: the sandbox is killed at SANDBOX_MEMORY_MB; DOCUMENT_TOO_COMPLEX once', { timeout: 180_000 }, async (t) => {
  const result = await attack(all, await pdfWithInflatingStream(1024 * 1024 * 1024), 'stream.pdf', 120_000);
  t.diagnostic(`${result.seconds.toFixed(1)} s, /healthz max ${result.health.maxMs.toFixed(0)} ms, sandbox peak ${result.memory.peakChildrenMb} MB, service peak ${result.memory.peakMainMb} MB`);
  assertSurvived(result, 'pdf stream in the sandbox');
  assertFailedOnce(result, 'DOCUMENT_TOO_COMPLEX', /SANDBOX_MEMORY_MB|SANDBOX_TIMEOUT_SECONDS/);
  // The watchdog samples every 100 ms: a child can overshoot a little before it is killed.
  assert.ok(result.memory.peakChildrenMb < 512 + 400, `sandbox peak ${result.memory.peakChildrenMb} MB`);
});

test('200,000 pages past PDF_MAX_PAGES: the sandbox runs out of time or memory; DOCUMENT_TOO_COMPLEX once', { timeout: 180_000 }, async (t) => {
  const result = await attack(all, pdfWithPages(200_000), 'pages.pdf', 120_000);
  t.diagnostic(`${result.seconds.toFixed(1)} s, /healthz max ${result.health.maxMs.toFixed(0)} ms, sandbox peak ${result.memory.peakChildrenMb} MB`);
  assertSurvived(result, 'pdf pages in the sandbox');
  assertFailedOnce(result, 'DOCUMENT_TOO_COMPLEX', /SANDBOX_MEMORY_MB|SANDBOX_TIMEOUT_SECONDS|heap/);
});

test('a text past MAX_DOCUMENT_TOKENS fails in the chunking stage with DOCUMENT_LIMIT_EXCEEDED once', { timeout: 120_000 }, async () => {
  const text = Buffer.from('The keeper climbed the spiral stair at dusk to light the lamp. '.repeat(2_000));
  const result = await attack(all, text, 'long.txt', 60_000);
  assertSurvived(result, 'tokens');
  assertFailedOnce(result, 'DOCUMENT_LIMIT_EXCEEDED', /MAX_DOCUMENT_TOKENS/);
  assert.equal(result.bomb.stage, 'embed');
});
