// Prometheus metrics (prom-client). One registry per process; each service serves it on its own
// port (never the public one). docs/METRICS.md is the catalogue.
//
// Rules, checked by test/unit/metrics-conventions.test.ts:
// - base units and suffixes: _seconds, _bytes, _dollars, counters end in _total;
// - no label named app, region, host or instance: Fly.io overwrites those on every series;
// - every label has a closed set of values, declared with the metric (LABEL_VALUES). Values that
//   come from outside the program (error codes, status codes, methods) go through `bounded`.
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { EVENT_TYPES } from '../events/catalog.ts';
import { QUEUES } from '../queue/jobs.ts';
import { CONNECTION_APPLICATIONS, CONNECTION_STATES, DOCUMENT_STATUSES } from './sample.ts';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'docpipe_process_' });

/** A label whose values are the routes the service registered (Fastify's patterns), or `unmatched`. */
export const ROUTE_PATTERNS = Symbol('route patterns');
/** A label whose value is set by configuration (one per deployment), such as the embedding model. */
export const CONFIGURED = Symbol('configured');
type LabelSet = readonly string[] | typeof ROUTE_PATTERNS | typeof CONFIGURED;

/** The closed set of values of every label of every docpipe metric, by metric name. */
export const LABEL_VALUES: Record<string, Record<string, LabelSet>> = {};

function declare<L extends string>(name: string, labels: Record<L, LabelSet>): L[] {
  LABEL_VALUES[name] = labels;
  return Object.keys(labels) as L[];
}

const counters: { metric: Counter<string>; labels: Record<string, LabelSet> }[] = [];

function counter<L extends string>(name: string, help: string, labels: Record<L, LabelSet>, options: { initialize?: boolean } = {}): Counter<L> {
  const metric = new Counter({ name, help, labelNames: declare(name, labels), registers: [registry] });
  if (options.initialize !== false) counters.push({ metric: metric as Counter<string>, labels });
  return metric;
}

/** Every combination of closed label values, or null when a label is open (routes, configured) or there are too many. */
function combinations(labels: Record<string, LabelSet>, max: number): Record<string, string>[] | null {
  let out: Record<string, string>[] = [{}];
  for (const [label, values] of Object.entries(labels)) {
    if (!Array.isArray(values)) return null;
    out = out.flatMap((partial) => (values as readonly string[]).map((v) => ({ ...partial, [label]: v })));
    if (out.length > max) return null;
  }
  return out;
}

/**
 * Creates every series of the counters with closed label sets at 0, once, at a service's start.
 * A series that first appears at 1 is invisible to rate() and increase() (they need two samples),
 * so without this the first 5xx, the first 401 or the first dead letter after a restart would
 * never reach a dashboard or an alert.
 */
export function initializeSeries(): void {
  for (const { metric, labels } of counters) {
    for (const combination of combinations(labels, 200) ?? []) metric.inc(combination, 0);
  }
}

function gauge<L extends string>(name: string, help: string, labels: Record<L, LabelSet>, collect?: () => void): Gauge<L> {
  return new Gauge({ name, help, labelNames: declare(name, labels), registers: [registry], ...(collect ? { collect } : {}) });
}

function histogram<L extends string>(name: string, help: string, labels: Record<L, LabelSet>, buckets: number[]): Histogram<L> {
  return new Histogram({ name, help, labelNames: declare(name, labels), buckets, registers: [registry] });
}

/** `value` when it is one of `allowed`, else `other`: what keeps an outside value from becoming a new series. */
export function bounded<T extends string>(value: string | null | undefined, allowed: readonly T[]): T | 'other' {
  return value != null && (allowed as readonly string[]).includes(value) ? (value as T) : 'other';
}

// ---- label value sets ----

export const SERVICES = ['api', 'webhook', 'worker'] as const;
export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'other'] as const;
export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** The error answers docpipe gives (services/http.ts, the API's routes, the webhook). */
export const ERROR_STATUS_CODES = ['400', '401', '403', '404', '405', '408', '409', '410', '411', '413', '414', '415', '416', '422', '429', '431', '500', '502', '503', '504', 'other'] as const;
const QUEUE_NAMES = Object.values(QUEUES);
const STAGE_NAMES = QUEUE_NAMES.map((q) => q.replace(/^docpipe-/, ''));
export const PARSERS = ['local', 'llamaparse'] as const;
export const EMBEDDERS = ['local', 'openai'] as const;
const PIPELINE_STAGES = ['parse', 'embed', 'none'] as const;

/**
 * The stable codes a document or a stage attempt can fail with (pipeline, providers, sandbox).
 * A code outside the list (a provider's own, new) is counted as `other`; the document's status
 * row still has the real one. test/unit/metrics-conventions.test.ts finds the codes in src/ and
 * fails when one is missing here.
 */
export const FAILURE_CODES = [
  'CHUNK_TOO_LONG', 'DOCUMENT_LIMIT_EXCEEDED', 'DOCUMENT_TOO_COMPLEX', 'DOCUMENT_TOO_LARGE', 'DOCX_MAX_COMPRESSION_RATIO',
  'DOCX_MAX_XML_BYTES', 'EMBEDDER_AUTH_FAILED', 'EMBEDDER_BAD_RESPONSE', 'EMBEDDER_DIMENSIONS_MISMATCH', 'EMBEDDER_FORBIDDEN',
  'EMBEDDER_MODEL_NOT_FOUND', 'EMBEDDER_QUOTA_EXCEEDED', 'EMBEDDER_RATE_LIMITED', 'EMBEDDER_REJECTED', 'EMBEDDER_UNAVAILABLE',
  'EMPTY_DOCUMENT', 'EMPTY_INPUT', 'FILE_TOO_LARGE', 'HTML_MAX_DEPTH', 'INVALID_STORAGE_KEY', 'MAX_DOCUMENT_TOKENS',
  'NO_DATA_FOUND_IN_FILE', 'OBJECT_NOT_FOUND', 'PARSE_CANCELLED', 'PARSE_ERROR', 'PARSE_TIMEOUT', 'PARSER_AUTH_FAILED',
  'PARSER_BAD_RESPONSE', 'PARSER_FORBIDDEN', 'PARSER_JOB_NOT_FOUND', 'PARSER_MISMATCH', 'PARSER_QUOTA_EXCEEDED',
  'PARSER_RATE_LIMITED', 'PARSER_REJECTED', 'PARSER_UNAVAILABLE', 'PARTIAL_SUCCESS', 'PDF_IS_PROTECTED', 'PDF_MAX_INFLATED_BYTES',
  'PDF_MAX_PAGES', 'PDF_MAX_STREAM_BYTES', 'PROVIDER_JOB_NOT_RECORDED', 'RATE_BUDGET_EXHAUSTED', 'SANDBOX_UNAVAILABLE',
  'STAGE_ERROR', 'STAGE_TIMED_OUT', 'STORAGE_ACCESS_DENIED', 'STORAGE_AUTH_FAILED', 'STORAGE_BODY_LENGTH_MISMATCH',
  'STORAGE_BUCKET_MISSING', 'STORAGE_RATE_LIMITED', 'STORAGE_REQUEST_REJECTED', 'STORAGE_UNAVAILABLE', 'TOO_MANY_PAGES',
  'UNPARSEABLE_DOCUMENT', 'WORKER_CRASHED', 'WORKER_SHUTDOWN', 'other',
] as const;

// ---- HTTP ----

export const httpRequestDuration = histogram(
  'docpipe_http_request_duration_seconds',
  'HTTP request duration, from arrival to the end of the answer, by service, method, route pattern and status class.',
  { service: [...SERVICES, 'other'], method: METHODS, route: ROUTE_PATTERNS, status_class: STATUS_CLASSES },
  [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
);

export const httpRequests = counter('docpipe_http_requests_total', 'HTTP answers by service and status class: the availability SLO counts 5xx among them.', {
  service: [...SERVICES, 'other'],
  status_class: STATUS_CLASSES,
}, { initialize: false });

/** GET /v1/documents/:id answered from the process's status cache (hit) or the database (miss); services/api/status-cache.ts. */
export const statusCacheRequests = counter('docpipe_status_cache_requests_total', "Status reads of GET /v1/documents/:id by result: hit (the api process's status cache) or miss (read from the database).", {
  result: ['hit', 'miss'],
});

export const httpErrorResponses = counter(
  'docpipe_http_error_responses_total',
  'Answers with a status of 400 or above, by service, route pattern and status code.',
  { service: [...SERVICES, 'other'], route: ROUTE_PATTERNS, status_code: ERROR_STATUS_CODES },
);

// ---- pipeline ----

export const documentProcessing = histogram(
  'docpipe_document_processing_seconds',
  "A first run's upload to its final state (ready or failed), by the database's clock, by parser, embedder and outcome.",
  { parser: PARSERS, embedder: EMBEDDERS, outcome: ['ready', 'failed'] },
  [0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600],
);

export const documentsFailed = counter(
  'docpipe_documents_failed_total',
  'Documents that ended failed, by stage and error code.',
  { stage: PIPELINE_STAGES, code: FAILURE_CODES },
);

export const stageAttemptsFailed = counter(
  'docpipe_stage_attempts_failed_total',
  'Stage attempts that failed and are retried (StageAttemptFailed), by stage and error code.',
  { stage: PIPELINE_STAGES, code: FAILURE_CODES },
);

export const eventsAppended = counter('docpipe_events_appended_total', 'Events committed to the event log, by event type.', { type: EVENT_TYPES });

export const stageDuration = histogram(
  'docpipe_stage_duration_seconds',
  "One run of a job's handler, by stage and outcome.",
  { stage: STAGE_NAMES, outcome: ['done', 'skipped', 'failed', 'pending', 'error'] },
  [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
);

export const jobsCompleted = counter('docpipe_jobs_completed_total', 'Jobs a worker finished, by queue.', { queue: QUEUE_NAMES });

export const jobsFailed = counter('docpipe_jobs_failed_total', 'Job attempts that threw (pg-boss retries each until its retry limit), by queue.', { queue: QUEUE_NAMES });

export const jobPickup = histogram(
  'docpipe_job_pickup_seconds',
  'From the moment a job could run (its creation, or its start-after) to a worker starting it, by queue.',
  { queue: QUEUE_NAMES },
  [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
);

export const deadLetters = counter('docpipe_dead_letters_total', 'Jobs whose retries ran out and reached the dead-letter queue, by the queue they came from.', {
  queue: [...QUEUE_NAMES, 'other'],
});

export const sandboxTasks = counter(
  'docpipe_sandbox_tasks_total',
  'Tasks of the parse/chunk sandbox by outcome: ok, error (the document was refused or unreadable), memory, time, crash (the child was killed or died), aborted (worker shutdown), unavailable (no child could be started).',
  { outcome: ['ok', 'error', 'memory', 'time', 'crash', 'aborted', 'unavailable'] },
);

export const sandboxTaskDuration = histogram(
  'docpipe_sandbox_task_duration_seconds',
  'Time one sandbox task ran in its child process (queueing excluded), by outcome.',
  { outcome: ['ok', 'error', 'memory', 'time', 'crash', 'aborted', 'unavailable'] },
  [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
);

// ---- sampled from Postgres by the lease holder (observability/sampler.ts) ----

export const samplerLeader = gauge('docpipe_metrics_sampler_leader', '1 in the one process that samples the database for the gauges below, 0 elsewhere.', {});
export const sampleTimestamp = gauge('docpipe_metrics_sample_timestamp_seconds', 'When the leader last sampled the database (Unix time, the database clock).', {});
export const queueJobs = gauge(
  'docpipe_queue_jobs',
  'Jobs by queue and state: waiting (may run now), scheduled (waits for its start-after), active. Exported by the sampling leader only.',
  { queue: QUEUE_NAMES, state: ['waiting', 'scheduled', 'active'] },
);
export const queueOldestWaiting = gauge(
  'docpipe_queue_oldest_waiting_seconds',
  'Age of the oldest job that could run and has not started, by queue (0 when none). Exported by the sampling leader only.',
  { queue: QUEUE_NAMES },
);
export const documentsByStatus = gauge('docpipe_documents', 'Documents by status. Exported by the sampling leader only.', { status: DOCUMENT_STATUSES });
export const dbConnections = gauge(
  'docpipe_db_connections',
  "The database server's client connections to this database, by application and state (pg_stat_activity). Exported by the sampling leader only.",
  { application: CONNECTION_APPLICATIONS, state: CONNECTION_STATES },
);
export const dbMaxConnections = gauge('docpipe_db_max_connections', "The database server's max_connections. Exported by the sampling leader only.", {});

// ---- this process: pools, build ----

export const POOLS = ['app', 'queue'] as const;
export type PoolName = (typeof POOLS)[number];
export interface PoolCounts {
  max: number;
  inUse: number;
  idle: number;
  waiting: number;
}
const poolSources = new Map<PoolName, () => PoolCounts | null>();

/** Registers where a pool's counts come from (read at each scrape); the last one of a name wins. */
export function observePool(pool: PoolName, counts: () => PoolCounts | null): () => void {
  poolSources.set(pool, counts);
  return () => {
    if (poolSources.get(pool) === counts) poolSources.delete(pool);
  };
}

const poolMax = gauge('docpipe_db_pool_max', "The size of this process's database pools: app (postgres.js), queue (pg-boss's pool).", { pool: POOLS });
gauge(
  'docpipe_db_pool_connections',
  "This process's database pools by state: in_use, idle, waiting (app: queries and transactions in flight beyond the pool's size).",
  { pool: POOLS, state: ['in_use', 'idle', 'waiting'] },
  function (this: Gauge<'pool' | 'state'>) {
    this.reset();
    poolMax.reset();
    for (const [pool, source] of poolSources) {
      const counts = source();
      if (!counts) continue;
      this.set({ pool, state: 'in_use' }, counts.inUse);
      this.set({ pool, state: 'idle' }, counts.idle);
      this.set({ pool, state: 'waiting' }, counts.waiting);
      poolMax.set({ pool }, counts.max);
    }
  },
);

export const buildInfo = gauge('docpipe_build_info', '1, with the service and the version that runs: the series that says a service is reporting.', {
  service: [...SERVICES, 'all'],
  version: CONFIGURED,
});

// ---- providers and cost ----

const PROVIDER_LABELS = {
  provider: ['llamaparse', 'openai', 'supabase'],
  // llamaparse: upload, status, result, cancel; openai: embeddings; supabase: the storage calls.
  operation: ['upload', 'status', 'result', 'cancel', 'embeddings', 'check', 'get', 'head', 'list', 'put', 'remove', 'setup', 'sign_upload', 'stat', 'other'],
} as const;

export const providerRequests = counter(
  'docpipe_provider_requests_total',
  'HTTP requests to external providers (llamaparse, openai, supabase), by operation and outcome (ok, rate_limited, server_error, client_error, network_error).',
  { ...PROVIDER_LABELS, outcome: ['ok', 'rate_limited', 'server_error', 'client_error', 'network_error'] },
  // Most provider x operation pairs do not exist (openai put): not created at 0.
  { initialize: false },
);

export const providerRequestDuration = histogram(
  'docpipe_provider_request_duration_seconds',
  'Duration of one provider HTTP request, by provider and operation.',
  PROVIDER_LABELS,
  [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
);

export const rateBudgetWait = histogram(
  'docpipe_rate_budget_wait_seconds',
  'Time spent waiting for the shared provider rate budget (token buckets in Postgres), by budget (openai:<the configured model>).',
  { bucket: CONFIGURED },
  [0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
);

export const parserPages = counter('docpipe_parser_pages_total', 'Pages of documents parsed, by parser.', { parser: PARSERS });

export const embeddingTokens = counter(
  'docpipe_embedding_tokens_total',
  'Tokens sent to the embedder (usage.prompt_tokens as reported by the provider), by model: the cost driver.',
  { model: CONFIGURED },
);

export const providerCost = counter(
  'docpipe_provider_estimated_cost_dollars_total',
  'Estimated provider cost in US dollars: LlamaParse pages x credits per page of the tier x PRICE_LLAMAPARSE_CREDIT_DOLLARS, OpenAI tokens x PRICE_OPENAI_MILLION_TOKENS_DOLLARS / 10^6.',
  { provider: ['llamaparse', 'openai'] },
);

// ---- webhooks and security ----

const WEBHOOK_OUTCOMES = ['appended', 'duplicate', 'ignored', 'early', 'unknown_document', 'rejected'] as const;

export const webhookHandling = histogram(
  'docpipe_webhook_handling_seconds',
  "A webhook delivery's arrival to its event committed (or to its answer when nothing is appended), by provider and outcome.",
  { provider: ['llamaparse'], outcome: WEBHOOK_OUTCOMES },
  [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
);

export const webhookDeliveries = counter(
  'docpipe_webhook_deliveries_total',
  'Webhook deliveries by provider and outcome (appended, duplicate, ignored, early, unknown_document, rejected).',
  { provider: ['llamaparse'], outcome: WEBHOOK_OUTCOMES },
);

export const webhookAuthFailures = counter(
  'docpipe_webhook_auth_failures_total',
  'Webhook deliveries answered 401, by provider and reason (missing, bad_credential, bad_signature).',
  { provider: ['llamaparse'], reason: ['missing', 'bad_credential', 'bad_signature', 'missing_signature'] },
);

export const AUTH_FAILURE_REASONS = ['missing', 'invalid', 'expired', 'forbidden_role', 'blocked'] as const;
export const authFailures = counter('docpipe_auth_failures_total', 'API requests refused by authentication (401) or authorisation of the role (403), by reason.', {
  reason: AUTH_FAILURE_REASONS,
});

export const RATE_LIMIT_BUDGETS = ['address', 'requests', 'uploads', 'searches', 'long_polls', 'long_poll_slots'] as const;
export const rateLimited = counter('docpipe_rate_limited_total', 'API requests refused 429, by the budget that refused them.', { budget: RATE_LIMIT_BUDGETS });

export const securityEvents = counter(
  'docpipe_security_events_total',
  'Threats detected and acted on, by kind (auth_failures: an address blocked; foreign_ids, forged_webhooks: flagged).',
  { kind: ['auth_failures', 'foreign_ids', 'forged_webhooks'] },
);

/** A bare HTTP server for `/metrics`, kept off the service port so it is never public. */
export async function startMetricsServer(host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(err.message);
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
