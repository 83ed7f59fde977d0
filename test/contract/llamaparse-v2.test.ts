// The LlamaParse v2 contract: one list of cases, each stated in LlamaCloud's v2 terms (job
// statuses PENDING/RUNNING/COMPLETED/FAILED/CANCELLED, error_message with the reason code,
// per-page markdown with `success`, credits, webhook deliveries), run through a *runner*: an
// object that uploads, reads status and results, cancels. Runner (a) is the official SDK
// (@llamaindex/llama-cloud) itself, which proves the fake (test/fakes/llamaparse.ts) speaks the
// API the SDK speaks; runner (b) is docpipe's adapter (src/providers/parser/llamaparse.ts), which
// proves docpipe speaks it too. A runner throws `Unsupported` for what it cannot express (the
// adapter cannot send a missing tier, for example): the case is then skipped for it. After the
// shared cases, SDK-only cases pin what only the SDK shows (error classes, query shapes, the
// Files API, versions, list, delete).
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import LlamaCloud, {
  APIError,
  AuthenticationError,
  BadRequestError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  UnprocessableEntityError,
  toFile,
} from '@llamaindex/llama-cloud';
import { PollingError } from '@llamaindex/llama-cloud/core/polling';
import {
  FAKE_CREDITS_PER_PAGE,
  FAKE_LATEST_VERSIONS,
  FAKE_VERSIONS,
  FAST_TIER_MARKDOWN_ERROR,
  startFakeLlamaParse,
  type FakeLlamaParse,
  type FakeTier,
} from '../fakes/llamaparse.ts';
import { createLlamaParseParser, LLAMAPARSE_WEBHOOK_EVENTS, type LlamaParseTier } from '../../src/providers/parser/llamaparse.ts';
import { ProviderError, type ProviderJob, type ProviderJobStatus } from '../../src/providers/types.ts';

const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document' as const;

// --- the runner interface ---------------------------------------------------------------------

export type JobStatus = 'PENDING' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';

export interface WebhookConfiguration {
  webhook_url: string;
  webhook_events?: string[];
  webhook_headers?: Record<string, string>;
  webhook_output_format?: 'string' | 'json';
  webhook_signing_secret?: string;
}

export interface UploadOptions {
  /** Default 'cost_effective'; null: not sent at all. */
  tier?: string | null;
  /** Default 'latest'; null: not sent at all. */
  version?: string | null;
  webhooks?: WebhookConfiguration[];
  /** processing_control.timeouts */
  timeouts?: { base_in_seconds?: number; extra_time_per_page_in_seconds?: number };
  /** processing_control.job_failure_conditions.allowed_page_failure_ratio */
  allowedPageFailureRatio?: number;
  disableCache?: boolean;
  /** Another API key than the fake's (a bad key). */
  apiKey?: string;
}

export interface RunnerJob {
  jobId: string;
  status: JobStatus;
  errorMessage: string | null;
  /** usage.credits: null until billed. */
  credits: number | null;
}

export interface RunnerPage {
  pageNumber: number;
  success: boolean;
  markdown?: string;
  error?: string;
}

export interface RunnerResult {
  job: RunnerJob;
  /** expand=markdown */
  pages: RunnerPage[];
  /** expand=markdown_full */
  markdownFull: string;
}

export interface ParseRunner {
  readonly name: string;
  upload(bytes: Buffer, fileName: string, options?: UploadOptions): Promise<RunnerJob>;
  /** The job without content (GET without expand). */
  status(jobId: string): Promise<RunnerJob>;
  /** Markdown per page and whole (GET with expand=markdown and markdown_full). */
  result(jobId: string): Promise<RunnerResult>;
  /** Plain text per page (expand=text). */
  text(jobId: string): Promise<Array<{ pageNumber: number; text: string }>>;
  cancel(jobId: string): Promise<RunnerJob>;
  /** The HTTP status behind an error this runner threw; null when there was none. */
  httpStatus(err: unknown): number | null;
}

/** Thrown by a runner for an operation or option it cannot express: the case is skipped. */
export class Unsupported extends Error {}

export interface CaseContext {
  runner: ParseRunner;
  fake: FakeLlamaParse;
  receiver: Receiver;
}

export interface ContractCase {
  name: string;
  run(ctx: CaseContext): Promise<void>;
}

// --- (a) the official SDK ----------------------------------------------------------------------

function sdkClient(fake: FakeLlamaParse, options: { apiKey?: string; maxRetries?: number } = {}): LlamaCloud {
  return new LlamaCloud({ apiKey: options.apiKey ?? fake.apiKey, baseURL: fake.url, maxRetries: options.maxRetries ?? 2, timeout: 10_000, logLevel: 'off' });
}

type SdkJob = { id: string; status: JobStatus; error_message?: string | null; usage?: { credits?: number | null } | null };
const fromSdkJob = (job: SdkJob): RunnerJob => ({ jobId: job.id, status: job.status, errorMessage: job.error_message ?? null, credits: job.usage?.credits ?? null });

export function sdkRunner(fake: FakeLlamaParse): ParseRunner {
  const client = sdkClient(fake);
  return {
    name: 'official SDK',
    async upload(bytes, fileName, options = {}) {
      const client2 = options.apiKey ? sdkClient(fake, { apiKey: options.apiKey }) : client;
      const params: Record<string, unknown> = {};
      if (options.tier !== null) params.tier = options.tier ?? 'cost_effective';
      if (options.version !== null) params.version = options.version ?? 'latest';
      if (options.webhooks) params.webhook_configurations = options.webhooks;
      if (options.disableCache !== undefined) params.disable_cache = options.disableCache;
      if (options.timeouts || options.allowedPageFailureRatio !== undefined) {
        params.processing_control = {
          ...(options.timeouts ? { timeouts: options.timeouts } : {}),
          ...(options.allowedPageFailureRatio !== undefined ? { job_failure_conditions: { allowed_page_failure_ratio: options.allowedPageFailureRatio } } : {}),
        };
      }
      const job = await client2.parsing.create({ ...(params as { tier: string; version: string }), upload_file: await toFile(bytes, fileName) });
      return fromSdkJob(job);
    },
    async status(jobId) {
      return fromSdkJob((await client.parsing.get(jobId)).job);
    },
    async result(jobId) {
      const response = await client.parsing.get(jobId, { expand: ['markdown', 'markdown_full'] });
      return {
        job: fromSdkJob(response.job),
        markdownFull: response.markdown_full ?? '',
        pages: (response.markdown?.pages ?? []).map((p) =>
          p.success ? { pageNumber: p.page_number, success: true, markdown: p.markdown } : { pageNumber: p.page_number, success: false, error: p.error },
        ),
      };
    },
    async text(jobId) {
      const response = await client.parsing.get(jobId, { expand: ['text'] });
      return (response.text?.pages ?? []).map((p) => ({ pageNumber: p.page_number, text: p.text }));
    },
    async cancel(jobId) {
      return fromSdkJob(await client.parsing.cancel(jobId));
    },
    httpStatus(err) {
      return err instanceof APIError && typeof err.status === 'number' ? err.status : null;
    },
  };
}

// --- (b) docpipe's adapter ---------------------------------------------------------------------
//
// The adapter as the pipeline uses it (submit, status, result) plus its `pages` read, which
// result() is built on. It always sends one webhook configuration of docpipe's shape (the
// terminal events, JSON output, the per-document headers, the configured signing secret), the
// configured tier, version, time limits and page-failure ratio: a case that asks for anything
// else (no tier, several configurations, disable_cache, cancel) is Unsupported and skipped here.
const TERMINAL_EVENTS_SORTED = [...LLAMAPARSE_WEBHOOK_EVENTS].sort().join(',');

export function adapterRunner(fake: FakeLlamaParse): ParseRunner {
  const parserFor = (options: UploadOptions = {}) => {
    if (options.tier === null || options.version === null) throw new Unsupported('the adapter always sends a tier and a version');
    if (options.disableCache !== undefined) throw new Unsupported('the adapter never sends disable_cache');
    return createLlamaParseParser({
      apiKey: options.apiKey ?? fake.apiKey,
      baseUrl: fake.url,
      tier: (options.tier ?? 'cost_effective') as LlamaParseTier,
      version: options.version ?? 'latest',
      timeoutSeconds: 10,
      maxRetries: 2,
      jobTimeout: { baseSeconds: options.timeouts?.base_in_seconds ?? 1800, perPageSeconds: options.timeouts?.extra_time_per_page_in_seconds ?? 60 },
      ...(options.allowedPageFailureRatio !== undefined ? { allowedPageFailureRatio: options.allowedPageFailureRatio } : {}),
      ...(options.webhooks?.[0]?.webhook_signing_secret ? { webhookSigningSecret: options.webhooks[0].webhook_signing_secret } : {}),
    });
  };
  const reader = parserFor();
  const toV2: Record<ProviderJobStatus, JobStatus> = { PENDING: 'PENDING', SUCCESS: 'COMPLETED', ERROR: 'FAILED', CANCELLED: 'CANCELLED' };
  const fromJob = (job: ProviderJob): RunnerJob => ({ jobId: job.id, status: toV2[job.status], errorMessage: job.errorMessage, credits: job.credits ?? null });
  return {
    name: 'docpipe adapter',
    async upload(bytes, fileName, options = {}) {
      const hooks = options.webhooks ?? [];
      if (hooks.length > 1) throw new Unsupported('the adapter sends one webhook configuration');
      const hook = hooks[0];
      if (hook && ([...(hook.webhook_events ?? [])].sort().join(',') !== TERMINAL_EVENTS_SORTED || hook.webhook_output_format !== 'json')) {
        throw new Unsupported('the adapter subscribes the terminal events with JSON output');
      }
      const parser = parserFor(options);
      const sniffed = fileName.endsWith('.pdf') ? 'application/pdf' : fileName.endsWith('.md') ? 'text/markdown' : fileName.endsWith('.html') ? 'text/html' : fileName.endsWith('.docx') ? DOCX : 'text/plain';
      const webhook = hook ? { url: hook.webhook_url, headers: hook.webhook_headers ?? {} } : null;
      const { jobId, status } = await parser.submit({ bytes, fileName, mediaType: sniffed, webhook });
      // The create answer carries no more than this; credits come with the job's status.
      const job = status === 'SUCCESS' ? await parser.status(jobId) : { id: jobId, status: status ?? 'PENDING', errorCode: null, errorMessage: null, credits: null };
      return fromJob(job);
    },
    async status(jobId) {
      return fromJob(await reader.status(jobId));
    },
    async result(jobId) {
      const [job, pages, parsed] = await Promise.all([reader.status(jobId), reader.pages(jobId, 'markdown'), reader.result(jobId)]);
      return {
        job: fromJob(job),
        pages: pages.map((p) => (p.success ? { pageNumber: p.pageNumber, success: true, markdown: p.content } : { pageNumber: p.pageNumber, success: false, error: p.error })),
        markdownFull: parsed.markdown,
      };
    },
    async text(jobId) {
      return (await reader.pages(jobId, 'text')).map((p) => ({ pageNumber: p.pageNumber, text: p.success ? p.content : '' }));
    },
    async cancel() {
      throw new Unsupported('docpipe never cancels a job');
    },
    httpStatus(err) {
      return err instanceof ProviderError ? (err.details.status ?? null) : null;
    },
  };
}

const RUNNERS: Array<{ name: string; create: (fake: FakeLlamaParse) => ParseRunner; skip?: string }> = [
  { name: 'official SDK', create: sdkRunner },
  { name: 'docpipe adapter', create: adapterRunner },
];

// --- helpers -------------------------------------------------------------------------------------

/** A webhook configuration of the shape docpipe sends (so both runners can express the case). */
const docpipeHook = (url: string, extra: Partial<WebhookConfiguration> = {}): WebhookConfiguration[] => [
  { webhook_url: url, webhook_events: [...LLAMAPARSE_WEBHOOK_EVENTS], webhook_output_format: 'json', ...extra },
];

const fixture = (name: string) => readFile(new URL(`../fixtures/${name}`, import.meta.url));
const TERMINAL: readonly JobStatus[] = ['COMPLETED', 'FAILED', 'CANCELLED'];
const hmac = (secret: string, body: string) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

async function waitForEnd(runner: ParseRunner, jobId: string, timeoutMs = 10_000): Promise<RunnerJob> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await runner.status(jobId);
    if (TERMINAL.includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status} after ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** The HTTP status `promise` rejects with (through the runner's eyes). */
async function rejectsWithStatus(runner: ParseRunner, promise: Promise<unknown>, status: number): Promise<unknown> {
  let caught: unknown;
  await assert.rejects(promise, (err) => {
    caught = err;
    if (err instanceof Unsupported) throw err;
    assert.equal(runner.httpStatus(err), status, `expected HTTP ${status}, got ${String(err)}`);
    return true;
  });
  return caught;
}

/** A webhook receiver: records every request with its raw body; answers 204 unless scripted. */
interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}
interface Receiver {
  url: string;
  received: Received[];
  on(path: string): Received[];
  /** The next answers for `path`, in order (then 204). */
  respond(path: string, statuses: number[]): void;
  reset(): void;
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const scripts = new Map<string, number[]>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(scripts.get(path)?.shift() ?? 204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    on: (path) => received.filter((r) => r.path === path),
    respond: (path, statuses) => scripts.set(path, [...statuses]),
    reset() {
      received.length = 0;
      scripts.clear();
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A "string"-format webhook body is a JSON-encoded string of the JSON payload. */
function decodeWebhook(body: string, format: 'string' | 'json'): { event_id: string; event_type: string; timestamp: number; data: { id: string; job_id: string } } {
  const outer: unknown = JSON.parse(body);
  if (format === 'string') {
    assert.equal(typeof outer, 'string', 'a "string" webhook body is a JSON string');
    return JSON.parse(outer as string);
  }
  assert.equal(typeof outer, 'object', 'a "json" webhook body is a JSON object');
  return outer as ReturnType<typeof decodeWebhook>;
}

const FIXTURES: Array<{ file: string; pages: number; expect: RegExp[] }> = [
  { file: 'sample.pdf', pages: 2, expect: [/Henry Winstanley raised/, /James Douglass built the present Eddystone light/] },
  { file: 'sample.md', pages: 1, expect: [/# Keepers of the Northern Lights/, /## Muckle Flugga/] },
  { file: 'sample.txt', pages: 1, expect: [/Tillamook Rock light off Oregon was nicknamed Terrible Tilly/] },
  { file: 'sample.html', pages: 1, expect: [/The Pharos of Alexandria/, /Designed by Sostratus of Cnidus/] },
  { file: 'sample.docx', pages: 1, expect: [/Fresnel Lenses and the Science of the Beam/, /floated on baths of mercury/] },
];

// --- the shared cases ----------------------------------------------------------------------------

export const contractCases: ContractCase[] = [
  ...FIXTURES.map(
    ({ file, pages, expect }): ContractCase => ({
      name: `${file}: PENDING, then COMPLETED with its markdown; pages and markdown_full agree; ${FAKE_CREDITS_PER_PAGE.cost_effective} credits a page`,
      async run({ runner }) {
        const created = await runner.upload(await fixture(file), file);
        assert.match(created.jobId, /^pjb-/);
        assert.ok(created.status === 'PENDING' || created.status === 'RUNNING', created.status);
        assert.equal(created.credits, null, 'no credits before the job ends');
        const ended = await waitForEnd(runner, created.jobId);
        assert.deepEqual({ status: ended.status, errorMessage: ended.errorMessage }, { status: 'COMPLETED', errorMessage: null });
        assert.equal(ended.credits, pages * FAKE_CREDITS_PER_PAGE.cost_effective);

        const result = await runner.result(created.jobId);
        assert.deepEqual(result.pages.map((p) => [p.pageNumber, p.success]), Array.from({ length: pages }, (_, i) => [i + 1, true]));
        for (const pattern of expect) assert.match(result.markdownFull, pattern);
        // Every page's markdown is in markdown_full, in page order.
        let from = 0;
        for (const page of result.pages) {
          const content = page.markdown!.trim();
          const at = result.markdownFull.indexOf(content, from);
          assert.ok(content !== '' && at >= from, `page ${page.pageNumber} is in markdown_full after the page before it`);
          from = at + content.length;
        }
      },
    }),
  ),
  {
    name: 'the two-page PDF: each page has its own markdown',
    async run({ runner }) {
      const { jobId } = await runner.upload(await fixture('sample.pdf'), 'sample.pdf');
      await waitForEnd(runner, jobId);
      const { pages } = await runner.result(jobId);
      assert.equal(pages.length, 2);
      assert.match(pages[0]!.markdown!, /Henry Winstanley raised/);
      assert.doesNotMatch(pages[0]!.markdown!, /James Douglass built/);
      assert.match(pages[1]!.markdown!, /James Douglass built the present Eddystone light/);
    },
  },
  {
    name: 'a tier or a version LlamaCloud does not know: 422, not retried, no job',
    async run({ runner, fake }) {
      const bytes = await fixture('sample.md');
      const jobsBefore = fake.jobs.size;
      const requestsBefore = fake.requests.upload;
      await rejectsWithStatus(runner, runner.upload(bytes, 'sample.md', { tier: 'turbo' }), 422);
      await rejectsWithStatus(runner, runner.upload(bytes, 'sample.md', { version: '1999-01-01' }), 422);
      assert.equal(fake.jobs.size, jobsBefore);
      assert.equal(fake.requests.upload - requestsBefore, 2, 'a 422 is not retried');
    },
  },
  {
    name: 'a missing tier or version: 422, no job',
    async run({ runner, fake }) {
      const bytes = await fixture('sample.md');
      const jobsBefore = fake.jobs.size;
      await rejectsWithStatus(runner, runner.upload(bytes, 'sample.md', { tier: null }), 422);
      await rejectsWithStatus(runner, runner.upload(bytes, 'sample.md', { version: null }), 422);
      assert.equal(fake.jobs.size, jobsBefore);
    },
  },
  {
    name: 'a bad API key: 401, not retried',
    async run({ runner, fake }) {
      const before = fake.requests.upload;
      await rejectsWithStatus(runner, runner.upload(await fixture('sample.md'), 'sample.md', { apiKey: 'llx-not-the-right-key' }), 401);
      assert.equal(fake.requests.upload - before, 1);
    },
  },
  {
    name: 'an unknown job: 404 on status and on result',
    async run({ runner }) {
      await rejectsWithStatus(runner, runner.status('pjb-000000000000000000000000'), 404);
      await rejectsWithStatus(runner, runner.result('pjb-000000000000000000000000'), 404);
    },
  },
  {
    name: 'a 429 without Retry-After is retried, then the upload succeeds once',
    async run({ runner, fake }) {
      fake.failNext('upload', 429);
      const requestsBefore = fake.requests.upload;
      const jobsBefore = fake.jobs.size;
      const { jobId } = await runner.upload(await fixture('sample.md'), 'sample.md');
      assert.equal(fake.requests.upload - requestsBefore, 2, 'one 429, one success');
      assert.equal(fake.jobs.size - jobsBefore, 1, 'one job');
      assert.ok(fake.jobs.has(jobId));
      assert.equal((await waitForEnd(runner, jobId)).status, 'COMPLETED');
    },
  },
  {
    name: `fast tier: markdown is a 400 ("${FAST_TIER_MARKDOWN_ERROR}"), text works, ${FAKE_CREDITS_PER_PAGE.fast} credit a page`,
    async run({ runner }) {
      const { jobId } = await runner.upload(await fixture('sample.pdf'), 'sample.pdf', { tier: 'fast' });
      const ended = await waitForEnd(runner, jobId);
      assert.equal(ended.status, 'COMPLETED');
      assert.equal(ended.credits, 2 * FAKE_CREDITS_PER_PAGE.fast);
      await rejectsWithStatus(runner, runner.result(jobId), 400);
      const text = await runner.text(jobId);
      assert.deepEqual(text.map((p) => p.pageNumber), [1, 2]);
      assert.match(text[0]!.text, /Henry Winstanley raised/);
    },
  },
  {
    name: 'a FAILED job: the reason code is inside error_message',
    async run({ runner, fake }) {
      fake.setOutcome((fileName) => (fileName === 'locked.pdf' ? { status: 'FAILED', errorMessage: 'PDF_IS_PROTECTED: the PDF is password protected' } : null));
      const { jobId } = await runner.upload(await fixture('sample.pdf'), 'locked.pdf');
      const ended = await waitForEnd(runner, jobId);
      assert.equal(ended.status, 'FAILED');
      assert.match(ended.errorMessage ?? '', /^PDF_IS_PROTECTED\b/);
      assert.equal(ended.credits, 0);
    },
  },
  {
    name: 'a document without text: FAILED with NO_DATA_FOUND_IN_FILE',
    async run({ runner }) {
      const { jobId } = await runner.upload(Buffer.from(' \n\n \n'), 'blank.txt');
      const ended = await waitForEnd(runner, jobId);
      assert.equal(ended.status, 'FAILED');
      assert.match(ended.errorMessage ?? '', /NO_DATA_FOUND_IN_FILE/);
    },
  },
  {
    name: 'a failed page within allowed_page_failure_ratio: COMPLETED, that page success:false, billed for the others',
    async run({ runner, fake }) {
      fake.setOutcome(() => ({ failedPages: [2] }));
      const { jobId } = await runner.upload(await fixture('sample.pdf'), 'sample.pdf', { allowedPageFailureRatio: 0.5 });
      const ended = await waitForEnd(runner, jobId);
      assert.equal(ended.status, 'COMPLETED');
      assert.equal(ended.credits, FAKE_CREDITS_PER_PAGE.cost_effective);
      const { pages, markdownFull } = await runner.result(jobId);
      assert.deepEqual(pages.map((p) => [p.pageNumber, p.success]), [[1, true], [2, false]]);
      assert.ok(pages[1]!.error, 'a failed page says why');
      assert.match(markdownFull, /Henry Winstanley raised/);
      assert.doesNotMatch(markdownFull, /James Douglass/);
    },
  },
  {
    name: 'more failed pages than the default 5%: FAILED',
    async run({ runner, fake }) {
      fake.setOutcome(() => ({ failedPages: [2] }));
      const { jobId } = await runner.upload(await fixture('sample.pdf'), 'sample.pdf');
      const ended = await waitForEnd(runner, jobId);
      assert.equal(ended.status, 'FAILED');
      assert.ok(ended.errorMessage, 'error_message says why');
      assert.equal(fake.jobs.get(jobId)!.allowedPageFailureRatio, 0.05);
    },
  },
  {
    name: 'cancel: a running job becomes CANCELLED; an ended job cannot be cancelled (400)',
    async run({ runner, fake }) {
      fake.setProcessingMs(Number.POSITIVE_INFINITY);
      const { jobId } = await runner.upload(await fixture('sample.md'), 'sample.md');
      assert.equal((await runner.status(jobId)).status, 'PENDING');
      assert.equal((await runner.cancel(jobId)).status, 'CANCELLED');
      const job = await runner.status(jobId);
      assert.equal(job.status, 'CANCELLED');
      await rejectsWithStatus(runner, runner.cancel(jobId), 400);
    },
  },
  {
    name: 'webhooks: every configuration gets its deliveries, with its own events, format, headers and signing secret',
    async run({ runner, fake, receiver }) {
      const { jobId } = await runner.upload(await fixture('sample.md'), 'sample.md', {
        webhooks: [
          {
            webhook_url: `${receiver.url}/a`,
            webhook_events: ['parse.success'],
            webhook_output_format: 'json',
            webhook_headers: { 'X-Receiver': 'a' },
            webhook_signing_secret: 'secret-a',
          },
          { webhook_url: `${receiver.url}/b`, webhook_headers: { 'X-Receiver': 'b' }, webhook_signing_secret: 'secret-b' },
        ],
      });
      await waitForEnd(runner, jobId);
      await fake.settled();

      const a = receiver.on('/a');
      assert.equal(a.length, 1, 'configuration a asked for parse.success only');
      const b = receiver.on('/b');
      assert.deepEqual(
        b.map((r) => decodeWebhook(r.body, 'string').event_type),
        ['parse.pending', 'parse.running', 'parse.success'],
        'configuration b has no filter: every event, in order',
      );
      for (const [delivery, format, secret, other, name] of [
        ...a.map((r) => [r, 'json', 'secret-a', 'secret-b', 'a'] as const),
        ...b.map((r) => [r, 'string', 'secret-b', 'secret-a', 'b'] as const),
      ]) {
        const payload = decodeWebhook(delivery.body, format);
        assert.deepEqual(payload.data, { id: jobId, job_id: jobId });
        assert.equal(typeof payload.timestamp, 'number');
        assert.equal(delivery.headers['content-type'], 'application/json');
        assert.equal(delivery.headers['user-agent'], 'llamaindex-webhook-service/1.0');
        assert.equal(delivery.headers['x-webhook-event-id'], payload.event_id);
        assert.equal(delivery.headers['x-webhook-event-type'], payload.event_type);
        assert.equal(delivery.headers['x-receiver'], name);
        assert.equal(delivery.headers['lc-signature'], hmac(secret, delivery.body), 'signed with its own secret over the raw body');
        assert.notEqual(delivery.headers['lc-signature'], hmac(other, delivery.body));
      }
    },
  },
  {
    name: 'webhooks: a failed job sends parse.error, a job with failed pages parse.partial_success, each signed',
    async run({ runner, fake, receiver }) {
      fake.setOutcome((fileName) => (fileName === 'failed.md' ? { status: 'FAILED', errorMessage: 'NO_DATA_FOUND_IN_FILE: nothing' } : fileName === 'partial.pdf' ? { failedPages: [1] } : null));
      const signed = { webhook_signing_secret: 'secret-s', webhook_headers: { 'X-Docpipe-Webhook-Token': 'v1.1.token' } };
      const failed = await runner.upload(await fixture('sample.md'), 'failed.md', { webhooks: docpipeHook(`${receiver.url}/failed`, signed) });
      const partial = await runner.upload(await fixture('sample.pdf'), 'partial.pdf', { webhooks: docpipeHook(`${receiver.url}/partial`, signed), allowedPageFailureRatio: 0.5 });
      await Promise.all([waitForEnd(runner, failed.jobId), waitForEnd(runner, partial.jobId)]);
      await fake.settled();
      const events = (path: string) => receiver.on(path).map((r) => decodeWebhook(r.body, 'json').event_type);
      assert.deepEqual(events('/failed'), ['parse.error']);
      assert.deepEqual(events('/partial'), ['parse.partial_success']);
      for (const delivery of [...receiver.on('/failed'), ...receiver.on('/partial')]) {
        assert.equal(delivery.headers['lc-signature'], hmac('secret-s', delivery.body));
        assert.equal(delivery.headers['x-docpipe-webhook-token'], 'v1.1.token');
      }
    },
  },
  {
    name: 'webhooks: a cancelled job sends parse.cancelled when subscribed',
    async run({ runner, fake, receiver }) {
      fake.setProcessingMs(Number.POSITIVE_INFINITY);
      const cancelled = await runner.upload(await fixture('sample.txt'), 'sample.txt', { webhooks: docpipeHook(`${receiver.url}/cancelled`) });
      await runner.cancel(cancelled.jobId);
      await fake.settled();
      assert.deepEqual(receiver.on('/cancelled').map((r) => decodeWebhook(r.body, 'json').event_type), ['parse.cancelled']);
    },
  },
  {
    name: 'webhooks: a failed delivery is tried again; any 2xx ends it',
    async run({ runner, fake, receiver }) {
      receiver.respond('/flaky', [503, 202]);
      const { jobId } = await runner.upload(await fixture('sample.md'), 'sample.md', { webhooks: docpipeHook(`${receiver.url}/flaky`) });
      await waitForEnd(runner, jobId);
      await fake.settled();
      assert.equal(receiver.on('/flaky').length, 2);
      const attempts = fake.deliveries.filter((d) => d.jobId === jobId);
      assert.deepEqual(attempts.map((d) => [d.attempt, d.status]), [[1, 503], [2, 202]]);
      assert.equal(new Set(attempts.map((d) => d.eventId)).size, 1, 'a retry is the same event');
    },
  },
  {
    name: 'cache: the same bytes and options again are COMPLETED at once, for 0 credits, without a webhook; another tier parses again',
    async run({ runner, fake, receiver }) {
      const bytes = await fixture('sample.md');
      const hooks = docpipeHook(`${receiver.url}/cached`);
      const first = await runner.upload(bytes, 'sample.md', { webhooks: hooks });
      assert.equal((await waitForEnd(runner, first.jobId)).credits, FAKE_CREDITS_PER_PAGE.cost_effective);

      const hit = await runner.upload(bytes, 'again.md', { webhooks: hooks });
      assert.equal(hit.status, 'COMPLETED', 'a cache hit is done at once');
      assert.equal(hit.credits, 0);
      assert.equal(fake.jobs.get(hit.jobId)!.cacheHit, true);
      const result = await runner.result(hit.jobId);
      assert.match(result.markdownFull, /# Keepers of the Northern Lights/);

      const otherTier = await runner.upload(bytes, 'sample.md', { tier: 'agentic' });
      assert.equal((await waitForEnd(runner, otherTier.jobId)).credits, FAKE_CREDITS_PER_PAGE.agentic, 'other options, no hit');

      await fake.settled();
      const notified = new Set(receiver.on('/cached').map((r) => decodeWebhook(r.body, 'json').data.job_id));
      assert.deepEqual([...notified], [first.jobId], 'the cache hit sent no webhook');
    },
  },
  {
    name: 'cache: disable_cache parses the same bytes again',
    async run({ runner }) {
      const bytes = await fixture('sample.md');
      const first = await runner.upload(bytes, 'sample.md');
      await waitForEnd(runner, first.jobId);
      const fresh = await runner.upload(bytes, 'sample.md', { disableCache: true });
      assert.notEqual(fresh.status, 'COMPLETED');
      assert.equal((await waitForEnd(runner, fresh.jobId)).credits, FAKE_CREDITS_PER_PAGE.cost_effective);
    },
  },
  {
    name: 'processing_control.timeouts: recorded as sent, and a job that outlives base + per page x pages FAILS with TIMEOUT',
    async run({ runner, fake }) {
      const generous = await runner.upload(await fixture('sample.md'), 'sample.md', { timeouts: { base_in_seconds: 1800, extra_time_per_page_in_seconds: 60 } });
      assert.deepEqual(fake.jobs.get(generous.jobId)!.timeouts, { base_in_seconds: 1800, extra_time_per_page_in_seconds: 60 });
      assert.equal((await waitForEnd(runner, generous.jobId)).status, 'COMPLETED');

      // 2.5 s of work on a two-page PDF: over a 1 s limit, under 1 s + 1 s x 2 pages.
      fake.setProcessingMs(2500);
      const bytes = await fixture('sample.pdf');
      // Bytes of their own (a comment after %%EOF), so neither is a cache hit of the other.
      const [tight, perPage] = await Promise.all([
        runner.upload(Buffer.concat([bytes, Buffer.from('\n% tight\n')]), 'tight.pdf', { timeouts: { base_in_seconds: 1, extra_time_per_page_in_seconds: 0 } }),
        runner.upload(Buffer.concat([bytes, Buffer.from('\n% per page\n')]), 'per-page.pdf', { timeouts: { base_in_seconds: 1, extra_time_per_page_in_seconds: 1 } }),
      ]);
      const [tightEnd, perPageEnd] = await Promise.all([waitForEnd(runner, tight.jobId), waitForEnd(runner, perPage.jobId)]);
      assert.equal(tightEnd.status, 'FAILED');
      assert.match(tightEnd.errorMessage ?? '', /^TIMEOUT\b/);
      const took = fake.jobs.get(tight.jobId)!.finishedAt!.getTime() - fake.jobs.get(tight.jobId)!.createdAt.getTime();
      assert.ok(took >= 900 && took < 2400, `failed at its limit, after ${took} ms`);
      assert.equal(perPageEnd.status, 'COMPLETED');
    },
  },
];

// --- running the cases ---------------------------------------------------------------------------

const RETRY_DELAYS_MS = [50, 100];

for (const { name, create, skip } of RUNNERS) {
  describe(`LlamaParse v2 contract: ${name}`, { skip }, () => {
    let fake: FakeLlamaParse;
    let receiver: Receiver;
    let runner: ParseRunner;
    before(async () => {
      [fake, receiver] = await Promise.all([startFakeLlamaParse({ webhookRetryDelaysMs: RETRY_DELAYS_MS }), startReceiver()]);
      runner = create(fake);
    });
    after(async () => {
      await fake?.close();
      await receiver?.close();
    });
    beforeEach(async () => {
      await fake.settled();
      fake.reset();
      fake.clearCache();
      fake.setProcessingMs(30);
      receiver.reset();
    });

    for (const c of contractCases) {
      test(c.name, async (t: TestContext) => {
        try {
          await c.run({ runner, fake, receiver });
        } catch (err) {
          if (err instanceof Unsupported) return t.skip(`${name}: ${err.message}`);
          throw err;
        }
      });
    }
  });
}

// --- what only the SDK shows -----------------------------------------------------------------------

describe('LlamaParse v2: the official SDK against the fake', () => {
  let fake: FakeLlamaParse;
  let client: LlamaCloud;
  before(async () => {
    fake = await startFakeLlamaParse({ webhookRetryDelaysMs: RETRY_DELAYS_MS });
    client = sdkClient(fake);
  });
  after(() => fake?.close());
  beforeEach(async () => {
    await fake.settled();
    fake.reset();
    fake.clearCache();
    fake.setProcessingMs(30);
  });

  const upload = async (name = 'sample.md') => toFile(await fixture(name), name);

  test('the upload is multipart with exactly `file` and `configuration`; the job records the configuration as sent', async () => {
    const webhooks = [{ webhook_url: 'https://hooks.example.com/llamaparse', webhook_events: ['parse.success'], webhook_output_format: 'json' as const }];
    const job = await client.parsing.create({
      tier: 'agentic',
      version: '2026-09-07',
      upload_file: await upload(),
      webhook_configurations: webhooks,
      processing_control: { timeouts: { base_in_seconds: 600, extra_time_per_page_in_seconds: 30 } },
      user_metadata: { document: 'doc-1' },
    });
    assert.match(job.id, /^pjb-/);
    assert.equal(job.status, 'PENDING');
    assert.equal(job.tier, 'agentic');
    assert.equal(typeof job.project_id, 'string');
    assert.deepEqual(job.user_metadata, { document: 'doc-1' });
    const recorded = fake.jobs.get(job.id)!;
    assert.deepEqual(recorded.extraFields, []);
    assert.equal(recorded.source, 'upload');
    assert.equal(recorded.fileName, 'sample.md');
    assert.equal(recorded.mediaType, 'text/markdown');
    assert.equal(recorded.version, '2026-09-07');
    assert.equal(recorded.resolvedVersion, '2026-09-07');
    assert.deepEqual(recorded.webhookConfigs, webhooks);
    assert.deepEqual(recorded.configuration, {
      tier: 'agentic',
      version: '2026-09-07',
      webhook_configurations: webhooks,
      processing_control: { timeouts: { base_in_seconds: 600, extra_time_per_page_in_seconds: 30 } },
      user_metadata: { document: 'doc-1' },
    });
    assert.equal(fake.calls.at(-1)!.authorization, `Bearer ${fake.apiKey}`);
  });

  test('get repeats `expand`; without expand there is only the job; content is null until COMPLETED', async () => {
    fake.setProcessingMs(Number.POSITIVE_INFINITY);
    const job = await client.parsing.create({ tier: 'cost_effective', version: 'latest', upload_file: await upload('sample.pdf') });
    const plain = await client.parsing.get(job.id);
    assert.deepEqual(Object.keys(plain), ['job']);
    const early = await client.parsing.get(job.id, { expand: ['markdown'] });
    assert.equal(early.markdown, null);
    await fake.finishJob(job.id);

    const full = await client.parsing.get(job.id, { expand: ['markdown', 'markdown_full', 'text', 'text_full', 'metadata', 'job_metadata', 'items', 'usage'] });
    assert.deepEqual(fake.calls.at(-1)!.query.expand, ['markdown', 'markdown_full', 'text', 'text_full', 'metadata', 'job_metadata', 'items', 'usage']);
    assert.equal(fake.calls.at(-1)!.route, 'result');
    assert.equal(fake.calls.at(-3)!.route, 'status');
    assert.equal(full.job.status, 'COMPLETED');
    assert.equal(full.job.usage?.credits, 2 * FAKE_CREDITS_PER_PAGE.cost_effective);
    assert.equal(full.markdown?.pages.length, 2);
    assert.equal(full.text?.pages.length, 2);
    assert.match(full.text_full ?? '', /Henry Winstanley raised[\s\S]*James Douglass/);
    assert.deepEqual(full.metadata?.pages.map((p) => p.page_number), [1, 2]);
    assert.equal(full.items?.pages.length, 2);
    assert.equal(full.job_metadata?.job_pages, 2);
    assert.equal(full.job_metadata?.job_is_cache_hit, false);
    await assert.rejects(client.parsing.get(job.id, { expand: ['everything'] }), UnprocessableEntityError);
  });

  test('the error classes: 422 with a FastAPI detail list, 401, 403, 404, 400, 429 without Retry-After', async () => {
    const err422 = await client.parsing.create({ tier: 'turbo', version: 'latest', upload_file: await upload() }).catch((e: unknown) => e);
    assert.ok(err422 instanceof UnprocessableEntityError);
    const detail = (err422.error as { detail: Array<{ type: string; loc: unknown[]; msg: string; input: unknown }> }).detail;
    assert.ok(Array.isArray(detail));
    assert.deepEqual(detail[0]!.loc, ['body', 'configuration', 'tier']);
    assert.equal(detail[0]!.type, 'literal_error');
    assert.equal(detail[0]!.input, 'turbo');
    assert.equal(typeof detail[0]!.msg, 'string');

    const missing = await client.parsing.create({ upload_file: await upload() } as never).catch((e: unknown) => e);
    assert.ok(missing instanceof UnprocessableEntityError);
    assert.deepEqual(
      (missing.error as { detail: Array<{ type: string; loc: unknown[] }> }).detail.map((d) => [d.type, d.loc.at(-1)]),
      [['missing', 'tier'], ['missing', 'version']],
    );
    const badHook = await client.parsing
      .create({ tier: 'fast', version: 'latest', upload_file: await upload(), webhook_configurations: [{ webhook_url: 'https://x.example', webhook_output_format: 'xml' as never }] })
      .catch((e: unknown) => e);
    assert.ok(badHook instanceof UnprocessableEntityError);
    const insecure = await client.parsing
      .create({ tier: 'fast', version: 'latest', upload_file: await upload(), webhook_configurations: [{ webhook_url: 'http://hooks.example.com/x' }] })
      .catch((e: unknown) => e);
    assert.ok(insecure instanceof UnprocessableEntityError, 'plain http only to loopback');
    const badTimeout = await client.parsing
      .create({ tier: 'fast', version: 'latest', upload_file: await upload(), processing_control: { timeouts: { base_in_seconds: 99_999 } } })
      .catch((e: unknown) => e);
    assert.ok(badTimeout instanceof UnprocessableEntityError);

    const before = fake.requests.upload;
    const err401 = await sdkClient(fake, { apiKey: 'llx-wrong' })
      .parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload() })
      .catch((e: unknown) => e);
    assert.ok(err401 instanceof AuthenticationError);
    assert.deepEqual(err401.error, { detail: 'Invalid API Key' });
    assert.equal(fake.requests.upload - before, 1);

    const err404 = await client.parsing.get('pjb-unknown').catch((e: unknown) => e);
    assert.ok(err404 instanceof NotFoundError);
    assert.equal(typeof (err404.error as { detail: unknown }).detail, 'string');

    const fast = await client.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload() });
    const err400 = await client.parsing.get(fast.id, { expand: ['markdown_full'] }).catch((e: unknown) => e);
    assert.ok(err400 instanceof BadRequestError);
    assert.deepEqual(err400.error, { detail: FAST_TIER_MARKDOWN_ERROR });

    fake.failNext('status', 429);
    const err429 = await sdkClient(fake, { maxRetries: 0 }).parsing.get(fast.id).catch((e: unknown) => e);
    assert.ok(err429 instanceof RateLimitError);
    assert.equal(err429.headers.get('retry-after'), null);
  });

  test('organization and project: a wrong project_id is 403; the job belongs to the project asked for', async () => {
    const scoped = await startFakeLlamaParse({ requireProjectId: 'prj-1', requireOrganizationId: 'org-1' });
    try {
      const scopedClient = sdkClient(scoped);
      const job = await scopedClient.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload(), project_id: 'prj-1', organization_id: 'org-1' });
      assert.equal(job.project_id, 'prj-1');
      assert.equal(scoped.jobs.get(job.id)!.projectId, 'prj-1');
      assert.equal(scoped.jobs.get(job.id)!.organizationId, 'org-1');
      await assert.rejects(
        scopedClient.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload(), project_id: 'prj-2' }),
        PermissionDeniedError,
      );
      await assert.rejects(scopedClient.parsing.get(job.id, { organization_id: 'org-2' }), PermissionDeniedError);
    } finally {
      await scoped.close();
    }
  });

  test('a dropped connection is retried by the SDK', async () => {
    const job = await client.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload() });
    const before = fake.requests.status;
    fake.failNext('status', 0);
    assert.equal((await client.parsing.get(job.id)).job.id, job.id);
    assert.equal(fake.requests.status - before, 2);
  });

  test('versions: listVersions names each tier`s versions and `latest`; a pinned version resolves, an unknown one is a 422', async () => {
    const versions = await client.parsing.listVersions();
    assert.deepEqual(versions.latest, FAKE_LATEST_VERSIONS);
    for (const tier of Object.keys(FAKE_VERSIONS) as FakeTier[]) assert.deepEqual(versions[tier], FAKE_VERSIONS[tier]);
    const latest = await client.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload() });
    assert.equal(fake.jobs.get(latest.id)!.resolvedVersion, FAKE_LATEST_VERSIONS.fast);
    await assert.rejects(client.parsing.create({ tier: 'fast', version: '2026-09-07', upload_file: await upload() }), UnprocessableEntityError);
  });

  test('the Files API then parse by file_id; an unknown file_id is a 422', async () => {
    const file = await client.files.create({ file: await upload('sample.pdf'), purpose: 'parse' });
    assert.equal(file.name, 'sample.pdf');
    assert.equal(file.purpose, 'parse');
    const job = await client.parsing.create({ tier: 'cost_effective', version: 'latest', file_id: file.id });
    assert.equal(fake.jobs.get(job.id)!.source, 'file_id');
    const done = await client.parsing.waitForCompletion(job.id, { expand: ['markdown'] }, { pollingInterval: 0.02, maxInterval: 0.05 });
    assert.equal(done.markdown?.pages.length, 2);
    await assert.rejects(client.parsing.create({ tier: 'fast', version: 'latest', file_id: 'no-such-file' }), UnprocessableEntityError);
    await assert.rejects(client.parsing.create({ tier: 'fast', version: 'latest' }), UnprocessableEntityError, 'neither file_id nor source_url');
  });

  test('parse() polls to the end and throws PollingError on a FAILED job', async () => {
    const ok = await client.parsing.parse(
      { tier: 'cost_effective', version: 'latest', upload_file: await upload(), expand: ['markdown_full'] },
      { pollingInterval: 0.02, maxInterval: 0.05 },
    );
    assert.match(ok.markdown_full ?? '', /# Keepers of the Northern Lights/);
    fake.setOutcome(() => ({ status: 'FAILED', errorMessage: 'DOCUMENT_TOO_LARGE: the document is too large' }));
    await assert.rejects(
      client.parsing.parse({ tier: 'cost_effective', version: 'latest', upload_file: await upload('sample.txt'), expand: ['markdown_full'] }, { pollingInterval: 0.02, maxInterval: 0.05 }),
      (err: unknown) => err instanceof PollingError && /DOCUMENT_TOO_LARGE/.test(err.message),
    );
  });

  test('delete: an ended job is deleted (then 404); a running one must be cancelled first (400)', async () => {
    fake.setProcessingMs(Number.POSITIVE_INFINITY);
    const job = await client.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload() });
    await assert.rejects(client.parsing.delete(job.id), BadRequestError);
    await client.parsing.cancel(job.id);
    assert.deepEqual(await client.parsing.delete(job.id), { id: job.id, project_id: job.project_id });
    await assert.rejects(client.parsing.get(job.id), NotFoundError);
    assert.equal(fake.jobs.get(job.id)!.deleted, true);
  });

  test('list pages through the jobs (page_token) and filters by status', async () => {
    fake.setProcessingMs(Number.POSITIVE_INFINITY);
    const ids = new Set<string>();
    for (const name of ['sample.md', 'sample.txt', 'sample.html']) ids.add((await client.parsing.create({ tier: 'fast', version: 'latest', upload_file: await upload(name) })).id);
    const seen: string[] = [];
    for await (const job of client.parsing.list({ page_size: 2, status: 'PENDING' })) seen.push(job.id);
    assert.ok([...ids].every((id) => seen.includes(id)));
    assert.ok(fake.calls.filter((c) => c.route === 'list').length >= 2, 'more than one page');
    for (const id of ids) await client.parsing.cancel(id);
  });
});
