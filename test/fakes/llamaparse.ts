// A fake LlamaCloud parsing API (v1) for tests and local runs: a real HTTP server on
// 127.0.0.1 that behaves like LlamaCloud's documented v1 parsing API, awkward parts
// included. Jobs stay PENDING for a while, then are parsed with the project's local parser;
// webhooks carry only the job id, default to a JSON-encoded *string* body, are retried three
// times and may be signed; the legacy `webhook_url` receives the result itself.
//
// Tests drive faults through the returned object (failNext, setOutcome, setWebhookMode,
// setProcessingMs, finishJob) and assert on what it recorded (jobs, deliveries, requests,
// calls). The same controls are exposed over HTTP under /_fake/... for out-of-process users.
import { createHmac, randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { extname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyRequest } from 'fastify';
import { createLocalParser, PAGE_SEPARATOR } from '../../src/providers/parser/local.ts';
import { sniffMediaType, SNIFF_BYTES } from '../../src/providers/parser/sniff.ts';
import { SUPPORTED_MEDIA_TYPES, UnparseableDocumentError, type MediaType } from '../../src/providers/types.ts';

export type FakeRoute = 'upload' | 'status' | 'result';
export type FakeJobStatus = 'PENDING' | 'SUCCESS' | 'ERROR' | 'PARTIAL_SUCCESS' | 'CANCELLED';

/** How a job should end instead of a normal parse. PARTIAL_SUCCESS still has a result. */
export interface FakeJobOutcome {
  status: 'ERROR' | 'PARTIAL_SUCCESS' | 'CANCELLED';
  errorCode?: string | null;
  errorMessage?: string | null;
}
export type FakeOutcomeFn = (fileName: string, bytes: Buffer) => FakeJobOutcome | null;

/** The first entry of `webhook_configurations`, as the client sent it. */
export interface FakeWebhookConfig {
  webhook_url: string;
  webhook_events?: string[];
  webhook_headers?: Record<string, string>;
  webhook_output_format?: string;
}

export interface FakeJob {
  id: string;
  status: FakeJobStatus;
  fileName: string;
  /** What the fake decided the file is (sniffed), null when it could not tell. */
  mediaType: MediaType | null;
  parseMode: string | null;
  maxPages: number | null;
  webhookConfig: FakeWebhookConfig | null;
  legacyWebhookUrl: string | null;
  /** organization_id / project_id query of the upload. */
  organizationId: string | null;
  projectId: string | null;
  createdAt: Date;
  finishedAt: Date | null;
  errorCode: string | null;
  errorMessage: string | null;
  /** Per-page result (empty until finished, and for failed jobs). */
  pages: Array<{ page: number; text: string; md: string }>;
}

export interface FakeDelivery {
  jobId: string;
  /** Null for legacy `webhook_url` deliveries, which carry no event. */
  eventId: string | null;
  eventType: string;
  url: string;
  attempt: number;
  /** The receiver's HTTP status, or `error` when there was no answer. */
  status?: number;
  error?: string;
  /** The raw body as sent. */
  body: string;
  headers: Record<string, string>;
  at: Date;
}

/**
 * deliver: normal. drop: nothing is ever sent. duplicate: each delivery is sent twice with the
 * same event_id. outOfOrder: a stale `parse.running` event follows the terminal one.
 */
export type FakeWebhookMode = 'deliver' | 'drop' | 'duplicate' | 'outOfOrder';

export interface FakeCall {
  route: FakeRoute;
  method: string;
  url: string;
  query: Record<string, string>;
  authorization: string | null;
  at: Date;
}

export interface FakeLlamaParseOptions {
  apiKey?: string;
  port?: number;
  /** How long a job stays PENDING before it is parsed; Infinity: only finishJob() ends it. Default 30. */
  processingMs?: number;
  /** LlamaCloud's webhook_signing_secret: deliveries then carry LC-Signature. */
  signingSecret?: string;
  /** Waits between the 3 delivery attempts. Default [1000, 2000]. */
  webhookRetryDelaysMs?: number[];
  /** When set, a request with a different organization_id / project_id query gets 403. */
  requireOrganizationId?: string;
  requireProjectId?: string;
}

export interface FakeLlamaParse {
  /** Base URL, e.g. http://127.0.0.1:41234 (pass as the adapter's baseUrl). */
  readonly url: string;
  readonly apiKey: string;
  readonly jobs: Map<string, FakeJob>;
  readonly deliveries: FakeDelivery[];
  /** Every API request by route, rejected ones included (admin routes excluded). */
  readonly requests: Record<FakeRoute, number>;
  readonly calls: FakeCall[];
  readonly webhooks: { mode: FakeWebhookMode; delayMs: number };
  /**
   * The next `count` requests to `route` answer `status` (with `headers`) before auth or any
   * processing. Status 0 drops the connection; status -1 never answers (a hung server).
   */
  failNext(route: FakeRoute, status: number, count?: number, headers?: Record<string, string>): void;
  setOutcome(fn: FakeOutcomeFn | null): void;
  setWebhookMode(mode: FakeWebhookMode, delayMs?: number): void;
  /** Applies to jobs uploaded afterwards. */
  setProcessingMs(ms: number): void;
  /** Finishes a PENDING job now: normally (parse) when `outcome` is omitted or null. */
  finishJob(jobId: string, outcome?: FakeJobOutcome | null): Promise<FakeJob>;
  /** Resolves when every scheduled webhook delivery has finished (bounded by `timeoutMs`). */
  settled(timeoutMs?: number): Promise<void>;
  /** Clears fault injection, the outcome function and the webhook mode; keeps jobs and logs. */
  reset(): void;
  close(): Promise<void>;
}

const DEFAULT_API_KEY = 'llx-fake-0123456789abcdef';
const ALL_EVENTS = ['parse.pending', 'parse.running', 'parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled'];
const EVENT_FOR_STATUS: Record<Exclude<FakeJobStatus, 'PENDING'>, string> = {
  SUCCESS: 'parse.success',
  ERROR: 'parse.error',
  PARTIAL_SUCCESS: 'parse.partial_success',
  CANCELLED: 'parse.cancelled',
};
const WEBHOOK_ATTEMPTS = 3;
const WEBHOOK_TIMEOUT_MS = 30_000;
const LLAMA_PAGE_BREAK = '\n---\n';
const DOCX: MediaType = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';
const BY_EXTENSION: Record<string, MediaType> = {
  '.pdf': 'application/pdf',
  '.docx': DOCX,
  '.html': 'text/html',
  '.htm': 'text/html',
  '.md': 'text/markdown',
  '.markdown': 'text/markdown',
  '.txt': 'text/plain',
};

export async function startFakeLlamaParse(options: FakeLlamaParseOptions = {}): Promise<FakeLlamaParse> {
  const apiKey = options.apiKey ?? DEFAULT_API_KEY;
  const retryDelays = options.webhookRetryDelaysMs ?? [1000, 2000];
  let processingMs = options.processingMs ?? 30;
  let outcomeFn: FakeOutcomeFn | null = null;
  let closed = false;

  const parser = createLocalParser();
  const jobs = new Map<string, FakeJob>();
  const bytesOf = new Map<string, Buffer>();
  const finishing = new Map<string, Promise<FakeJob>>();
  const timers = new Map<string, NodeJS.Timeout>();
  const deliveryChains = new Map<string, Promise<void>>();
  const pending = new Set<Promise<unknown>>();
  const hungSockets = new Set<Socket>();
  const faults: Record<FakeRoute, Array<{ status: number; headers: Record<string, string> }>> = { upload: [], status: [], result: [] };
  const deliveries: FakeDelivery[] = [];
  const requests: Record<FakeRoute, number> = { upload: 0, status: 0, result: 0 };
  const calls: FakeCall[] = [];
  const webhooks: { mode: FakeWebhookMode; delayMs: number } = { mode: 'deliver', delayMs: 0 };
  const shutdown = new AbortController();

  function track<T>(promise: Promise<T>): Promise<T> {
    pending.add(promise);
    void promise.finally(() => pending.delete(promise)).catch(() => undefined);
    return promise;
  }

  // --- processing -------------------------------------------------------------------------

  function schedule(job: FakeJob): void {
    if (!Number.isFinite(processingMs)) return;
    const timer = setTimeout(() => {
      timers.delete(job.id);
      void finish(job.id, undefined).catch(() => undefined);
    }, processingMs);
    timers.set(job.id, timer);
  }

  /** Ends a job once; `override` undefined: consult setOutcome's function, then parse. */
  function finish(jobId: string, override: FakeJobOutcome | null | undefined): Promise<FakeJob> {
    const job = jobs.get(jobId);
    if (!job) return Promise.reject(new Error(`fake llamaparse: no job ${jobId}`));
    const running = finishing.get(jobId);
    if (running) return running;
    if (job.status !== 'PENDING') return Promise.reject(new Error(`fake llamaparse: job ${jobId} already ${job.status}`));
    clearTimeout(timers.get(jobId));
    timers.delete(jobId);
    const promise = track(run(job, override));
    finishing.set(jobId, promise);
    return promise;
  }

  async function run(job: FakeJob, override: FakeJobOutcome | null | undefined): Promise<FakeJob> {
    emit(job, 'parse.running');
    const bytes = bytesOf.get(job.id) ?? Buffer.alloc(0);
    const outcome = override !== undefined ? override : (outcomeFn?.(job.fileName, bytes) ?? null);

    let pages: FakeJob['pages'] = [];
    let failure: { code: string; message: string } | null = null;
    if (outcome === null || outcome.status === 'PARTIAL_SUCCESS') {
      try {
        pages = await parsePages(bytes, job.mediaType, job.maxPages);
      } catch (err) {
        failure = describeFailure(err);
      }
    }

    job.finishedAt = new Date();
    if (outcome) {
      job.status = outcome.status;
      job.errorCode = outcome.errorCode ?? null;
      job.errorMessage = outcome.errorMessage ?? null;
      job.pages = outcome.status === 'PARTIAL_SUCCESS' ? pages : [];
    } else if (failure) {
      job.status = 'ERROR';
      job.errorCode = failure.code;
      job.errorMessage = failure.message;
    } else {
      job.status = 'SUCCESS';
      job.pages = pages;
    }
    bytesOf.delete(job.id);

    const terminal = EVENT_FOR_STATUS[job.status as Exclude<FakeJobStatus, 'PENDING'>];
    emit(job, terminal);
    if (webhooks.mode === 'outOfOrder') emit(job, 'parse.running', { force: true });
    if (job.legacyWebhookUrl && (job.status === 'SUCCESS' || job.status === 'PARTIAL_SUCCESS')) emitLegacy(job);
    return job;
  }

  async function parsePages(bytes: Buffer, mediaType: MediaType | null, maxPages: number | null): Promise<FakeJob['pages']> {
    if (bytes.length === 0) throw new UnparseableDocumentError('the file is empty');
    if (mediaType === null) throw new UnparseableDocumentError('the file type could not be read');
    const parsed = await parser.parse(bytes, mediaType);
    // The local parser separates PDF pages; other formats are one page.
    let mds = mediaType === 'application/pdf' ? parsed.markdown.split(PAGE_SEPARATOR) : [parsed.markdown];
    if (maxPages !== null) mds = mds.slice(0, maxPages);
    if (mds.every((md) => md.trim() === '')) throw new UnparseableDocumentError('no text found');
    return mds.map((md, i) => ({ page: i + 1, md, text: markdownToText(md) }));
  }

  // --- webhooks ---------------------------------------------------------------------------

  /** Queues one event for the job's webhook, if it has one that subscribes to the event. */
  function emit(job: FakeJob, eventType: string, { force = false } = {}): void {
    const config = job.webhookConfig;
    if (!config || webhooks.mode === 'drop') return;
    // Without webhook_events the service sends every event.
    const events = config.webhook_events ?? ALL_EVENTS;
    if (!force && !events.includes(eventType)) return;
    const payload = {
      event_id: randomUUID(),
      event_type: eventType,
      timestamp: Date.now() / 1000,
      data: { id: job.id, job_id: job.id },
    };
    // "string" (the default) delivers the JSON-encoded string of the payload.
    const body = config.webhook_output_format === 'json' ? JSON.stringify(payload) : JSON.stringify(JSON.stringify(payload));
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'User-Agent': 'llamaindex-webhook-service/1.0',
      'X-Webhook-Event-ID': payload.event_id,
      'X-Webhook-Event-Type': eventType,
      ...(config.webhook_headers ?? {}),
    };
    if (options.signingSecret) {
      headers['LC-Signature'] = `sha256=${createHmac('sha256', options.signingSecret).update(body).digest('hex')}`;
    }
    enqueue(job.id, { jobId: job.id, eventId: payload.event_id, eventType, url: config.webhook_url, body, headers });
  }

  /** The legacy `webhook_url`: the result itself, no job id, no signature. */
  function emitLegacy(job: FakeJob): void {
    if (!job.legacyWebhookUrl || webhooks.mode === 'drop') return;
    const body = JSON.stringify({
      txt: job.pages.map((p) => p.text).join(LLAMA_PAGE_BREAK),
      md: job.pages.map((p) => p.md).join(LLAMA_PAGE_BREAK),
      json: job.pages.map((p) => ({ page: p.page, text: p.text, md: p.md })),
      images: [],
    });
    const headers = { 'Content-Type': 'application/json', 'User-Agent': 'llamaindex-webhook-service/1.0' };
    enqueue(job.id, { jobId: job.id, eventId: null, eventType: 'legacy', url: job.legacyWebhookUrl, body, headers });
  }

  type Outgoing = Omit<FakeDelivery, 'attempt' | 'status' | 'error' | 'at'>;

  /** Deliveries of one job go out in order, one after the other. */
  function enqueue(jobId: string, message: Outgoing): void {
    const times = webhooks.mode === 'duplicate' ? 2 : 1;
    const delayMs = webhooks.delayMs;
    const previous = deliveryChains.get(jobId) ?? Promise.resolve();
    const next = previous.then(async () => {
      for (let i = 0; i < times; i++) {
        if (delayMs > 0) await pause(delayMs);
        await deliver(message);
      }
    });
    const chain = track(next.catch(() => undefined));
    deliveryChains.set(jobId, chain);
  }

  async function deliver(message: Outgoing): Promise<void> {
    for (let attempt = 1; attempt <= WEBHOOK_ATTEMPTS; attempt++) {
      if (closed) return;
      const record: FakeDelivery = { ...message, headers: { ...message.headers }, attempt, at: new Date() };
      deliveries.push(record);
      try {
        const response = await fetch(message.url, {
          method: 'POST',
          headers: message.headers,
          body: message.body,
          signal: AbortSignal.any([shutdown.signal, AbortSignal.timeout(WEBHOOK_TIMEOUT_MS)]),
        });
        record.status = response.status;
        await response.arrayBuffer().catch(() => undefined);
        if (response.ok) return;
      } catch (err) {
        record.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
      if (attempt < WEBHOOK_ATTEMPTS) await pause(retryDelays[attempt - 1] ?? retryDelays.at(-1) ?? 1000);
    }
  }

  /** A wait that ends early (by throwing) when the fake closes. */
  function pause(ms: number): Promise<void> {
    return sleep(ms, undefined, { signal: shutdown.signal });
  }

  // --- HTTP -------------------------------------------------------------------------------

  const app = Fastify({ logger: false, forceCloseConnections: true });
  await app.register(multipart, { limits: { fileSize: 512 * 1024 * 1024, fieldSize: 1024 * 1024 } });

  // FastAPI-style errors: {"detail": "..."}.
  app.setErrorHandler((err: { statusCode?: number; message: string }, _request, reply) => {
    const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
    return reply.code(status).send({ detail: err.message });
  });
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ detail: 'Not Found' }));

  function routeOf(request: FastifyRequest): FakeRoute | null {
    const url = request.routeOptions.url;
    if (url === '/api/v1/parsing/upload') return 'upload';
    if (url === '/api/v1/parsing/job/:id') return 'status';
    if (url === '/api/v1/parsing/job/:id/result/:format') return 'result';
    return null;
  }

  app.addHook('onRequest', async (request, reply) => {
    const route = routeOf(request);
    if (!route) return;
    requests[route]++;
    const query = { ...(request.query as Record<string, string>) };
    const authorization = request.headers.authorization ?? null;
    calls.push({ route, method: request.method, url: request.url, query, authorization, at: new Date() });

    const fault = faults[route].shift();
    if (fault) {
      if (fault.status <= 0) {
        reply.hijack();
        if (fault.status === 0) request.raw.socket.destroy();
        else {
          const socket = request.raw.socket;
          hungSockets.add(socket);
          socket.once('close', () => hungSockets.delete(socket));
        }
        return reply;
      }
      return reply.code(fault.status).headers(fault.headers).send({ detail: defaultDetail(fault.status) });
    }
    if (authorization !== `Bearer ${apiKey}`) return reply.code(401).send({ detail: 'Invalid authentication token' });
    if (options.requireOrganizationId && query.organization_id !== undefined && query.organization_id !== options.requireOrganizationId) {
      return reply.code(403).send({ detail: 'You do not have access to this organization' });
    }
    if (options.requireProjectId && query.project_id !== undefined && query.project_id !== options.requireProjectId) {
      return reply.code(403).send({ detail: 'You do not have access to this project' });
    }
  });

  app.post('/api/v1/parsing/upload', async (request, reply) => {
    if (!request.isMultipart()) return reply.code(400).send({ detail: 'Expected multipart/form-data' });
    let file: { bytes: Buffer; fileName: string; mimetype: string } | null = null;
    const fields: Record<string, string> = {};
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        const bytes = await part.toBuffer(); // always drain, or the parser stalls
        if (part.fieldname === 'file' && !file) file = { bytes, fileName: part.filename, mimetype: part.mimetype };
      } else if (typeof part.value === 'string') {
        fields[part.fieldname] = part.value;
      }
    }
    if (!file) return reply.code(400).send({ detail: 'Either file or input_url must be provided' });

    let webhookConfig: FakeWebhookConfig | null = null;
    if (fields.webhook_configurations !== undefined && fields.webhook_configurations !== '') {
      const parsed = parseWebhookConfigurations(fields.webhook_configurations);
      if (typeof parsed === 'string') return reply.code(400).send({ detail: parsed });
      webhookConfig = parsed;
    }
    const legacyWebhookUrl = fields.webhook_url || null;
    if (legacyWebhookUrl !== null && (legacyWebhookUrl.length >= 200 || !/^https?:\/\//.test(legacyWebhookUrl))) {
      // The real service also insists on HTTPS and a domain name; the fake lets 127.0.0.1 through.
      return reply.code(400).send({ detail: 'Invalid webhook_url' });
    }
    let maxPages: number | null = null;
    if (fields.max_pages !== undefined && fields.max_pages !== '') {
      maxPages = Number(fields.max_pages);
      if (!Number.isSafeInteger(maxPages) || maxPages < 1) return reply.code(400).send({ detail: 'max_pages must be a positive integer' });
    }

    const query = request.query as Record<string, string | undefined>;
    const job: FakeJob = {
      id: randomUUID(),
      status: 'PENDING',
      fileName: file.fileName,
      mediaType: await detectMediaType(file.bytes, file.fileName, file.mimetype),
      parseMode: fields.parse_mode ?? null,
      maxPages,
      webhookConfig,
      legacyWebhookUrl,
      organizationId: query.organization_id ?? null,
      projectId: query.project_id ?? null,
      createdAt: new Date(),
      finishedAt: null,
      errorCode: null,
      errorMessage: null,
      pages: [],
    };
    jobs.set(job.id, job);
    bytesOf.set(job.id, file.bytes);
    emit(job, 'parse.pending');
    schedule(job);
    return jobBody(job);
  });

  app.get<{ Params: { id: string } }>('/api/v1/parsing/job/:id', async (request, reply) => {
    const job = jobs.get(request.params.id);
    if (!job) return reply.code(404).send({ detail: 'Job not found' });
    return jobBody(job);
  });

  app.get<{ Params: { id: string; format: string } }>('/api/v1/parsing/job/:id/result/:format', async (request, reply) => {
    const job = jobs.get(request.params.id);
    if (!job) return reply.code(404).send({ detail: 'Job not found' });
    const { format } = request.params;
    if (format !== 'markdown' && format !== 'text' && format !== 'json') return reply.code(404).send({ detail: 'Not Found' });
    if (job.status === 'PENDING') return reply.code(400).send({ detail: 'Job not completed' });
    if (job.status === 'ERROR' || job.status === 'CANCELLED') {
      return reply.code(400).send({ detail: `Job ${job.status === 'ERROR' ? 'failed' : 'was cancelled'}: ${job.errorMessage ?? job.status}` });
    }
    const jobMetadata = { job_pages: job.pages.length, job_auto_mode_triggered_pages: 0, job_is_cache_hit: false };
    if (format === 'markdown') return { markdown: job.pages.map((p) => p.md).join(LLAMA_PAGE_BREAK), job_metadata: jobMetadata };
    if (format === 'text') return { text: job.pages.map((p) => p.text).join(LLAMA_PAGE_BREAK) };
    return { pages: job.pages.map((p) => ({ page: p.page, text: p.text, md: p.md })), job_metadata: jobMetadata };
  });

  // --- admin API (no auth: the fake only listens on 127.0.0.1) ------------------------------

  app.post<{ Body: { route: FakeRoute; status: number; count?: number; headers?: Record<string, string> } }>(
    '/_fake/fail-next',
    async (request) => {
      const { route, status, count, headers } = request.body;
      if (!(route in faults) || typeof status !== 'number') throw Object.assign(new Error('route and status required'), { statusCode: 400 });
      control.failNext(route, status, count ?? 1, headers);
      return { ok: true };
    },
  );
  app.post<{ Body: { outcome: FakeJobOutcome | null; fileName?: string } }>('/_fake/outcome', async (request) => {
    const { outcome, fileName } = request.body ?? { outcome: null };
    control.setOutcome(outcome ? (name) => (fileName === undefined || fileName === name ? outcome : null) : null);
    return { ok: true };
  });
  app.post<{ Body: { mode: FakeWebhookMode; delayMs?: number } }>('/_fake/webhook-mode', async (request) => {
    control.setWebhookMode(request.body.mode, request.body.delayMs ?? 0);
    return { ok: true };
  });
  app.post<{ Body: { ms: number | null } }>('/_fake/processing-ms', async (request) => {
    control.setProcessingMs(request.body.ms ?? Number.POSITIVE_INFINITY); // null: finish by hand
    return { ok: true };
  });
  app.post<{ Params: { id: string }; Body: FakeJobOutcome | null }>('/_fake/jobs/:id/finish', async (request, reply) => {
    if (!jobs.has(request.params.id)) return reply.code(404).send({ detail: 'Job not found' });
    const body = request.body;
    return publicJob(await control.finishJob(request.params.id, body && body.status ? body : null));
  });
  app.get('/_fake/state', async () => ({ jobs: [...jobs.values()].map(publicJob), deliveries, requests, calls, webhooks }));
  app.post('/_fake/reset', async () => {
    control.reset();
    return { ok: true };
  });

  let baseUrl = '';
  const control: FakeLlamaParse = {
    get url() {
      return baseUrl;
    },
    apiKey,
    jobs,
    deliveries,
    requests,
    calls,
    webhooks,
    failNext(route, status, count = 1, headers = {}) {
      for (let i = 0; i < count; i++) faults[route].push({ status, headers });
    },
    setOutcome(fn) {
      outcomeFn = fn;
    },
    setWebhookMode(mode, delayMs = 0) {
      webhooks.mode = mode;
      webhooks.delayMs = delayMs;
    },
    setProcessingMs(ms) {
      processingMs = ms;
    },
    finishJob(jobId, outcome = null) {
      return finish(jobId, outcome);
    },
    async settled(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (pending.size > 0) {
        if (Date.now() > deadline) throw new Error(`fake llamaparse: ${pending.size} deliveries still pending after ${timeoutMs} ms`);
        await Promise.race([Promise.allSettled([...pending]), sleep(50)]);
      }
    },
    reset() {
      for (const route of Object.keys(faults) as FakeRoute[]) faults[route].length = 0;
      outcomeFn = null;
      webhooks.mode = 'deliver';
      webhooks.delayMs = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
      shutdown.abort();
      for (const socket of hungSockets) socket.destroy();
      const bound = (ms: number) => sleep(ms, undefined, { ref: false });
      await Promise.race([Promise.allSettled([...pending]), bound(5000)]);
      await Promise.race([app.close(), bound(5000)]);
    },
  };

  await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });
  const address = app.server.address();
  baseUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : options.port}`;
  return control;
}

function jobBody(job: FakeJob) {
  return { id: job.id, status: job.status, error_code: job.errorCode, error_message: job.errorMessage };
}

function publicJob(job: FakeJob) {
  return { ...job, pages: job.pages.length };
}

function parseWebhookConfigurations(raw: string): FakeWebhookConfig | null | string {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return 'webhook_configurations must be a JSON array';
  }
  if (!Array.isArray(value)) return 'webhook_configurations must be a JSON array';
  if (value.length === 0) return null;
  const first = value[0] as Partial<FakeWebhookConfig> | null; // only the first entry is used
  if (typeof first !== 'object' || first === null || typeof first.webhook_url !== 'string' || !/^https?:\/\//.test(first.webhook_url)) {
    return 'webhook_configurations[0].webhook_url must be an http(s) URL';
  }
  if (first.webhook_events !== undefined && !(Array.isArray(first.webhook_events) && first.webhook_events.every((e) => ALL_EVENTS.includes(e)))) {
    return `webhook_configurations[0].webhook_events must be a list of ${ALL_EVENTS.join(', ')}`;
  }
  if (first.webhook_output_format !== undefined && first.webhook_output_format !== 'string' && first.webhook_output_format !== 'json') {
    return 'webhook_configurations[0].webhook_output_format must be "string" or "json"';
  }
  return first as FakeWebhookConfig;
}

/** By the bytes first, like docpipe itself; then the part's Content-Type, then the extension. */
async function detectMediaType(bytes: Buffer, fileName: string, mimetype: string): Promise<MediaType | null> {
  const sniffed = await sniffMediaType(bytes.subarray(0, SNIFF_BYTES), fileName);
  if (sniffed) return sniffed;
  if ((SUPPORTED_MEDIA_TYPES as readonly string[]).includes(mimetype)) return mimetype as MediaType;
  return BY_EXTENSION[extname(fileName).toLowerCase()] ?? null;
}

function describeFailure(err: unknown): { code: string; message: string } {
  if (err instanceof UnparseableDocumentError) return { code: 'NO_DATA_FOUND_IN_FILE', message: `No data found in file: ${err.message}` };
  return { code: 'INTERNAL_ERROR', message: err instanceof Error ? err.message : String(err) };
}

/** The `text` flavour of a page: the markdown without its most common syntax. */
function markdownToText(md: string): string {
  return md
    .replace(/^#{1,6}\s+/gm, '')
    .replace(/(\*\*|__)(.*?)\1/g, '$2')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
}

function defaultDetail(status: number): string {
  if (status === 401) return 'Invalid authentication token';
  if (status === 403) return 'You do not have access to this project';
  if (status === 429) return 'Rate limit exceeded';
  if (status >= 500) return 'Internal Server Error';
  return 'Bad Request';
}
