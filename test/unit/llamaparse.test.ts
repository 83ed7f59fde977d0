// The LlamaParse v2 adapter against the fake LlamaCloud API over real HTTP: what it sends, how
// it maps statuses, pages and errors, and the retry policy it adds to the SDK's. The cases it
// shares with the official SDK are in test/contract/llamaparse-v2.test.ts; the fake's own
// behaviour in test/unit/llamaparse-fake.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { providerRequests } from '../../src/observability/metrics.ts';
import { createLlamaParseParser, reasonCode, type LlamaParseOptions, type LlamaParseParser } from '../../src/providers/parser/llamaparse.ts';
import { ProviderError, type AsyncParser, type ProviderJob } from '../../src/providers/types.ts';
import type { FakeLlamaParse } from '../fakes/llamaparse.ts';
import { fakeLlamaParsePerTest } from '../helpers/fake-llamaparse.ts';

const fixture = (name: string) => readFile(new URL(`../fixtures/${name}`, import.meta.url));
const TEXT = Buffer.from('Plain text about the Bell Rock lighthouse.\n');

// Each test gets its own fake, closed afterwards even when the test fails.
const fakeWith = fakeLlamaParsePerTest();

function adapterFor(fake: FakeLlamaParse, options: Partial<LlamaParseOptions> = {}): LlamaParseParser {
  return createLlamaParseParser({
    apiKey: fake.apiKey,
    baseUrl: fake.url,
    tier: 'cost_effective',
    version: 'latest',
    timeoutSeconds: 5,
    jobTimeout: { baseSeconds: 1800, perPageSeconds: 60 },
    ...options,
  });
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

describe('llamaparse adapter (v2)', () => {
  test('submit sends tier, version, time limits, the page-failure ratio and one webhook configuration of docpipe\'s shape', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const parser = adapterFor(fake, { tier: 'agentic', version: '2026-09-07', webhookSigningSecret: 'whsec-1', allowedPageFailureRatio: 0.2, jobTimeout: { baseSeconds: 600, perPageSeconds: 30 } });
    const { jobId, status } = await parser.submit({
      bytes: await fixture('sample.pdf'),
      fileName: 'sample.pdf',
      mediaType: 'application/pdf',
      webhook: { url: 'https://hooks.example.com/v1/webhooks/llamaparse/doc-1', headers: { 'X-Docpipe-Webhook-Token': 'v1.1.abc' } },
    });
    assert.match(jobId, /^pjb-/);
    assert.equal(status, 'PENDING');
    const job = fake.jobs.get(jobId)!;
    assert.deepEqual([job.fileName, job.mediaType, job.tier, job.version], ['sample.pdf', 'application/pdf', 'agentic', '2026-09-07']);
    assert.deepEqual(job.configuration.processing_control, {
      timeouts: { base_in_seconds: 600, extra_time_per_page_in_seconds: 30 },
      job_failure_conditions: { allowed_page_failure_ratio: 0.2 },
    });
    assert.deepEqual(job.webhookConfigs, [{
      webhook_url: 'https://hooks.example.com/v1/webhooks/llamaparse/doc-1',
      webhook_events: ['parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled'],
      webhook_headers: { 'X-Docpipe-Webhook-Token': 'v1.1.abc' },
      webhook_output_format: 'json',
      webhook_signing_secret: 'whsec-1',
    }]);
  });

  test('without a webhook none is configured; status, result, pages and credits round-trip', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake);
    const { jobId } = await parser.submit({ bytes: await fixture('sample.pdf'), fileName: 'sample.pdf', mediaType: 'application/pdf', webhook: null });
    assert.deepEqual(fake.jobs.get(jobId)!.webhookConfigs, []);
    const done = await waitForStatus(parser, jobId);
    assert.deepEqual(done, { id: jobId, status: 'SUCCESS', errorCode: null, errorMessage: null, credits: 6 });
    const parsed = await parser.result(jobId);
    assert.equal(parsed.pages, 2);
    assert.equal(parsed.warning, undefined);
    assert.match(parsed.markdown, /Henry Winstanley raised[\s\S]*\n\n---\n\n[\s\S]*James Douglass built/);
  });

  test('the fast tier has no markdown: result() reads the text pages', async () => {
    const fake = await fakeWith();
    const parser = adapterFor(fake, { tier: 'fast' });
    const { jobId } = await parser.submit({ bytes: await fixture('sample.pdf'), fileName: 'sample.pdf', mediaType: 'application/pdf', webhook: null });
    await waitForStatus(parser, jobId);
    const parsed = await parser.result(jobId);
    assert.equal(parsed.pages, 2);
    assert.match(parsed.markdown, /Henry Winstanley raised/);
    assert.ok(fake.calls.some((c) => c.route === 'result' && String(c.query.expand) === 'text'), 'asked for expand=text');
  });

  test('pages that failed within the allowed ratio: the result carries a PARTIAL_SUCCESS warning naming them', async () => {
    const fake = await fakeWith();
    fake.setOutcome(() => ({ failedPages: [2], pageError: 'OCR failed' }));
    const parser = adapterFor(fake, { allowedPageFailureRatio: 0.5 });
    const { jobId } = await parser.submit({ bytes: await fixture('sample.pdf'), fileName: 'sample.pdf', mediaType: 'application/pdf', webhook: null });
    assert.equal((await waitForStatus(parser, jobId)).status, 'SUCCESS');
    const parsed = await parser.result(jobId);
    assert.equal(parsed.pages, 2);
    assert.match(parsed.markdown, /Henry Winstanley raised/);
    assert.doesNotMatch(parsed.markdown, /James Douglass/);
    assert.deepEqual(parsed.warning, { code: 'PARTIAL_SUCCESS', message: '1 of 2 pages could not be parsed: page 2: OCR failed' });
  });

  test('FAILED carries the reason code found in error_message; CANCELLED too; a message without one gives null', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const parser = adapterFor(fake);
    const cases: Array<[{ status: 'FAILED' | 'CANCELLED'; errorMessage: string }, ProviderJob['status'], string | null]> = [
      [{ status: 'FAILED', errorMessage: 'PDF_IS_PROTECTED: the PDF is password protected' }, 'ERROR', 'PDF_IS_PROTECTED'],
      [{ status: 'FAILED', errorMessage: 'Something broke' }, 'ERROR', null],
      [{ status: 'CANCELLED', errorMessage: 'Cancelled by the user' }, 'CANCELLED', null],
    ];
    for (const [outcome, status, code] of cases) {
      const { jobId } = await submitText(parser);
      await fake.finishJob(jobId, outcome);
      const job = await parser.status(jobId);
      assert.deepEqual([job.status, job.errorCode, job.errorMessage], [status, code, outcome.errorMessage]);
    }
  });

  test('organization_id and project_id go on every call; a project the key does not belong to is PARSER_FORBIDDEN', async () => {
    const fake = await fakeWith({ requireProjectId: 'proj-1', requireOrganizationId: 'org-1' });
    const parser = adapterFor(fake, { organizationId: 'org-1', projectId: 'proj-1' });
    const { jobId } = await submitText(parser);
    await waitForStatus(parser, jobId);
    await parser.result(jobId);
    const mine = fake.calls.filter((c) => c.route === 'upload' || c.route === 'status' || c.route === 'result');
    assert.ok(mine.length >= 3);
    for (const call of mine) assert.deepEqual([call.query.organization_id, call.query.project_id], ['org-1', 'proj-1'], call.url);
    const before = fake.requests.upload;
    await rejectsWith(submitText(adapterFor(fake, { organizationId: 'org-1', projectId: 'proj-2' })), { code: 'PARSER_FORBIDDEN', permanent: true, status: 403 });
    assert.equal(fake.requests.upload - before, 1, 'a 403 is not retried');
  });

  test('a bad key is a permanent PARSER_AUTH_FAILED after exactly one request, without the key in the message', async () => {
    const fake = await fakeWith();
    const key = 'llx-wrong-key-that-must-not-leak';
    const err = await rejectsWith(submitText(adapterFor(fake, { apiKey: key })), { code: 'PARSER_AUTH_FAILED', permanent: true, status: 401 });
    assert.equal(fake.requests.upload, 1);
    assert.doesNotMatch(err.message, /wrong-key/);
    assert.match(err.message, /LLAMAPARSE_API_KEY/);
  });

  test('402 (credits exhausted) is a transient PARSER_QUOTA_EXCEEDED (a stage attempt); 422 a permanent PARSER_REJECTED with the validation detail', async () => {
    const fake = await fakeWith();
    fake.failNext('upload', 402);
    const quota = await rejectsWith(submitText(adapterFor(fake)), { code: 'PARSER_QUOTA_EXCEEDED', permanent: false, status: 402 });
    assert.match(quota.message, /add credits/);
    assert.equal(fake.requests.upload, 1, 'not retried in the call');
    const err = await rejectsWith(submitText(adapterFor(fake, { tier: 'turbo' as never })), { code: 'PARSER_REJECTED', permanent: true, status: 422 });
    assert.match(err.message, /HTTP 422\): .*tier/);
  });

  test('an unknown job is a permanent PARSER_JOB_NOT_FOUND', async () => {
    const fake = await fakeWith();
    await rejectsWith(adapterFor(fake).status('pjb-000000000000000000000000'), { code: 'PARSER_JOB_NOT_FOUND', permanent: true, status: 404 });
  });

  test('429 and 5xx are retried by the SDK (counted per attempt), then the call succeeds', async () => {
    const fake = await fakeWith();
    const [limitedBefore, serverBefore] = [await counterValue('upload', 'rate_limited'), await counterValue('status', 'server_error')];
    fake.failNext('upload', 429);
    const parser = adapterFor(fake);
    const { jobId } = await submitText(parser);
    assert.equal(fake.requests.upload, 2);
    fake.failNext('status', 503, 2);
    await parser.status(jobId);
    assert.equal(fake.requests.status, 3);
    assert.equal((await counterValue('upload', 'rate_limited')) - limitedBefore, 1);
    assert.equal((await counterValue('status', 'server_error')) - serverBefore, 2);
  });

  test('a persistent 503 gives a non-permanent PARSER_UNAVAILABLE after maxRetries + 1 requests', async () => {
    const fake = await fakeWith();
    fake.failNext('upload', 503, 10);
    await rejectsWith(submitText(adapterFor(fake, { maxRetries: 2 })), { code: 'PARSER_UNAVAILABLE', permanent: false, status: 503 });
    assert.equal(fake.requests.upload, 3);
  });

  test('a Retry-After longer than the worker may sleep is not slept: PARSER_RATE_LIMITED at once, carrying retryAfterMs for the job queue', async () => {
    const fake = await fakeWith();
    fake.failNext('upload', 429, 5, { 'retry-after': '120' });
    const started = Date.now();
    const err = await rejectsWith(submitText(adapterFor(fake, { maxRetryWaitMs: 60_000 })), { code: 'PARSER_RATE_LIMITED', permanent: false, status: 429 });
    assert.ok(Date.now() - started < 2000, `answered after ${Date.now() - started} ms`);
    assert.equal(err.details.retryAfterMs, 120_000);
    assert.equal(fake.requests.upload, 1);
    assert.match(err.message, /retry after 120 s/);
  });

  test('a short Retry-After is waited out', async () => {
    const fake = await fakeWith();
    fake.failNext('upload', 429, 1, { 'retry-after': '1' });
    const started = Date.now();
    await submitText(adapterFor(fake));
    assert.ok(Date.now() - started >= 900, `retried after ${Date.now() - started} ms`);
    assert.equal(fake.requests.upload, 2);
  });

  test('dropped connections and a hung server are retried, then PARSER_UNAVAILABLE (not permanent)', async () => {
    const fake = await fakeWith();
    fake.failNext('status', 0, 10);
    const dropped = await rejectsWith(adapterFor(fake, { maxRetries: 1 }).status('pjb-x'), { code: 'PARSER_UNAVAILABLE', permanent: false });
    assert.match(dropped.message, /failed/);
    assert.equal(fake.requests.status, 2);
    fake.reset();
    fake.failNext('status', -1, 10);
    const hung = await rejectsWith(adapterFor(fake, { maxRetries: 0, timeoutSeconds: 1 }).status('pjb-y'), { code: 'PARSER_UNAVAILABLE', permanent: false });
    assert.match(hung.message, /timed out after 1 s/);
  });

  test('the time limit grows with the pages: base + per page x pages + 30 minutes (queueing, last webhook, next poll)', () => {
    const parser = createLlamaParseParser({ apiKey: 'k', baseUrl: 'http://127.0.0.1:9', tier: 'fast', version: 'latest', timeoutSeconds: 1, jobTimeout: { baseSeconds: 1800, perPageSeconds: 60 } });
    assert.equal(parser.timeLimitSeconds(1), 1800 + 60 + 1800);
    assert.equal(parser.timeLimitSeconds(500), 1800 + 30_000 + 1800);
    assert.equal(parser.timeLimitSeconds(0), 1800 + 60 + 1800, 'at least one page');
  });

  test('a server that sends its headers and then stalls is a timeout too, not a hung job', async () => {
    const fake = await fakeWith();
    fake.failNext('status', -2, 5);
    const started = Date.now();
    const err = await rejectsWith(adapterFor(fake, { maxRetries: 0, timeoutSeconds: 1 }).status('pjb-z'), { code: 'PARSER_UNAVAILABLE', permanent: false });
    assert.match(err.message, /timed out after 1 s/);
    assert.ok(Date.now() - started < 3000, `gave up after ${Date.now() - started} ms`);
  });

  test('result() follows the tier the job was parsed with, not the one configured now', async () => {
    const fake = await fakeWith();
    const { jobId } = await adapterFor(fake, { tier: 'fast' }).submit({ bytes: await fixture('sample.pdf'), fileName: 'sample.pdf', mediaType: 'application/pdf', webhook: null });
    const now = adapterFor(fake, { tier: 'agentic' });
    await waitForStatus(now, jobId);
    assert.match((await now.result(jobId)).markdown, /Henry Winstanley raised/);
  });

  test('cancel() stops a job (docpipe calls it when it gives up on one)', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const parser = adapterFor(fake);
    const { jobId } = await submitText(parser);
    await parser.cancel!(jobId);
    assert.equal(fake.jobs.get(jobId)!.status, 'CANCELLED');
    assert.equal((await parser.status(jobId)).status, 'CANCELLED');
  });
});

describe('reasonCode', () => {
  test('a code that opens the message, else a reason LlamaCloud documents anywhere in it, else null', () => {
    assert.equal(reasonCode('PDF_IS_PROTECTED: the PDF is password protected'), 'PDF_IS_PROTECTED');
    assert.equal(reasonCode('TIMEOUT: the job ran over its time limit'), 'TIMEOUT');
    assert.equal(reasonCode('Failed to parse MY_REPORT_2024.pdf: PDF_IS_PROTECTED'), 'PDF_IS_PROTECTED');
    assert.equal(reasonCode('upstream HTTP_500; NO_DATA_FOUND_IN_FILE'), 'NO_DATA_FOUND_IN_FILE');
    assert.equal(reasonCode('Something broke in MY_REPORT_2024.pdf'), null);
    assert.equal(reasonCode(null), null);
  });
});
