// The LlamaParse adapter against the fake LlamaCloud API over real HTTP, then the fake's own
// webhook behaviour (which the webhook service's tests rely on being faithful).
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { providerRequests } from '../../src/observability/metrics.ts';
import { createLlamaParseParser, type LlamaParseOptions } from '../../src/providers/parser/llamaparse.ts';
import { ProviderError, type AsyncParser, type ProviderJob } from '../../src/providers/types.ts';
import { startFakeLlamaParse, type FakeLlamaParse, type FakeLlamaParseOptions } from '../fakes/llamaparse.ts';

const fixture = (name: string) => readFile(new URL(`../fixtures/${name}`, import.meta.url));
const TEXT = Buffer.from('Plain text about the Bell Rock lighthouse.\n');

// Each test gets its own fake (and receiver), closed afterwards even when the test fails.
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function fakeWith(options: FakeLlamaParseOptions = {}): Promise<FakeLlamaParse> {
  const fake = await startFakeLlamaParse(options);
  cleanups.push(() => fake.close());
  return fake;
}

function adapterFor(fake: FakeLlamaParse, options: Partial<LlamaParseOptions> = {}): AsyncParser {
  return createLlamaParseParser({ apiKey: fake.apiKey, baseUrl: fake.url, timeoutSeconds: 5, ...options });
}

/** Polls until `check` returns a value other than undefined/false, for at most `timeoutMs`. */
async function waitUntil<T>(check: () => T | undefined | false, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

async function waitForStatus(parser: AsyncParser, jobId: string, timeoutMs = 5000): Promise<ProviderJob> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await parser.status(jobId);
    if (job.status !== 'PENDING') return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still PENDING after ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function rejectsWith(promise: Promise<unknown>, expected: { code: string; permanent: boolean; status?: number }): Promise<ProviderError> {
  let caught: unknown;
  await assert.rejects(promise, (err) => ((caught = err), true));
  assert.ok(caught instanceof ProviderError, `expected a ProviderError, got ${String(caught)}`);
  assert.equal(caught.code, expected.code, caught.message);
  assert.equal(caught.permanent, expected.permanent);
  if (expected.status !== undefined) assert.equal(caught.details.status, expected.status);
  return caught;
}

const submitText = (parser: AsyncParser) => parser.submit({ bytes: TEXT, fileName: 'bell-rock.txt', mediaType: 'text/plain', webhook: null });

async function counterValue(operation: string, outcome: string): Promise<number> {
  const metric = await providerRequests.get();
  return metric.values.find((v) => v.labels.provider === 'llamaparse' && v.labels.operation === operation && v.labels.outcome === outcome)?.value ?? 0;
}

// --- the adapter ------------------------------------------------------------------------------

describe('llamaparse adapter', () => {
  test('submit sends the file and webhook_configurations with the terminal events, headers and json format', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const parser = adapterFor(fake, { parseMode: 'parse_page_with_llm' });
    const { jobId } = await parser.submit({
      bytes: await fixture('sample.md'),
      fileName: 'keepers.md',
      mediaType: 'text/markdown',
      webhook: { url: 'http://127.0.0.1:9/v1/webhooks/llamaparse', headers: { 'X-Docpipe-Token': 'doc-credential' } },
    });
    const job = fake.jobs.get(jobId);
    assert.ok(job, 'the fake knows the job');
    assert.equal(job.fileName, 'keepers.md');
    assert.equal(job.mediaType, 'text/markdown');
    assert.equal(job.parseMode, 'parse_page_with_llm');
    assert.equal(job.legacyWebhookUrl, null);
    assert.deepEqual(job.webhookConfig, {
      webhook_url: 'http://127.0.0.1:9/v1/webhooks/llamaparse',
      webhook_events: ['parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled'],
      webhook_headers: { 'X-Docpipe-Token': 'doc-credential' },
      webhook_output_format: 'json',
    });
    assert.equal(fake.calls[0]!.authorization, `Bearer ${fake.apiKey}`);
    assert.equal((await parser.status(jobId)).status, 'PENDING');
  });

  test('without a webhook no webhook_configurations are sent; status and result round-trip', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    const { jobId } = await parser.submit({ bytes: await fixture('sample.pdf'), fileName: 'eddystone.pdf', mediaType: 'application/pdf', webhook: null });
    assert.equal(fake.jobs.get(jobId)!.webhookConfig, null);
    assert.equal(fake.jobs.get(jobId)!.parseMode, null);
    const job = await waitForStatus(parser, jobId);
    assert.deepEqual(job, { id: jobId, status: 'SUCCESS', errorCode: null, errorMessage: null });
    const result = await parser.result(jobId);
    assert.equal(result.pages, 2);
    assert.match(result.markdown, /Henry Winstanley raised[\s\S]*\n---\n[\s\S]*James Douglass/);
  });

  test('organization_id and project_id go on every call; a wrong project is PARSER_FORBIDDEN', async () => {
    const fake = await fakeWith({ requireProjectId: 'proj-1', requireOrganizationId: 'org-1' });
    const parser = adapterFor(fake, { organizationId: 'org-1', projectId: 'proj-1' });
    const { jobId } = await submitText(parser);
    await waitForStatus(parser, jobId);
    await parser.result(jobId);
    assert.deepEqual(new Set(fake.calls.map((c) => c.route)), new Set(['upload', 'status', 'result']));
    for (const call of fake.calls) {
      assert.deepEqual([call.query.organization_id, call.query.project_id], ['org-1', 'proj-1'], `${call.route} ${call.url}`);
    }
    assert.equal(fake.jobs.get(jobId)!.projectId, 'proj-1');

    const wrong = adapterFor(fake, { organizationId: 'org-1', projectId: 'proj-2' });
    const before = fake.requests.upload;
    const err = await rejectsWith(submitText(wrong), { code: 'PARSER_FORBIDDEN', permanent: true, status: 403 });
    assert.match(err.message, /LLAMAPARSE_PROJECT_ID/);
    assert.equal(fake.requests.upload - before, 1, 'a 403 is not retried');
  });

  test('a bad key is a permanent PARSER_AUTH_FAILED after exactly one request, without the key in the message', async () => {
    const fake = await fakeWith();
    const secretKey = 'llx-wrong-key-that-must-not-leak';
    const parser = createLlamaParseParser({ apiKey: secretKey, baseUrl: fake.url, timeoutSeconds: 5 });
    const err = await rejectsWith(submitText(parser), { code: 'PARSER_AUTH_FAILED', permanent: true, status: 401 });
    assert.match(err.message, /LLAMAPARSE_API_KEY/);
    assert.ok(!err.message.includes(secretKey));
    assert.equal(fake.requests.upload, 1);

    // The same on status and result.
    await rejectsWith(parser.status('some-job'), { code: 'PARSER_AUTH_FAILED', permanent: true });
    await rejectsWith(parser.result('some-job'), { code: 'PARSER_AUTH_FAILED', permanent: true });
    assert.deepEqual(fake.requests, { upload: 1, status: 1, result: 1 });
  });

  test('an injected 401 or 403 on status is not retried either', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    const { jobId } = await submitText(parser);
    fake.failNext('status', 401);
    await rejectsWith(parser.status(jobId), { code: 'PARSER_AUTH_FAILED', permanent: true });
    fake.failNext('status', 403);
    await rejectsWith(parser.status(jobId), { code: 'PARSER_FORBIDDEN', permanent: true });
    assert.equal(fake.requests.status, 2);
  });

  test('429 with Retry-After: 1 is waited out, then the call succeeds', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    const rateLimitedBefore = await counterValue('upload', 'rate_limited');
    fake.failNext('upload', 429, 1, { 'Retry-After': '1' });
    const started = Date.now();
    const { jobId } = await submitText(parser);
    const waited = Date.now() - started;
    assert.ok(waited >= 900, `waited ${waited} ms`);
    assert.ok(fake.jobs.has(jobId));
    assert.equal(fake.requests.upload, 2);
    assert.equal((await counterValue('upload', 'rate_limited')) - rateLimitedBefore, 1);
  });

  test('retry-after-ms is honoured too', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    fake.failNext('status', 503, 1, { 'retry-after-ms': '300' });
    const { jobId } = await submitText(parser);
    const started = Date.now();
    await parser.status(jobId);
    assert.ok(Date.now() - started >= 280);
    assert.equal(fake.requests.status, 2);
  });

  test('500 twice then success succeeds', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake, { maxRetryWaitMs: 50 });
    const { jobId } = await submitText(parser);
    await waitForStatus(parser, jobId);
    fake.failNext('result', 500, 2);
    const result = await parser.result(jobId);
    assert.match(result.markdown, /Bell Rock/);
    assert.equal(result.pages, 1);
    assert.equal(fake.requests.result, 3);
  });

  test('a persistent 503 gives a non-permanent PARSER_UNAVAILABLE after maxAttempts requests', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake, { maxAttempts: 3, maxRetryWaitMs: 20 });
    fake.failNext('upload', 503, 10);
    await rejectsWith(submitText(parser), { code: 'PARSER_UNAVAILABLE', permanent: false, status: 503 });
    assert.equal(fake.requests.upload, 3);
  });

  test('a persistent 429 gives PARSER_RATE_LIMITED carrying retryAfterMs; a longer Retry-After than allowed is not slept', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake, { maxAttempts: 2, maxRetryWaitMs: 50 });
    fake.failNext('upload', 429, 10, { 'Retry-After': '0' });
    const err = await rejectsWith(submitText(parser), { code: 'PARSER_RATE_LIMITED', permanent: false, status: 429 });
    assert.equal(err.details.retryAfterMs, 0);
    assert.equal(fake.requests.upload, 2);

    fake.reset();
    fake.failNext('upload', 429, 1, { 'Retry-After': '120' });
    const started = Date.now();
    const long = await rejectsWith(submitText(parser), { code: 'PARSER_RATE_LIMITED', permanent: false });
    assert.equal(long.details.retryAfterMs, 120_000);
    assert.ok(Date.now() - started < 1000, 'gave the wait back to the job queue');
  });

  test('network errors and timeouts are retried, then PARSER_UNAVAILABLE', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake, { maxAttempts: 2, maxRetryWaitMs: 20, timeoutSeconds: 0.3 });
    const { jobId } = await submitText(parser);
    fake.failNext('status', 0); // connection dropped once
    await parser.status(jobId);
    assert.equal(fake.requests.status, 2);

    fake.failNext('status', -1, 2); // the server hangs, twice
    const err = await rejectsWith(parser.status(jobId), { code: 'PARSER_UNAVAILABLE', permanent: false });
    assert.match(err.message, /timed out/);

    const closedPort = createLlamaParseParser({ apiKey: 'k', baseUrl: 'http://127.0.0.1:1', timeoutSeconds: 2, maxAttempts: 2, maxRetryWaitMs: 10 });
    await rejectsWith(submitText(closedPort), { code: 'PARSER_UNAVAILABLE', permanent: false });
  });

  test('unknown jobs are PARSER_JOB_NOT_FOUND; refused uploads are PARSER_REJECTED with the detail', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    await rejectsWith(parser.status('no-such-job'), { code: 'PARSER_JOB_NOT_FOUND', permanent: true, status: 404 });
    await rejectsWith(parser.result('no-such-job'), { code: 'PARSER_JOB_NOT_FOUND', permanent: true, status: 404 });
    fake.failNext('upload', 413);
    await rejectsWith(submitText(parser), { code: 'PARSER_REJECTED', permanent: true, status: 413 });
    assert.equal(fake.requests.upload, 1);
    const bad = await rejectsWith(
      parser.submit({ bytes: TEXT, fileName: 'x.txt', mediaType: 'text/plain', webhook: { url: 'not a url', headers: {} } }),
      { code: 'PARSER_REJECTED', permanent: true, status: 400 },
    );
    assert.match(bad.message, /webhook_url must be an http\(s\) URL/);
    // The result of an unfinished job is refused too.
    fake.setProcessingMs(Number.POSITIVE_INFINITY);
    const { jobId } = await submitText(parser);
    const early = await rejectsWith(parser.result(jobId), { code: 'PARSER_REJECTED', permanent: true, status: 400 });
    assert.match(early.message, /Job not completed/);
  });

  test('ERROR, PARTIAL_SUCCESS and CANCELLED carry errorCode and errorMessage', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    for (const status of ['ERROR', 'PARTIAL_SUCCESS', 'CANCELLED'] as const) {
      fake.setOutcome((fileName) => (fileName === 'bell-rock.txt' ? { status, errorCode: `CODE_${status}`, errorMessage: `message ${status}` } : null));
      const { jobId } = await submitText(parser);
      assert.deepEqual(await waitForStatus(parser, jobId), { id: jobId, status, errorCode: `CODE_${status}`, errorMessage: `message ${status}` });
      if (status === 'PARTIAL_SUCCESS') assert.match((await parser.result(jobId)).markdown, /Bell Rock/);
    }
    fake.setOutcome(null);
    const { jobId } = await parser.submit({ bytes: Buffer.from('%PDF-1.7 garbage'), fileName: 'broken.pdf', mediaType: 'application/pdf', webhook: null });
    const job = await waitForStatus(parser, jobId);
    assert.equal(job.status, 'ERROR');
    assert.equal(job.errorCode, 'NO_DATA_FOUND_IN_FILE');
    assert.ok(job.errorMessage);
  });

  test('result pages come from job_metadata, else from the page separators', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const parser = adapterFor(fake);
    const { jobId } = await parser.submit({ bytes: await fixture('sample.pdf'), fileName: 'e.pdf', mediaType: 'application/pdf', webhook: null });
    await fake.finishJob(jobId);
    assert.equal((await parser.result(jobId)).pages, 2);

    // A server without job_metadata: count the "\n---\n" separators.
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ markdown: 'one\n---\ntwo\n---\nthree', job_metadata: { job_pages: 0 } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;
    const bare = createLlamaParseParser({ apiKey: 'k', baseUrl: `http://127.0.0.1:${port}`, timeoutSeconds: 5 });
    assert.deepEqual(await bare.result('x'), { markdown: 'one\n---\ntwo\n---\nthree', pages: 3 });
  });

  test('unknown status strings are a non-permanent error; known non-terminal ones are PENDING', async () => {
    let answer = 'RUNNING';
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'j1', status: answer, error_code: null, error_message: null }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
    const port = (server.address() as { port: number }).port;
    const parser = createLlamaParseParser({ apiKey: 'k', baseUrl: `http://127.0.0.1:${port}`, timeoutSeconds: 5 });
    assert.equal((await parser.status('j1')).status, 'PENDING');
    answer = 'EXPLODED';
    await rejectsWith(parser.status('j1'), { code: 'PARSER_BAD_RESPONSE', permanent: false });
  });
});

// The fake's own behaviour (webhooks, fault modes, admin API) is pinned by
// test/unit/llamaparse-fake.test.ts and test/contract/llamaparse-v2.test.ts.
