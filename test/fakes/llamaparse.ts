// A fake LlamaCloud parse API (v2) for tests and local runs: a real HTTP server on 127.0.0.1
// that behaves like LlamaCloud's documented v2 parse API, awkward parts included, and that the
// official SDK (@llamaindex/llama-cloud) accepts. Jobs go PENDING, then RUNNING, then end after a
// configurable processing time; content is parsed with the project's local parser and split per
// page. Validation errors are FastAPI's 422 `{"detail":[{type, loc, msg, input}]}`, other errors
// `{"detail": "..."}`; a 429 carries no Retry-After. Failures have only `error_message`, the
// reason code inside it ("NO_DATA_FOUND_IN_FILE: ..."). A job is COMPLETED with some pages
// `success: false`, or FAILED when more than `allowed_page_failure_ratio` of its pages failed,
// or when it outlives `processing_control.timeouts`. Fast-tier jobs have no markdown. A cache
// hit (same bytes, same options) is COMPLETED at once, costs 0 credits and sends no webhook.
// Webhooks go to every entry of `webhook_configurations`, each with its own event filter,
// headers, output format ("string", the default, sends a JSON-encoded string) and signing
// secret; they carry only the job id and are tried three times.
//
// Tests drive faults through the returned object (failNext, setOutcome, setWebhookMode,
// setProcessingMs, finishJob, clearCache) and assert on what it recorded (jobs, deliveries,
// requests, calls). The same controls are exposed over HTTP under /_fake/... for out-of-process
// users (scripts/fakes.ts).
//
// What the fake assumes where the documentation is silent: the cache key is the file's bytes
// plus the configuration without its notification and bookkeeping keys (webhooks, disable_cache,
// user_metadata, client_name, processing_control); one event id per event, shared by all
// configurations; time limits are enforced only when the client sends `timeouts`, counted from
// the job's creation; `markdown_full`/`text_full` join the successful pages with PAGE_SEPARATOR.
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { isIP, type Socket } from 'node:net';
import { basename, extname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { createLocalParser, PAGE_SEPARATOR } from '../../src/providers/parser/local.ts';
import { sniffMediaType, SNIFF_BYTES } from '../../src/providers/parser/sniff.ts';
import { DocumentLimitError, SUPPORTED_MEDIA_TYPES, UnparseableDocumentError, type MediaType } from '../../src/providers/types.ts';

// --- public types -------------------------------------------------------------------------

/**
 * Which requests failNext() and `requests` count. upload: POST /api/v2/parse/upload and POST
 * /api/v2/parse (job creation); status: GET /api/v2/parse/{id} without `expand`; result: the
 * same with `expand`; files: POST /api/v1/beta/files.
 */
export type FakeRoute = 'upload' | 'status' | 'result' | 'cancel' | 'delete' | 'list' | 'versions' | 'files';
export const FAKE_ROUTES: readonly FakeRoute[] = ['upload', 'status', 'result', 'cancel', 'delete', 'list', 'versions', 'files'];
export type FakeJobStatus = 'PENDING' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELLED';
export const FAKE_TIERS = ['fast', 'cost_effective', 'agentic', 'agentic_plus'] as const;
export type FakeTier = (typeof FAKE_TIERS)[number];
/** Credits billed per successfully parsed page. */
export const FAKE_CREDITS_PER_PAGE: Record<FakeTier, number> = { fast: 1, cost_effective: 3, agentic: 10, agentic_plus: 45 };
/** What `version: "latest"` resolves to per tier (GET /api/v2/parse/versions). */
export const FAKE_LATEST_VERSIONS: Record<FakeTier, string> = { fast: '2026-06-15', cost_effective: '2026-08-19', agentic: '2026-09-07', agentic_plus: '2026-08-19' };
/** The dated versions each tier accepts (a subset of the real list, newest first). */
export const FAKE_VERSIONS: Record<FakeTier, string[]> = {
  fast: ['2026-06-15', '2025-12-11'],
  cost_effective: ['2026-08-19', '2026-08-11', '2026-07-23', '2026-03-25'],
  agentic: ['2026-09-07', '2026-08-19', '2026-07-24', '2025-12-11'],
  agentic_plus: ['2026-08-19', '2026-07-08', '2025-12-11'],
};
export const FAKE_WEBHOOK_EVENTS = ['parse.pending', 'parse.running', 'parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled'] as const;
export const FAST_TIER_MARKDOWN_ERROR = 'Markdown expansion is not available for FAST tier jobs.';
/** Between pages in `markdown_full` and `text_full`. */
export const FULL_PAGE_SEPARATOR = PAGE_SEPARATOR;
export const DEFAULT_ALLOWED_PAGE_FAILURE_RATIO = 0.05;
export const FAKE_PROJECT_ID = '5f0c7a1e-2b64-4c1d-9a7e-fa4ef4ce0001';

/**
 * How a job should end instead of a normal parse: FAILED or CANCELLED with this message (put
 * the reason code first, as LlamaCloud does: "PDF_IS_PROTECTED: ..."), or a normal parse in
 * which these page numbers fail (COMPLETED, or FAILED past the allowed failure ratio).
 */
export type FakeJobOutcome =
  | { status: 'FAILED' | 'CANCELLED'; errorMessage?: string | null }
  | { failedPages: number[]; pageError?: string };
export type FakeOutcomeFn = (fileName: string, bytes: Buffer, job: FakeJob) => FakeJobOutcome | null;

/** One entry of `webhook_configurations`, as the client sent it. */
export interface FakeWebhookConfig {
  webhook_url?: string | null;
  webhook_events?: string[] | null;
  webhook_headers?: Record<string, unknown> | null;
  webhook_output_format?: 'string' | 'json' | null;
  webhook_signing_secret?: string | null;
}

/** `processing_control.timeouts`, as the client sent it. */
export interface FakeTimeouts {
  base_in_seconds?: number | null;
  extra_time_per_page_in_seconds?: number | null;
}

export interface FakePage {
  pageNumber: number;
  success: boolean;
  markdown: string;
  text: string;
  /** Why the page failed (success false). */
  error: string | null;
}

export interface FakeJob {
  id: string;
  status: FakeJobStatus;
  /** How the document arrived: multipart upload, a Files API id, or a URL. */
  source: 'upload' | 'file_id' | 'source_url';
  fileId: string | null;
  sourceUrl: string | null;
  fileName: string;
  /** What the fake decided the file is (sniffed), null when it could not tell. */
  mediaType: MediaType | null;
  tier: FakeTier;
  /** As sent (`latest` or a date) and what it resolved to. */
  version: string;
  resolvedVersion: string;
  /** The whole configuration as received (the parsed `configuration` field, or the JSON body). */
  configuration: Record<string, unknown>;
  /** Multipart fields other than `file` and `configuration` (LlamaCloud ignores them). */
  extraFields: string[];
  webhookConfigs: FakeWebhookConfig[];
  timeouts: FakeTimeouts | null;
  allowedPageFailureRatio: number;
  disableCache: boolean;
  cacheHit: boolean;
  /** organization_id / project_id query of the create request. */
  organizationId: string | null;
  projectId: string | null;
  createdAt: Date;
  updatedAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  errorMessage: string | null;
  /** Per page (empty until the job ends, and when it did not parse). */
  pages: FakePage[];
  /** Billed credits, null until the job ends. */
  credits: number | null;
  /** DELETE /api/v2/parse/{id} was called: the API answers 404 since. */
  deleted: boolean;
}

export interface FakeDelivery {
  jobId: string;
  /** Index of the configuration in the job's `webhook_configurations`. */
  configIndex: number;
  eventId: string;
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
 * same event_id. outOfOrder: a stale `parse.running` event follows the terminal one (whatever
 * the configuration's event filter).
 */
export type FakeWebhookMode = 'deliver' | 'drop' | 'duplicate' | 'outOfOrder';

export interface FakeCall {
  route: FakeRoute;
  method: string;
  url: string;
  /** Repeated keys (`expand=a&expand=b`) arrive as arrays. */
  query: Record<string, string | string[]>;
  authorization: string | null;
  at: Date;
}

export interface FakeFile {
  id: string;
  name: string;
  purpose: string;
  size: number;
  projectId: string;
  createdAt: Date;
}

export interface FakeLlamaParseOptions {
  apiKey?: string;
  port?: number;
  /**
   * From creation to the end of a job, in ms (RUNNING from half of it). Infinity: the job stays
   * PENDING until finishJob() (or its time limit, when the client sent one). Default 30.
   */
  processingMs?: number;
  /** Waits between the 3 delivery attempts. Default [1000, 2000]. */
  webhookRetryDelaysMs?: number[];
  /** When set, a request with a different organization_id / project_id query gets 403. */
  requireOrganizationId?: string;
  requireProjectId?: string;
  /** LlamaCloud's result cache (same bytes and options: COMPLETED at once, 0 credits). Default true. */
  cache?: boolean;
}

export interface FakeLlamaParse {
  /** Base URL, e.g. http://127.0.0.1:41234 (the SDK's baseURL, the adapter's baseUrl). */
  readonly url: string;
  readonly apiKey: string;
  readonly jobs: Map<string, FakeJob>;
  readonly files: Map<string, FakeFile>;
  readonly deliveries: FakeDelivery[];
  /** Every API request by route, rejected ones included (admin routes excluded). */
  readonly requests: Record<FakeRoute, number>;
  readonly calls: FakeCall[];
  readonly webhooks: { mode: FakeWebhookMode; delayMs: number };
  /**
   * The next `count` requests to `route` answer `status` (with `headers`, none by default: a 429
   * has no Retry-After) before auth or any processing. Status 0 drops the connection; status -1
   * never answers (a hung server); status -2 sends 200 and its headers, then stalls mid-body.
   */
  failNext(route: FakeRoute, status: number, count?: number, headers?: Record<string, string>): void;
  /** Consulted when a job ends (not for cache hits); null: parse normally. */
  setOutcome(fn: FakeOutcomeFn | null): void;
  setWebhookMode(mode: FakeWebhookMode, delayMs?: number): void;
  /** Applies to jobs created afterwards. */
  setProcessingMs(ms: number): void;
  /** Ends a PENDING or RUNNING job now: normally (parse, setOutcome ignored) when `outcome` is omitted or null. */
  finishJob(jobId: string, outcome?: FakeJobOutcome | null): Promise<FakeJob>;
  /** Forgets every cached result. */
  clearCache(): void;
  /** Resolves when every scheduled webhook delivery and job ending has finished (bounded by `timeoutMs`). */
  settled(timeoutMs?: number): Promise<void>;
  /** Clears fault injection, the outcome function and the webhook mode; keeps jobs, cache and logs. */
  reset(): void;
  close(): Promise<void>;
}

// --- constants ----------------------------------------------------------------------------

const DEFAULT_API_KEY = 'llx-fake-0123456789abcdef';
const ALL_EVENTS: readonly string[] = FAKE_WEBHOOK_EVENTS;
const EVENT_FOR_STATUS = { FAILED: 'parse.error', CANCELLED: 'parse.cancelled' } as const;
const WEBHOOK_ATTEMPTS = 3;
const WEBHOOK_TIMEOUT_MS = 30_000;
const MAX_BASE_TIMEOUT_S = 7200;
const MAX_PER_PAGE_TIMEOUT_S = 300;
const FILE_PURPOSES = ['user_data', 'parse', 'extract', 'classify', 'split', 'sheet', 'agent_app'];
const EXPANDABLE = new Set([
  'text', 'text_full', 'markdown', 'markdown_full', 'items', 'metadata', 'forms', 'job_metadata', 'usage',
  'text_content_metadata', 'markdown_content_metadata', 'items_content_metadata', 'metadata_content_metadata',
  'forms_content_metadata', 'raw_words_content_metadata', 'xlsx_content_metadata', 'output_pdf_content_metadata',
  'images_content_metadata',
]);
/** Not part of the cache key: they change who hears about the job, not what it produces. */
const NOT_CACHE_KEY = new Set(['webhook_configurations', 'webhook_configuration_ids', 'disable_cache', 'user_metadata', 'client_name', 'processing_control']);
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

/** One FastAPI validation error. */
interface Detail {
  type: string;
  loc: Array<string | number>;
  msg: string;
  input: unknown;
  ctx?: Record<string, unknown>;
}

interface Parsed {
  pages?: Array<{ pageNumber: number; markdown: string }>;
  error?: string;
}

/** What the fake keeps about a job besides its public record. */
interface JobState {
  bytes: Buffer | null;
  parsed: Promise<Parsed>;
  timers: Set<NodeJS.Timeout>;
  cacheKey: string | null;
}

export async function startFakeLlamaParse(options: FakeLlamaParseOptions = {}): Promise<FakeLlamaParse> {
  const apiKey = options.apiKey ?? DEFAULT_API_KEY;
  const retryDelays = options.webhookRetryDelaysMs ?? [1000, 2000];
  const cacheEnabled = options.cache ?? true;
  let processingMs = options.processingMs ?? 30;
  let outcomeFn: FakeOutcomeFn | null = null;
  let closed = false;

  const parser = createLocalParser();
  const jobs = new Map<string, FakeJob>();
  const files = new Map<string, FakeFile>();
  const fileBytes = new Map<string, Buffer>();
  const state = new Map<string, JobState>();
  const cache = new Map<string, { pages: FakePage[] }>();
  const finishing = new Map<string, Promise<FakeJob>>();
  const deliveryChains = new Map<string, Promise<void>>();
  const pending = new Set<Promise<unknown>>();
  const hungSockets = new Set<Socket>();
  const faults = Object.fromEntries(FAKE_ROUTES.map((r) => [r, [] as Array<{ status: number; headers: Record<string, string> }>])) as Record<
    FakeRoute,
    Array<{ status: number; headers: Record<string, string> }>
  >;
  const deliveries: FakeDelivery[] = [];
  const requests = Object.fromEntries(FAKE_ROUTES.map((r) => [r, 0])) as Record<FakeRoute, number>;
  const calls: FakeCall[] = [];
  const webhooks: { mode: FakeWebhookMode; delayMs: number } = { mode: 'deliver', delayMs: 0 };
  const shutdown = new AbortController();

  function track<T>(promise: Promise<T>): Promise<T> {
    pending.add(promise);
    void promise.finally(() => pending.delete(promise)).catch(() => undefined);
    return promise;
  }

  // --- jobs -------------------------------------------------------------------------------

  interface NewJob {
    source: FakeJob['source'];
    fileId: string | null;
    sourceUrl: string | null;
    fileName: string;
    mediaType: MediaType | null;
    bytes: Buffer | null;
    configuration: Record<string, unknown>;
    extraFields: string[];
    query: Record<string, string | string[]>;
  }

  function createJob(input: NewJob): FakeJob {
    const config = input.configuration;
    const tier = config.tier as FakeTier;
    const version = config.version as string;
    const control = (config.processing_control ?? null) as { timeouts?: FakeTimeouts | null; job_failure_conditions?: { allowed_page_failure_ratio?: number | null } | null } | null;
    const now = new Date();
    const job: FakeJob = {
      id: `pjb-${randomBytes(12).toString('hex')}`,
      status: 'PENDING',
      source: input.source,
      fileId: input.fileId,
      sourceUrl: input.sourceUrl,
      fileName: input.fileName,
      mediaType: input.mediaType,
      tier,
      version,
      resolvedVersion: version === 'latest' ? FAKE_LATEST_VERSIONS[tier] : version,
      configuration: config,
      extraFields: input.extraFields,
      webhookConfigs: ((config.webhook_configurations ?? []) as FakeWebhookConfig[]).map((c) => ({ ...c })),
      timeouts: control?.timeouts ? { ...control.timeouts } : null,
      allowedPageFailureRatio: control?.job_failure_conditions?.allowed_page_failure_ratio ?? DEFAULT_ALLOWED_PAGE_FAILURE_RATIO,
      disableCache: config.disable_cache === true,
      cacheHit: false,
      organizationId: first(input.query.organization_id),
      projectId: first(input.query.project_id),
      createdAt: now,
      updatedAt: now,
      startedAt: null,
      finishedAt: null,
      errorMessage: null,
      pages: [],
      credits: null,
      deleted: false,
    };
    jobs.set(job.id, job);

    const cacheKey = input.bytes !== null && cacheEnabled ? cacheKeyOf(input.bytes, config) : null;
    const hit = cacheKey !== null && !job.disableCache ? cache.get(cacheKey) : undefined;
    if (hit) {
      // A cache hit: done at once, free, and no webhook at all.
      job.status = 'COMPLETED';
      job.cacheHit = true;
      job.pages = hit.pages.map((p) => ({ ...p }));
      job.startedAt = job.finishedAt = now;
      job.credits = 0;
      state.set(job.id, { bytes: null, parsed: Promise.resolve({}), timers: new Set(), cacheKey });
      return job;
    }

    const st: JobState = { bytes: input.bytes, parsed: Promise.resolve({}), timers: new Set(), cacheKey };
    state.set(job.id, st);
    st.parsed = track(parseSource(job, st));
    emit(job, 'parse.pending');
    schedule(job, st);
    return job;
  }

  function later(st: JobState, ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      st.timers.delete(timer);
      fn();
    }, Math.max(0, ms));
    st.timers.add(timer);
  }

  function clearTimers(st: JobState | undefined): void {
    if (!st) return;
    for (const timer of st.timers) clearTimeout(timer);
    st.timers.clear();
  }

  function schedule(job: FakeJob, st: JobState): void {
    // The time limit, once the page count is known (counted from creation).
    void st.parsed.then((parsed) => {
      if (!job.timeouts || isTerminal(job.status) || closed) return;
      const pages = Math.max(1, parsed.pages?.length ?? 1);
      const base = job.timeouts.base_in_seconds ?? 0;
      const perPage = job.timeouts.extra_time_per_page_in_seconds ?? 0;
      const limitS = base + perPage * pages;
      const message = `TIMEOUT: the job exceeded its time limit of ${limitS} s (base_in_seconds ${base} + extra_time_per_page_in_seconds ${perPage} x ${pages} pages)`;
      later(st, job.createdAt.getTime() + limitS * 1000 - Date.now(), () => {
        if (!isTerminal(job.status) && !finishing.has(job.id)) void finish(job.id, { status: 'FAILED', errorMessage: message }).catch(() => undefined);
      });
    });
    if (!Number.isFinite(processingMs)) return;
    const ms = processingMs;
    later(st, ms / 2, () => startRunning(job));
    later(st, ms, () => {
      if (!finishing.has(job.id)) void finish(job.id, undefined).catch(() => undefined);
    });
  }

  function startRunning(job: FakeJob): void {
    if (job.status !== 'PENDING') return;
    job.status = 'RUNNING';
    job.startedAt = job.updatedAt = new Date();
    emit(job, 'parse.running');
  }

  /** Ends a job once; `override` undefined: consult setOutcome's function, then parse. */
  function finish(jobId: string, override: FakeJobOutcome | null | undefined): Promise<FakeJob> {
    const job = jobs.get(jobId);
    if (!job) return Promise.reject(new Error(`fake llamaparse: no job ${jobId}`));
    const running = finishing.get(jobId);
    if (running) return running;
    if (isTerminal(job.status)) return Promise.reject(new Error(`fake llamaparse: job ${jobId} already ${job.status}`));
    const promise = track(run(job, override));
    finishing.set(jobId, promise);
    void promise.finally(() => finishing.delete(jobId)).catch(() => undefined);
    return promise;
  }

  async function run(job: FakeJob, override: FakeJobOutcome | null | undefined): Promise<FakeJob> {
    const st = state.get(job.id)!;
    clearTimers(st);
    startRunning(job);
    const outcome = override !== undefined ? override : (outcomeFn?.(job.fileName, st.bytes ?? Buffer.alloc(0), job) ?? null);
    if (outcome && 'status' in outcome) {
      end(job, outcome.status, outcome.errorMessage ?? defaultMessage(outcome.status), []);
      return job;
    }
    const parsed = await st.parsed;
    if (isTerminal(job.status)) return job; // cancelled meanwhile
    if (parsed.error !== undefined || !parsed.pages) {
      end(job, 'FAILED', parsed.error ?? 'INTERNAL_ERROR: nothing was parsed', []);
      return job;
    }
    const failed = new Set(outcome?.failedPages ?? []);
    const pageError = outcome?.pageError ?? 'PAGE_PARSING_FAILED: the page could not be parsed';
    const pages: FakePage[] = parsed.pages.map(({ pageNumber, markdown }) =>
      failed.has(pageNumber)
        ? { pageNumber, success: false, markdown: '', text: '', error: pageError }
        : { pageNumber, success: true, markdown, text: markdownToText(markdown), error: null },
    );
    const failures = pages.filter((p) => !p.success).length;
    if (pages.length > 0 && failures / pages.length > job.allowedPageFailureRatio) {
      const message =
        `PAGE_FAILURE_RATIO_EXCEEDED: ${failures} of ${pages.length} pages failed, ` +
        `more than the allowed_page_failure_ratio of ${job.allowedPageFailureRatio}`;
      end(job, 'FAILED', message, pages);
      return job;
    }
    end(job, 'COMPLETED', null, pages);
    return job;
  }

  function end(job: FakeJob, status: 'COMPLETED' | 'FAILED' | 'CANCELLED', errorMessage: string | null, pages: FakePage[]): void {
    const st = state.get(job.id);
    clearTimers(st);
    job.status = status;
    job.errorMessage = errorMessage;
    job.pages = pages;
    job.finishedAt = job.updatedAt = new Date();
    job.credits = status === 'COMPLETED' ? pages.filter((p) => p.success).length * FAKE_CREDITS_PER_PAGE[job.tier] : 0;
    if (st) {
      if (status === 'COMPLETED' && st.cacheKey !== null && pages.every((p) => p.success)) {
        cache.set(st.cacheKey, { pages: pages.map((p) => ({ ...p })) });
      }
      st.bytes = null;
    }
    const event =
      status === 'COMPLETED' ? (pages.some((p) => !p.success) ? 'parse.partial_success' : 'parse.success') : EVENT_FOR_STATUS[status];
    emit(job, event);
    if (webhooks.mode === 'outOfOrder') emit(job, 'parse.running', { force: true });
  }

  /** Reads the document (fetching `source_url` first) and parses it into pages. */
  async function parseSource(job: FakeJob, st: JobState): Promise<Parsed> {
    try {
      if (st.bytes === null && job.sourceUrl !== null) {
        const response = await fetch(job.sourceUrl, { signal: AbortSignal.any([shutdown.signal, AbortSignal.timeout(30_000)]) });
        if (!response.ok) return { error: `URL_FETCH_FAILED: ${job.sourceUrl} answered ${response.status}` };
        st.bytes = Buffer.from(await response.arrayBuffer());
        job.mediaType = await detectMediaType(st.bytes, job.fileName, response.headers.get('content-type') ?? '');
      }
      const bytes = st.bytes ?? Buffer.alloc(0);
      return { pages: await parsePages(bytes, job.mediaType, job.configuration.page_ranges) };
    } catch (err) {
      return { error: describeFailure(err) };
    }
  }

  async function parsePages(bytes: Buffer, mediaType: MediaType | null, pageRanges: unknown): Promise<Array<{ pageNumber: number; markdown: string }>> {
    if (bytes.length === 0 || (bytes.length < 1024 * 1024 && bytes.toString('utf8').trim() === '')) throw new UnparseableDocumentError('the file is empty');
    if (mediaType === null) throw new UnsupportedFileError('the file type is not supported');
    const parsed = await parser.parse(bytes, mediaType);
    // The local parser separates PDF pages; other formats are one page.
    const mds = mediaType === 'application/pdf' ? parsed.markdown.split(PAGE_SEPARATOR) : [parsed.markdown];
    let pages = mds.map((markdown, i) => ({ pageNumber: i + 1, markdown }));
    const ranges = (pageRanges ?? {}) as { max_pages?: number | null; target_pages?: string | null };
    if (ranges.target_pages) {
      const wanted = parseTargetPages(ranges.target_pages) ?? new Set<number>();
      pages = pages.filter((p) => wanted.has(p.pageNumber));
    } else if (ranges.max_pages) {
      pages = pages.slice(0, ranges.max_pages);
    }
    if (pages.every((p) => p.markdown.trim() === '')) throw new UnparseableDocumentError('no text found in the document');
    return pages;
  }

  // --- webhooks ---------------------------------------------------------------------------

  /** Queues one event for every webhook configuration of the job that subscribes to it. */
  function emit(job: FakeJob, eventType: string, { force = false } = {}): void {
    if (webhooks.mode === 'drop' || job.webhookConfigs.length === 0) return;
    const payload = {
      event_id: randomUUID(),
      event_type: eventType,
      timestamp: Date.now() / 1000,
      data: { id: job.id, job_id: job.id },
    };
    job.webhookConfigs.forEach((config, configIndex) => {
      if (!config.webhook_url) return;
      // Without webhook_events the service sends every event.
      const events = config.webhook_events && config.webhook_events.length > 0 ? config.webhook_events : ALL_EVENTS;
      if (!force && !events.includes(eventType)) return;
      // "string" (the default) delivers the JSON-encoded string of the payload.
      const body = config.webhook_output_format === 'json' ? JSON.stringify(payload) : JSON.stringify(JSON.stringify(payload));
      const headers: Record<string, string> = {
        'Content-Type': 'application/json',
        'User-Agent': 'llamaindex-webhook-service/1.0',
        'X-Webhook-Event-ID': payload.event_id,
        'X-Webhook-Event-Type': eventType,
      };
      for (const [name, value] of Object.entries(config.webhook_headers ?? {})) headers[name] = String(value);
      if (config.webhook_signing_secret) {
        headers['LC-Signature'] = `sha256=${createHmac('sha256', config.webhook_signing_secret).update(body).digest('hex')}`;
      }
      enqueue(`${job.id}#${configIndex}`, { jobId: job.id, configIndex, eventId: payload.event_id, eventType, url: config.webhook_url, body, headers });
    });
  }

  type Outgoing = Omit<FakeDelivery, 'attempt' | 'status' | 'error' | 'at'>;

  /** Deliveries of one job to one configuration go out in order, one after the other. */
  function enqueue(chainKey: string, message: Outgoing): void {
    const times = webhooks.mode === 'duplicate' ? 2 : 1;
    const delayMs = webhooks.delayMs;
    const previous = deliveryChains.get(chainKey) ?? Promise.resolve();
    const next = previous.then(async () => {
      for (let i = 0; i < times; i++) {
        if (delayMs > 0) await pause(delayMs);
        await deliver(message);
      }
    });
    const chain = track(next.catch(() => undefined));
    deliveryChains.set(chainKey, chain);
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
          redirect: 'manual',
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

  const app = Fastify({ logger: false, forceCloseConnections: true, bodyLimit: 10 * 1024 * 1024 });
  await app.register(multipart, { limits: { fileSize: 512 * 1024 * 1024, fieldSize: 10 * 1024 * 1024 } });

  // FastAPI-style errors: {"detail": "..."}; a body that is not JSON is a 422.
  app.setErrorHandler((err: { statusCode?: number; code?: string; name?: string; message: string }, _request, reply) => {
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err.name === 'SyntaxError') {
      return reply.code(422).send({ detail: [{ type: 'json_invalid', loc: ['body'], msg: `JSON decode error: ${err.message}`, input: {} }] });
    }
    const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
    return reply.code(status).send({ detail: err.message });
  });
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ detail: 'Not Found' }));

  function routeOf(request: FastifyRequest): FakeRoute | null {
    const url = request.routeOptions.url;
    const method = request.method;
    if (url === '/api/v2/parse/upload' || (url === '/api/v2/parse' && method === 'POST')) return 'upload';
    if (url === '/api/v2/parse' && method === 'GET') return 'list';
    if (url === '/api/v2/parse/versions') return 'versions';
    if (url === '/api/v2/parse/:id/cancel') return 'cancel';
    if (url === '/api/v2/parse/:id' && method === 'DELETE') return 'delete';
    if (url === '/api/v2/parse/:id' && method === 'GET') return expandOf(request.query).length > 0 ? 'result' : 'status';
    if (url === '/api/v1/beta/files') return 'files';
    return null;
  }

  app.addHook('onRequest', async (request, reply) => {
    const route = routeOf(request);
    if (!route) return;
    requests[route]++;
    const query = { ...(request.query as Record<string, string | string[]>) };
    const authorization = request.headers.authorization ?? null;
    calls.push({ route, method: request.method, url: request.url, query, authorization, at: new Date() });

    const fault = faults[route].shift();
    if (fault) {
      if (fault.status <= 0) {
        reply.hijack();
        if (fault.status === 0) request.raw.socket.destroy();
        else {
          if (fault.status === -2) {
            request.raw.socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"job": {');
          }
          const socket = request.raw.socket;
          hungSockets.add(socket);
          socket.once('close', () => hungSockets.delete(socket));
        }
        return reply;
      }
      return reply.code(fault.status).headers(fault.headers).send({ detail: defaultDetail(fault.status) });
    }
    if (authorization !== `Bearer ${apiKey}`) return reply.code(401).send({ detail: 'Invalid API Key' });
    const org = first(query.organization_id);
    const project = first(query.project_id);
    if (options.requireOrganizationId && org !== null && org !== options.requireOrganizationId) {
      return reply.code(403).send({ detail: 'You do not have access to this organization' });
    }
    if (options.requireProjectId && project !== null && project !== options.requireProjectId) {
      return reply.code(403).send({ detail: 'You do not have access to this project' });
    }
  });

  const unprocessable = (reply: FastifyReply, detail: Detail[]) => reply.code(422).send({ detail });

  app.post('/api/v2/parse/upload', async (request, reply) => {
    if (!request.isMultipart()) {
      return unprocessable(reply, [missing(['body', 'file'], null), missing(['body', 'configuration'], null)]);
    }
    let file: { bytes: Buffer; fileName: string; mimetype: string } | null = null;
    let configurationRaw: string | null = null;
    const extraFields: string[] = [];
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        const bytes = await part.toBuffer(); // always drain, or the parser stalls
        if (part.fieldname === 'file' && !file) file = { bytes, fileName: part.filename, mimetype: part.mimetype };
        else extraFields.push(part.fieldname);
      } else if (part.fieldname === 'configuration' && typeof part.value === 'string') {
        configurationRaw = part.value;
      } else {
        extraFields.push(part.fieldname);
      }
    }
    const absent: Detail[] = [];
    if (!file) absent.push(missing(['body', 'file'], null));
    if (configurationRaw === null) absent.push(missing(['body', 'configuration'], null));
    if (!file || configurationRaw === null) return unprocessable(reply, absent);

    let configuration: unknown;
    try {
      configuration = JSON.parse(configurationRaw);
    } catch (err) {
      return unprocessable(reply, [{ type: 'json_invalid', loc: ['body', 'configuration'], msg: `Invalid JSON: ${(err as Error).message}`, input: configurationRaw }]);
    }
    const errors = validateConfiguration(configuration, ['body', 'configuration']);
    if (errors.length > 0) return unprocessable(reply, errors);
    const config = configuration as Record<string, unknown>;
    if (config.file_id != null || config.source_url != null) {
      return unprocessable(reply, [valueError(['body', 'configuration'], 'file_id and source_url cannot be combined with an uploaded file', config)]);
    }
    const job = createJob({
      source: 'upload',
      fileId: null,
      sourceUrl: null,
      fileName: file.fileName,
      mediaType: await detectMediaType(file.bytes, file.fileName, file.mimetype),
      bytes: file.bytes,
      configuration: config,
      extraFields,
      query: request.query as Record<string, string | string[]>,
    });
    return jobBody(job);
  });

  app.post('/api/v2/parse', async (request, reply) => {
    const body = request.body;
    const errors = validateConfiguration(body, ['body']);
    if (errors.length > 0) return unprocessable(reply, errors);
    const config = body as Record<string, unknown>;
    const fileId = config.file_id ?? null;
    const sourceUrl = config.source_url ?? null;
    if ((fileId === null) === (sourceUrl === null)) {
      return unprocessable(reply, [valueError(['body'], 'Value error, exactly one of file_id or source_url must be provided', config)]);
    }
    const query = request.query as Record<string, string | string[]>;
    if (fileId !== null) {
      const known = typeof fileId === 'string' ? files.get(fileId) : undefined;
      const bytes = typeof fileId === 'string' ? fileBytes.get(fileId) : undefined;
      if (!known || !bytes) return unprocessable(reply, [valueError(['body', 'file_id'], `Value error, file ${String(fileId)} not found in this project`, fileId)]);
      const job = createJob({
        source: 'file_id',
        fileId: known.id,
        sourceUrl: null,
        fileName: known.name,
        mediaType: await detectMediaType(bytes, known.name, ''),
        bytes,
        configuration: config,
        extraFields: [],
        query,
      });
      return jobBody(job);
    }
    if (typeof sourceUrl !== 'string' || !/^https?:\/\//i.test(sourceUrl)) {
      return unprocessable(reply, [valueError(['body', 'source_url'], 'Value error, source_url must be an http(s) URL', sourceUrl)]);
    }
    const job = createJob({
      source: 'source_url',
      fileId: null,
      sourceUrl,
      fileName: basename(new URL(sourceUrl).pathname) || 'document',
      mediaType: null, // known once fetched
      bytes: null,
      configuration: config,
      extraFields: [],
      query,
    });
    return jobBody(job);
  });

  app.get('/api/v2/parse/versions', async () => ({
    ...Object.fromEntries(FAKE_TIERS.map((tier) => [tier, FAKE_VERSIONS[tier]])),
    latest: { ...FAKE_LATEST_VERSIONS },
  }));

  app.get('/api/v2/parse', async (request, reply) => {
    const query = request.query as Record<string, string | string[] | undefined>;
    const pageSize = query.page_size === undefined ? 50 : Number(first(query.page_size));
    if (!Number.isSafeInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
      return unprocessable(reply, [{ type: 'int_parsing', loc: ['query', 'page_size'], msg: 'Input should be a valid integer between 1 and 1000', input: query.page_size }]);
    }
    const status = first(query.status);
    const ids = query.job_ids === undefined ? null : new Set(([] as string[]).concat(query.job_ids));
    const all = [...jobs.values()].filter((j) => !j.deleted && (status === null || j.status === status) && (ids === null || ids.has(j.id)));
    const offset = Number(first(query.page_token) ?? 0) || 0;
    const items = all.slice(offset, offset + pageSize).map(jobBody);
    return { items, next_page_token: offset + pageSize < all.length ? String(offset + pageSize) : '' };
  });

  app.get<{ Params: { id: string } }>('/api/v2/parse/:id', async (request, reply) => {
    const job = jobs.get(request.params.id);
    if (!job || job.deleted) return reply.code(404).send({ detail: `Parse job ${request.params.id} not found` });
    const expand = expandOf(request.query);
    const unknown = expand.filter((e) => !EXPANDABLE.has(e));
    if (unknown.length > 0) {
      return unprocessable(
        reply,
        unknown.map((value) => ({ type: 'enum', loc: ['query', 'expand'], msg: `Input should be one of ${[...EXPANDABLE].join(', ')}`, input: value })),
      );
    }
    if (job.tier === 'fast' && (expand.includes('markdown') || expand.includes('markdown_full'))) {
      return reply.code(400).send({ detail: FAST_TIER_MARKDOWN_ERROR });
    }
    const body: Record<string, unknown> = { job: jobBody(job) };
    const done = job.status === 'COMPLETED';
    const ok = job.pages.filter((p) => p.success);
    for (const field of expand) {
      if (!done) {
        body[field] = null;
        continue;
      }
      switch (field) {
        case 'markdown':
          body.markdown = {
            pages: job.pages.map((p) =>
              p.success ? { page_number: p.pageNumber, markdown: p.markdown, success: true } : { page_number: p.pageNumber, success: false, error: p.error },
            ),
          };
          break;
        case 'markdown_full':
          body.markdown_full = ok.map((p) => p.markdown).join(FULL_PAGE_SEPARATOR);
          break;
        case 'text':
          body.text = { pages: ok.map((p) => ({ page_number: p.pageNumber, text: p.text })) };
          break;
        case 'text_full':
          body.text_full = ok.map((p) => p.text).join(FULL_PAGE_SEPARATOR);
          break;
        case 'items':
          body.items = {
            pages: job.pages.map((p) =>
              p.success
                ? { page_number: p.pageNumber, success: true, page_width: 612, page_height: 792, items: [{ type: 'text', value: p.text, md: p.markdown }] }
                : { page_number: p.pageNumber, success: false, error: p.error },
            ),
          };
          break;
        case 'metadata':
          body.metadata = { pages: job.pages.map((p) => ({ page_number: p.pageNumber, confidence: p.success ? 0.99 : 0 })), document: null };
          break;
        case 'job_metadata':
          body.job_metadata = {
            job_pages: job.pages.length,
            job_is_cache_hit: job.cacheHit,
            tier: job.tier,
            version: job.resolvedVersion,
            credits_used: job.credits,
          };
          break;
        case 'usage':
          break; // job.usage is always present
        default:
          body[field] = null;
      }
    }
    return body;
  });

  app.post<{ Params: { id: string } }>('/api/v2/parse/:id/cancel', async (request, reply) => {
    const job = jobs.get(request.params.id);
    if (!job || job.deleted) return reply.code(404).send({ detail: `Parse job ${request.params.id} not found` });
    if (isTerminal(job.status)) return reply.code(400).send({ detail: `Job ${job.id} is already ${job.status} and cannot be cancelled` });
    end(job, 'CANCELLED', null, []);
    return jobBody(job);
  });

  app.delete<{ Params: { id: string } }>('/api/v2/parse/:id', async (request, reply) => {
    const job = jobs.get(request.params.id);
    if (!job || job.deleted) return reply.code(404).send({ detail: `Parse job ${request.params.id} not found` });
    if (!isTerminal(job.status)) {
      return reply.code(400).send({ detail: `Job ${job.id} is ${job.status}: cancel it before deleting it` });
    }
    job.deleted = true;
    return { id: job.id, project_id: projectOf(job) };
  });

  // The Files API, as much as parsing by file_id needs.
  app.post('/api/v1/beta/files', async (request, reply) => {
    if (!request.isMultipart()) return unprocessable(reply, [missing(['body', 'file'], null), missing(['body', 'purpose'], null)]);
    let file: { bytes: Buffer; fileName: string } | null = null;
    const fields: Record<string, string> = {};
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        const bytes = await part.toBuffer();
        if (part.fieldname === 'file' && !file) file = { bytes, fileName: part.filename };
      } else if (typeof part.value === 'string') {
        fields[part.fieldname] = part.value;
      }
    }
    const absent: Detail[] = [];
    if (!file) absent.push(missing(['body', 'file'], null));
    if (fields.purpose === undefined) absent.push(missing(['body', 'purpose'], null));
    if (!file || fields.purpose === undefined) return unprocessable(reply, absent);
    if (!FILE_PURPOSES.includes(fields.purpose)) {
      return unprocessable(reply, [literalError(['body', 'purpose'], FILE_PURPOSES, fields.purpose)]);
    }
    const query = request.query as Record<string, string | string[]>;
    const record: FakeFile = {
      id: randomUUID(),
      name: file.fileName,
      purpose: fields.purpose,
      size: file.bytes.length,
      projectId: first(query.project_id) ?? options.requireProjectId ?? FAKE_PROJECT_ID,
      createdAt: new Date(),
    };
    files.set(record.id, record);
    fileBytes.set(record.id, file.bytes);
    return {
      id: record.id,
      name: record.name,
      project_id: record.projectId,
      file_type: extname(record.name).slice(1) || null,
      purpose: record.purpose,
      external_file_id: fields.external_file_id ?? null,
      expires_at: new Date(record.createdAt.getTime() + 48 * 3600_000).toISOString(),
      last_modified_at: record.createdAt.toISOString(),
    };
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
    const outcome = body && ('status' in body || 'failedPages' in body) ? body : null;
    try {
      return publicJob(await control.finishJob(request.params.id, outcome));
    } catch (err) {
      return reply.code(409).send({ detail: (err as Error).message });
    }
  });
  app.post('/_fake/clear-cache', async () => {
    control.clearCache();
    return { ok: true };
  });
  app.get('/_fake/state', async () => ({
    jobs: [...jobs.values()].map(publicJob),
    files: [...files.values()],
    deliveries,
    requests,
    calls,
    webhooks,
  }));
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
    files,
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
    clearCache() {
      cache.clear();
    },
    async settled(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (pending.size > 0) {
        if (Date.now() > deadline) throw new Error(`fake llamaparse: ${pending.size} deliveries still pending after ${timeoutMs} ms`);
        await Promise.race([Promise.allSettled([...pending]), sleep(50)]);
      }
    },
    reset() {
      for (const route of FAKE_ROUTES) faults[route].length = 0;
      outcomeFn = null;
      webhooks.mode = 'deliver';
      webhooks.delayMs = 0;
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const st of state.values()) clearTimers(st);
      shutdown.abort();
      for (const socket of hungSockets) socket.destroy();
      const bound = (ms: number) => sleep(ms, undefined, { ref: false });
      await Promise.race([Promise.allSettled([...pending]), bound(5000)]);
      await Promise.race([app.close(), bound(5000)]);
    },
  };

  function projectOf(job: FakeJob): string {
    return job.projectId ?? options.requireProjectId ?? FAKE_PROJECT_ID;
  }

  /** The job as the API shows it (flat, as in the create answer and `job` of GET). */
  function jobBody(job: FakeJob) {
    return {
      id: job.id,
      project_id: projectOf(job),
      status: job.status,
      created_at: job.createdAt.toISOString(),
      updated_at: job.updatedAt.toISOString(),
      error_message: job.errorMessage,
      tier: job.tier,
      name: job.fileName,
      usage: { credits: job.credits },
      user_metadata: (job.configuration.user_metadata as Record<string, string> | undefined) ?? null,
    };
  }

  await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });
  const address = app.server.address();
  baseUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : options.port}`;
  return control;
}

// --- validation (FastAPI / pydantic v2 shapes) ----------------------------------------------

function missing(loc: Detail['loc'], input: unknown): Detail {
  return { type: 'missing', loc, msg: 'Field required', input };
}

function valueError(loc: Detail['loc'], msg: string, input: unknown): Detail {
  return { type: 'value_error', loc, msg, input, ctx: { error: {} } };
}

function literalError(loc: Detail['loc'], allowed: readonly string[], input: unknown): Detail {
  const quoted = allowed.map((a) => `'${a}'`);
  const expected = quoted.length > 1 ? `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}` : (quoted[0] ?? '');
  return { type: 'literal_error', loc, msg: `Input should be ${expected}`, input, ctx: { expected } };
}

function typeError(loc: Detail['loc'], type: string, what: string, input: unknown): Detail {
  return { type, loc, msg: `Input should be ${what}`, input };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The checks LlamaCloud's request model makes that a client can get wrong. */
function validateConfiguration(value: unknown, prefix: Detail['loc']): Detail[] {
  if (!isObject(value)) return [typeError(prefix, 'dict_type', 'a valid dictionary', value)];
  const errors: Detail[] = [];
  const at = (...path: Array<string | number>) => [...prefix, ...path];

  if (value.configuration_id != null) errors.push(valueError(at('configuration_id'), 'Value error, saved configurations are not supported by the fake', value.configuration_id));
  const tier = value.tier;
  if (tier === undefined || tier === null) errors.push(missing(at('tier'), value));
  else if (!(FAKE_TIERS as readonly unknown[]).includes(tier)) errors.push(literalError(at('tier'), FAKE_TIERS, tier));
  const version = value.version;
  if (version === undefined || version === null) errors.push(missing(at('version'), value));
  else if (typeof version !== 'string') errors.push(typeError(at('version'), 'string_type', 'a valid string', version));
  else if (version !== 'latest' && (FAKE_TIERS as readonly unknown[]).includes(tier) && !FAKE_VERSIONS[tier as FakeTier].includes(version)) {
    errors.push(valueError(at('version'), `Value error, version '${version}' is not available for tier '${String(tier)}'; use 'latest' or one of ${FAKE_VERSIONS[tier as FakeTier].join(', ')} (GET /api/v2/parse/versions)`, version));
  }
  if (value.disable_cache != null && typeof value.disable_cache !== 'boolean') errors.push(typeError(at('disable_cache'), 'bool_type', 'a valid boolean', value.disable_cache));
  if (value.user_metadata != null && !(isObject(value.user_metadata) && Object.values(value.user_metadata).every((v) => typeof v === 'string'))) {
    errors.push(typeError(at('user_metadata'), 'dict_type', 'a valid dictionary of strings', value.user_metadata));
  }
  if (value.webhook_configuration_ids != null && !(Array.isArray(value.webhook_configuration_ids) && value.webhook_configuration_ids.length === 0)) {
    errors.push(valueError(at('webhook_configuration_ids'), 'Value error, saved webhook configurations are not supported by the fake', value.webhook_configuration_ids));
  }

  const hooks = value.webhook_configurations;
  if (hooks != null) {
    if (!Array.isArray(hooks)) errors.push(typeError(at('webhook_configurations'), 'list_type', 'a valid list', hooks));
    else hooks.forEach((hook, i) => errors.push(...validateWebhook(hook, at('webhook_configurations', i))));
  }

  const control = value.processing_control;
  if (control != null) {
    if (!isObject(control)) errors.push(typeError(at('processing_control'), 'model_type', 'a valid dictionary', control));
    else {
      const timeouts = control.timeouts;
      if (timeouts != null) {
        if (!isObject(timeouts)) errors.push(typeError(at('processing_control', 'timeouts'), 'model_type', 'a valid dictionary', timeouts));
        else {
          errors.push(...bounded(timeouts.base_in_seconds, at('processing_control', 'timeouts', 'base_in_seconds'), 0, MAX_BASE_TIMEOUT_S, true));
          errors.push(...bounded(timeouts.extra_time_per_page_in_seconds, at('processing_control', 'timeouts', 'extra_time_per_page_in_seconds'), 0, MAX_PER_PAGE_TIMEOUT_S, false));
        }
      }
      const conditions = control.job_failure_conditions;
      if (conditions != null) {
        if (!isObject(conditions)) errors.push(typeError(at('processing_control', 'job_failure_conditions'), 'model_type', 'a valid dictionary', conditions));
        else errors.push(...bounded(conditions.allowed_page_failure_ratio, at('processing_control', 'job_failure_conditions', 'allowed_page_failure_ratio'), 0, 1, false));
      }
    }
  }

  const ranges = value.page_ranges;
  if (ranges != null) {
    if (!isObject(ranges)) errors.push(typeError(at('page_ranges'), 'model_type', 'a valid dictionary', ranges));
    else {
      if (ranges.max_pages != null && !(Number.isSafeInteger(ranges.max_pages) && (ranges.max_pages as number) >= 1)) {
        errors.push({ type: 'greater_than_equal', loc: at('page_ranges', 'max_pages'), msg: 'Input should be an integer greater than or equal to 1', input: ranges.max_pages, ctx: { ge: 1 } });
      }
      if (ranges.target_pages != null && (typeof ranges.target_pages !== 'string' || parseTargetPages(ranges.target_pages) === null)) {
        errors.push(valueError(at('page_ranges', 'target_pages'), "Value error, target_pages must look like '1,3,5-8' (1-based, no duplicates)", ranges.target_pages));
      }
    }
  }
  return errors;
}

function validateWebhook(hook: unknown, loc: Detail['loc']): Detail[] {
  if (!isObject(hook)) return [typeError(loc, 'model_type', 'a valid dictionary', hook)];
  const errors: Detail[] = [];
  const url = hook.webhook_url;
  if (url != null && (typeof url !== 'string' || !webhookUrlAllowed(url))) {
    errors.push(valueError([...loc, 'webhook_url'], 'Value error, webhook_url must be a public https URL', url));
  }
  const events = hook.webhook_events;
  if (events != null) {
    if (!Array.isArray(events)) errors.push(typeError([...loc, 'webhook_events'], 'list_type', 'a valid list', events));
    else events.forEach((e, i) => {
      if (!ALL_EVENTS.includes(e as string)) errors.push(literalError([...loc, 'webhook_events', i], ALL_EVENTS, e));
    });
  }
  const format = hook.webhook_output_format;
  if (format != null && format !== 'string' && format !== 'json') errors.push(literalError([...loc, 'webhook_output_format'], ['json', 'string'], format));
  if (hook.webhook_headers != null && !isObject(hook.webhook_headers)) errors.push(typeError([...loc, 'webhook_headers'], 'dict_type', 'a valid dictionary', hook.webhook_headers));
  const secret = hook.webhook_signing_secret;
  if (secret != null && typeof secret !== 'string') errors.push(typeError([...loc, 'webhook_signing_secret'], 'string_type', 'a valid string', secret));
  return errors;
}

/** https anywhere; plain http only to a loopback address (the fake's allowance for tests). */
function webhookUrlAllowed(raw: string): boolean {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return false;
  }
  if (url.protocol === 'https:') return true;
  if (url.protocol !== 'http:') return false;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

function bounded(value: unknown, loc: Detail['loc'], min: number, max: number, exclusiveMin: boolean): Detail[] {
  if (value === undefined || value === null) return [];
  if (typeof value !== 'number' || !Number.isFinite(value)) return [typeError(loc, 'float_type', 'a valid number', value)];
  if (exclusiveMin ? value <= min : value < min) {
    const type = exclusiveMin ? 'greater_than' : 'greater_than_equal';
    return [{ type, loc, msg: `Input should be greater than ${exclusiveMin ? '' : 'or equal to '}${min}`, input: value, ctx: { [exclusiveMin ? 'gt' : 'ge']: min } }];
  }
  if (value > max) return [{ type: 'less_than_equal', loc, msg: `Input should be less than or equal to ${max}`, input: value, ctx: { le: max } }];
  return [];
}

/** '1,3,5-8' -> {1,3,5,6,7,8}; null when malformed or with duplicates. */
function parseTargetPages(spec: string): Set<number> | null {
  const pages = new Set<number>();
  for (const part of spec.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) return null;
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (from < 1 || to < from || to - from > 100_000) return null;
    for (let n = from; n <= to; n++) {
      if (pages.has(n)) return null;
      pages.add(n);
    }
  }
  return pages;
}

// --- helpers --------------------------------------------------------------------------------

class UnsupportedFileError extends Error {}

function isTerminal(status: FakeJobStatus): boolean {
  return status === 'COMPLETED' || status === 'FAILED' || status === 'CANCELLED';
}

function first(value: string | string[] | undefined | null): string | null {
  if (value === undefined || value === null) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/** `expand` values of a query: repeated keys (the SDK's form) or comma-separated. */
function expandOf(query: unknown): string[] {
  const raw = (query as Record<string, string | string[] | undefined>)?.expand;
  if (raw === undefined) return [];
  return ([] as string[])
    .concat(raw)
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

function cacheKeyOf(bytes: Buffer, config: Record<string, unknown>): string {
  const options = Object.fromEntries(Object.entries(config).filter(([k]) => !NOT_CACHE_KEY.has(k)));
  return `${createHash('sha256').update(bytes).digest('hex')}:${stableJson(options)}`;
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (isObject(value)) {
    return `{${Object.keys(value)
      .filter((k) => value[k] !== undefined && value[k] !== null)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

function publicJob(job: FakeJob) {
  return { ...job, pages: job.pages.map(({ pageNumber, success, error }) => ({ pageNumber, success, error })) };
}

/** By the bytes first, like docpipe itself; then the part's Content-Type, then the extension. */
async function detectMediaType(bytes: Buffer, fileName: string, mimetype: string): Promise<MediaType | null> {
  const sniffed = await sniffMediaType(bytes.subarray(0, SNIFF_BYTES), fileName);
  if (sniffed) return sniffed;
  if ((SUPPORTED_MEDIA_TYPES as readonly string[]).includes(mimetype)) return mimetype as MediaType;
  return BY_EXTENSION[extname(fileName).toLowerCase()] ?? null;
}

/** LlamaCloud's way: the reason code first, inside the message. */
function describeFailure(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof UnsupportedFileError) return `UNSUPPORTED_FILE_TYPE: ${message}`;
  if (err instanceof DocumentLimitError) return `TOO_MANY_PAGES: ${message}`;
  if (err instanceof UnparseableDocumentError) {
    if (/password|encrypted/i.test(message)) return 'PDF_IS_PROTECTED: the PDF is password protected';
    return `NO_DATA_FOUND_IN_FILE: no data found in the file (${message})`;
  }
  return `INTERNAL_ERROR: ${message}`;
}

function defaultMessage(status: 'FAILED' | 'CANCELLED'): string | null {
  return status === 'FAILED' ? 'INTERNAL_ERROR: the job failed' : null;
}

/** The `text` flavour of a page: the markdown without its most common syntax. */
function markdownToText(md: string): string {
  return md
    .replace(/^#{1,6}\s+/gm, '')
    .replace(/(\*\*|__)(.*?)\1/g, '$2')
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
}

function defaultDetail(status: number): string {
  if (status === 401) return 'Invalid API Key';
  if (status === 402) return 'Insufficient credits';
  if (status === 403) return 'You do not have access to this project';
  if (status === 404) return 'Not Found';
  if (status === 422) return 'Unprocessable Entity';
  if (status === 429) return 'Rate limit exceeded';
  if (status >= 500) return 'Internal Server Error';
  return 'Bad Request';
}
