// Environment -> typed configuration, validated once at start-up. Every variable is declared
// once in SPEC (name, default, description, parser); `.env.example` is generated from the same
// table (`docpipe env-example`), so the documentation cannot drift from the code.
import path from 'node:path';
import { DEFAULT_PARSER_LIMITS, type ParserLimits } from './providers/types.ts';
import { LLAMAPARSE_TIERS, type LlamaParseTier } from './providers/parser/llamaparse.ts';

import type { ThreatSettings } from './security/threats.ts';
import type { RateLimitSettings } from './services/api/limits.ts';

export type ServiceName = 'api' | 'worker' | 'webhook';

export interface Config {
  /** Absent: the CLI starts an embedded PostgreSQL under `dataDir`. */
  databaseUrl: string | undefined;
  databasePoolMax: number;
  dataDir: string;
  embeddedPgPort: number;
  host: string;
  apiPort: number;
  webhookPort: number;
  workerPort: number;
  metricsPorts: Record<ServiceName, number>;
  /** How often the process holding the metrics lease samples the database (docs/METRICS.md). */
  metricsSampleIntervalSeconds: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** json lines, readable lines (pino-pretty), or auto: readable on a terminal. */
  logFormat: 'auto' | 'json' | 'pretty';
  jwt: { secret: string | undefined; jwksUrl: string | undefined; audience: string; issuer: string | undefined };
  maxUploadBytes: number;
  storage: StorageConfig;
  parser: ParserConfig;
  embedder: EmbedderConfig;
  /** Prices of the providers' work, for the estimated cost (GET /v1/usage, `docpipe usage`, metrics). */
  pricing: { llamaparseCreditDollars: number; openaiMillionTokensDollars: number };
  webhook: {
    /** Base URL at which the parser reaches the webhook service; unset: no webhooks, polling only. */
    publicUrl: string | undefined;
    /** HMAC key of the per-document webhook credentials. */
    secret: string | undefined;
    /** LlamaCloud's `webhook_signing_secret`: when set, `LC-Signature` is verified too. */
    llamaparseSigningSecret: string | undefined;
    deliveryRetentionDays: number;
  };
  uploads: {
    /** Base URL clients use to reach the API (signed fs upload URLs point here). */
    publicApiUrl: string;
    /** Largest direct-to-storage upload (POST /v1/uploads). */
    directMaxBytes: number;
    /** Validity of a signed upload URL (fs storage; Supabase's is the server's setting, read from its token). */
    urlTtlSeconds: number;
  };
  chunking: { maxTokens: number; overlapTokens: number; maxDocumentTokens: number };
  /** Limits of the local parser, checked before the work they bound (docs/LIMITS.md). */
  parserLimits: ParserLimits;
  /** The child processes that parse and chunk documents outside the worker's heap. */
  sandbox: { processes: number; memoryMb: number; timeoutSeconds: number };
  /** Document bytes the worker's jobs may hold in its main process at once (util/byte-budget.ts). */
  workerDocumentBudgetBytes: number;
  /** Bounds on what clients can hold open on the HTTP services. */
  http: {
    /** Where the client address comes from (services/api/limits.ts). */
    trustProxy: 'none' | 'fly';
    rateLimits: RateLimitSettings;
    /** CORS_ORIGINS: empty, no CORS. */
    corsOrigins: string[];
    maxConnections: number;
    uploadConcurrencyPerUser: number;
    uploadConcurrencyMax: number;
    uploadMinBytesPerSecond: number;
  };
  /** The audit log and threat detection (security/audit.ts, security/threats.ts). */
  security: { auditRetentionDays: number; threats: ThreatSettings };
  embedBatchSize: number;
  queue: {
    concurrency: number;
    /** Most jobs one claim statement takes (worker.ts, batchPlan). */
    batchSize: number;
    retryLimit: number;
    retryDelaySeconds: number;
    heartbeatSeconds: number;
    superviseIntervalSeconds: number;
    pollingIntervalSeconds: number;
  };
  longPollMaxSeconds: number;
  /** POST /v1/search gives up on embedding its query after this long (503 EMBEDDER_UNAVAILABLE). */
  searchEmbedTimeoutSeconds: number;
  shutdownTimeoutMs: number;
}

export type StorageConfig =
  | { kind: 'fs'; dir: string }
  | { kind: 'supabase'; url: string; serviceKey: string; bucket: string; timeoutSeconds: number };

export type ParserConfig =
  | { kind: 'local' }
  | {
      kind: 'llamaparse';
      apiKey: string;
      baseUrl: string;
      organizationId: string | undefined;
      projectId: string | undefined;
      tier: LlamaParseTier;
      /** `latest` or a dated version (YYYY-MM-DD). */
      version: string;
      /** Wait this long for a webhook before polling the job status. */
      pollAfterSeconds: number;
      /** processing_control.timeouts of every job; docpipe's deadline for a job follows from it and the document's pages. */
      jobTimeout: { baseSeconds: number; perPageSeconds: number };
      allowedPageFailureRatio: number | undefined;
      timeoutSeconds: number;
      /** Sent as webhook_signing_secret, so deliveries carry LC-Signature. */
      webhookSigningSecret: string | undefined;
    };

export type EmbedderConfig =
  | { kind: 'local'; dimensions: number }
  | {
      kind: 'openai';
      dimensions: number;
      apiKey: string;
      baseUrl: string;
      model: string;
      timeoutSeconds: number;
      /** Shared by every worker process through a Postgres token bucket. */
      requestsPerMinute: number;
      tokensPerMinute: number;
      /** How long one job waits through 429s before it hands the attempt back to pg-boss. */
      maxRateLimitWaitSeconds: number;
    };

type Parse<T> = (raw: string) => T;

interface VarSpec {
  name: string;
  default: string | undefined;
  description: string;
  parse: Parse<unknown>;
  /** A credential: set as a secret (Fly secrets), never in a file such as a fly.*.toml's [env]. */
  secret?: true;
}

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const int =
  (min: number, max: number): Parse<number> =>
  (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) throw new Error(`must be an integer, got ${JSON.stringify(raw)}`);
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`must be between ${min} and ${max}, got ${n}`);
    return n;
  };

const port = int(0, 65535);

const oneOf =
  <T extends string>(...values: T[]): Parse<T> =>
  (raw) => {
    if (!values.includes(raw as T)) throw new Error(`must be one of ${values.join(', ')}, got ${JSON.stringify(raw)}`);
    return raw as T;
  };

const text: Parse<string> = (raw) => raw;

/** A non-negative decimal number such as 0.02 (a price in dollars); no exponent, no sign. */
const decimal: Parse<number> = (raw) => {
  const trimmed = raw.trim();
  const n = Number(trimmed);
  if (!/^(?:\d+(?:\.\d*)?|\.\d+)$/.test(trimmed) || !Number.isFinite(n)) throw new Error(`must be a non-negative decimal number such as 0.02, got ${JSON.stringify(raw)}`);
  return n;
};

/** A share between 0 and 1, such as 0.05. */
const ratio: Parse<number> = (raw) => {
  const n = Number(raw.trim());
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new Error(`must be a number between 0 and 1, got ${JSON.stringify(raw)}`);
  return n;
};

/** LlamaParse's `version`: `latest`, or a dated one (the form `GET /api/v2/parse/versions` lists). */
const llamaParseVersion: Parse<string> = (raw) => {
  if (raw === 'latest' || (/^\d{4}-\d{2}-\d{2}$/.test(raw) && !Number.isNaN(Date.parse(raw)))) return raw;
  throw new Error(`must be latest or a date such as 2026-09-07, got ${JSON.stringify(raw)}`);
};

/** Comma-separated browser origins (scheme://host[:port], no path): the CORS allow-list. */
const origins: Parse<string[]> = (raw) =>
  raw.split(',').map((item) => item.trim()).filter(Boolean).map((item) => {
    let url: URL;
    try {
      url = new URL(item);
    } catch {
      throw new Error(`${JSON.stringify(item)} is not an origin like https://app.example.com`);
    }
    if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.origin !== item.replace(/\/$/, '') || url.hostname.includes('*')) {
      throw new Error(`${JSON.stringify(item)} is not an origin like https://app.example.com (scheme, host and port only; no path, no wildcard)`);
    }
    return url.origin;
  });

const postgresUrl: Parse<string> = (raw) => {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error('must be a postgres:// or postgresql:// URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new Error(`must be a postgres:// or postgresql:// URL, got protocol ${url.protocol}`);
  }
  return raw;
};

const httpUrl: Parse<string> = (raw) => {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`must be an http:// or https:// URL, got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`must be an http:// or https:// URL, got protocol ${url.protocol}`);
  return raw.replace(/\/+$/, '');
};

const secret: Parse<string> = (raw) => {
  if (raw.length < 32) throw new Error('must be at least 32 characters');
  return raw;
};

export const SPEC: VarSpec[] = [
  { name: 'DATABASE_URL', default: undefined, description: 'Postgres URL (direct or Supavisor session mode). Unset: an embedded PostgreSQL under DOCPIPE_DATA_DIR.', parse: postgresUrl, secret: true },
  { name: 'DATABASE_POOL_MAX', default: '10', description: 'Connections in the postgres.js pool of each process.', parse: int(1, 200) },
  { name: 'DOCPIPE_DATA_DIR', default: '.data', description: 'Local state: embedded Postgres cluster, local files, development secret.', parse: text },
  { name: 'EMBEDDED_PG_PORT', default: '54329', description: 'Port of the embedded PostgreSQL (only without DATABASE_URL).', parse: port },
  { name: 'HOST', default: '127.0.0.1', description: 'Address the HTTP servers bind to (use :: or 0.0.0.0 on Fly.io).', parse: text },
  { name: 'API_PORT', default: '3000', description: 'API service port.', parse: port },
  { name: 'WEBHOOK_PORT', default: '3001', description: 'Webhook service port.', parse: port },
  { name: 'WORKER_PORT', default: '3002', description: 'Worker health port (/healthz, /readyz).', parse: port },
  { name: 'API_METRICS_PORT', default: '9464', description: 'Prometheus /metrics port of the API (and of `all`).', parse: port },
  { name: 'WORKER_METRICS_PORT', default: '9465', description: 'Prometheus /metrics port of the worker.', parse: port },
  { name: 'WEBHOOK_METRICS_PORT', default: '9466', description: 'Prometheus /metrics port of the webhook service.', parse: port },
  { name: 'METRICS_SAMPLE_INTERVAL_SECONDS', default: '15', description: 'How often the one process holding the metrics lease samples queue depths and document counts from Postgres for the metrics (docs/METRICS.md); another process takes the lease over when it is three intervals old.', parse: int(1, 3600) },
  { name: 'LOG_LEVEL', default: 'info', description: 'pino level: fatal, error, warn, info, debug, trace, silent.', parse: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent') },
  { name: 'LOG_FORMAT', default: 'auto', description: 'Log lines: json (one JSON object per line, for Fly and log shippers), pretty (readable; needs the pino-pretty dev dependency, else json), or auto (pretty on a terminal, json otherwise).', parse: oneOf('auto', 'json', 'pretty') },
  { name: 'JWT_SECRET', default: undefined, description: 'Legacy HS256 secret of the Supabase project (>= 32 chars). With DATABASE_URL, this or JWT_JWKS_URL (or both) is required; the embedded default generates one under DOCPIPE_DATA_DIR.', parse: secret, secret: true },
  { name: 'JWT_JWKS_URL', default: undefined, description: 'JWKS of the asymmetric signing keys (ES256, RS256): https://<ref>.supabase.co/auth/v1/.well-known/jwks.json. Fetched at start, refreshed every 10 min and at most every 30 s on an unknown kid; the last good set is kept while it is down.', parse: httpUrl },
  { name: 'JWT_AUDIENCE', default: 'authenticated', description: 'Required `aud` claim.', parse: text },
  { name: 'JWT_ISSUER', default: undefined, description: 'Required `iss` claim, e.g. https://<ref>.supabase.co/auth/v1 (unset: not checked).', parse: text },
  { name: 'MAX_UPLOAD_BYTES', default: String(50 * 1024 * 1024), description: 'Largest accepted upload; larger answers 413 FILE_TOO_LARGE.', parse: int(1, 2 ** 40) },
  { name: 'DIRECT_UPLOAD_MAX_BYTES', default: String(100 * 1024 * 1024), description: 'Largest direct-to-storage upload declared to POST /v1/uploads. The parse stage holds a PDF (and, with the local parser, any document) in memory per job: size workers for WORKER_CONCURRENCY times this. To LlamaParse (up to 512 MB), other formats stream from a temporary file.', parse: int(1, 2 ** 40) },
  { name: 'UPLOAD_URL_TTL_SECONDS', default: '7200', description: 'How long a direct upload reservation lasts, and the validity of an fs signed upload URL. A Supabase signed upload URL lasts what the storage server grants (the exp of its token, reported as expiresAt).', parse: int(60, 7 * 24 * 3600) },
  { name: 'PUBLIC_API_URL', default: undefined, description: 'Base URL clients use to reach the API; signed fs upload URLs point here (default http://HOST:API_PORT).', parse: httpUrl },
  { name: 'DOCPIPE_STORAGE', default: 'fs', description: 'Storage adapter: fs (local directory) or supabase (Supabase Storage).', parse: oneOf('fs', 'supabase') },
  { name: 'STORAGE_DIR', default: undefined, description: 'Root of the fs storage (default DOCPIPE_DATA_DIR/files).', parse: text },
  { name: 'SUPABASE_URL', default: undefined, description: 'Project URL, https://<ref>.supabase.co (DOCPIPE_STORAGE=supabase).', parse: httpUrl },
  { name: 'SUPABASE_SERVICE_ROLE_KEY', default: undefined, description: 'Service role key: storage calls bypass row-level security (DOCPIPE_STORAGE=supabase). A Fly secret.', parse: text, secret: true },
  { name: 'SUPABASE_STORAGE_BUCKET', default: 'documents', description: 'Private bucket for originals and parsed markdown; `docpipe setup-storage` creates it.', parse: text },
  { name: 'SUPABASE_TIMEOUT_SECONDS', default: '120', description: 'Timeout of one storage request.', parse: int(1, 3600) },
  { name: 'DOCPIPE_PARSER', default: 'local', description: 'Parser adapter: local (in-process) or llamaparse (LlamaCloud, webhooks plus polling).', parse: oneOf('local', 'llamaparse') },
  { name: 'LLAMAPARSE_API_KEY', default: undefined, description: 'LlamaCloud API key, llx-... (DOCPIPE_PARSER=llamaparse). A Fly secret.', parse: text, secret: true },
  { name: 'LLAMAPARSE_BASE_URL', default: 'https://api.cloud.llamaindex.ai', description: 'LlamaCloud base URL (EU: https://api.cloud.eu.llamaindex.ai).', parse: httpUrl },
  { name: 'LLAMAPARSE_ORGANIZATION_ID', default: undefined, description: 'Optional organization_id query parameter.', parse: text },
  { name: 'LLAMAPARSE_PROJECT_ID', default: undefined, description: 'Optional project_id query parameter.', parse: text },
  { name: 'LLAMAPARSE_TIER', default: 'cost_effective', description: 'Parse tier: fast (1 credit/page, text only), cost_effective (3), agentic (10) or agentic_plus (45).', parse: oneOf(...LLAMAPARSE_TIERS) },
  { name: 'LLAMAPARSE_VERSION', default: 'latest', description: 'Parser version: latest, or a date such as 2026-09-07. Pin a date in production so the output cannot change silently.', parse: llamaParseVersion },
  { name: 'LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO', default: undefined, description: 'Share of pages that may fail before LlamaCloud fails the whole job (processing_control.job_failure_conditions); unset: LlamaCloud\'s 0.05. Below it, the document ends ready with a PARTIAL_SUCCESS warning naming the pages.', parse: ratio },
  { name: 'LLAMAPARSE_POLL_AFTER_SECONDS', default: '60', description: 'Wait this long for a webhook before polling the job status (then 1 s doubling to 60 s).', parse: int(0, 3600) },
  { name: 'LLAMAPARSE_JOB_TIMEOUT_BASE_SECONDS', default: '1800', description: 'LlamaCloud job time limit, fixed part (processing_control.timeouts.base_in_seconds; at most 30 min).', parse: int(60, 1800) },
  { name: 'LLAMAPARSE_JOB_TIMEOUT_PER_PAGE_SECONDS', default: '60', description: 'LlamaCloud job time limit per page (extra_time_per_page_in_seconds; at most 300). docpipe fails a job with PARSE_TIMEOUT 5 min after base + pages x this.', parse: int(0, 300) },
  { name: 'LLAMAPARSE_TIMEOUT_SECONDS', default: '120', description: 'Timeout of one LlamaCloud HTTP request (the upload included).', parse: int(1, 3600) },
  { name: 'WEBHOOK_PUBLIC_URL', default: undefined, description: 'Base URL at which LlamaCloud reaches the webhook service (https://<app>.fly.dev). Unset: no webhooks, polling only.', parse: httpUrl },
  { name: 'WEBHOOK_SECRET', default: undefined, description: 'HMAC key (>= 32 chars) of the per-document webhook credentials. Required with WEBHOOK_PUBLIC_URL. A Fly secret.', parse: secret, secret: true },
  { name: 'WEBHOOK_DELIVERY_RETENTION_DAYS', default: '7', description: 'Webhook delivery ids (de-duplication) are kept this long, then removed by the worker\'s maintenance job.', parse: int(1, 3650) },
  { name: 'LLAMAPARSE_WEBHOOK_SIGNING_SECRET', default: undefined, description: 'Sent to LlamaCloud as each job\'s webhook_signing_secret (>= 32 chars); the webhook service then requires a valid LC-Signature as well. Worker and webhook need the same value. A Fly secret.', parse: secret, secret: true },
  { name: 'DOCPIPE_EMBEDDER', default: 'local', description: 'Embedder adapter: local (lexical feature hashing, not semantic) or openai.', parse: oneOf('local', 'openai') },
  { name: 'EMBEDDING_DIMENSIONS', default: '512', description: 'Vector dimensions (openai: the `dimensions` parameter of text-embedding-3 models).', parse: int(8, 4096) },
  { name: 'OPENAI_API_KEY', default: undefined, description: 'OpenAI API key (DOCPIPE_EMBEDDER=openai). A Fly secret.', parse: text, secret: true },
  { name: 'OPENAI_BASE_URL', default: 'https://api.openai.com/v1', description: 'OpenAI base URL, /v1 included (Azure-compatible gateways work too).', parse: httpUrl },
  { name: 'OPENAI_EMBEDDING_MODEL', default: 'text-embedding-3-small', description: 'Embedding model.', parse: text },
  { name: 'OPENAI_TIMEOUT_SECONDS', default: '60', description: 'Timeout of one embeddings request.', parse: int(1, 600) },
  { name: 'OPENAI_REQUESTS_PER_MINUTE', default: '3000', description: 'Request budget per minute shared by every worker process (a Postgres token bucket).', parse: int(1, 10_000_000) },
  { name: 'OPENAI_TOKENS_PER_MINUTE', default: '1000000', description: 'Token budget per minute shared by every worker process.', parse: int(1, 1_000_000_000) },
  { name: 'OPENAI_MAX_RATE_LIMIT_WAIT_SECONDS', default: '900', description: 'How long one job keeps waiting through 429s before it hands the attempt back to pg-boss.', parse: int(1, 3600) },
  { name: 'PRICE_LLAMAPARSE_CREDIT_DOLLARS', default: '0.001', description: 'Dollars one LlamaCloud credit costs on the plan you are on (list price: 1,000 credits for $1). With the tier\'s credits per page (LLAMAPARSE_TIER), it prices parsed pages in the estimated cost (GET /v1/usage, docpipe usage, the cost metric).', parse: decimal },
  { name: 'PRICE_OPENAI_MILLION_TOKENS_DOLLARS', default: '0.02', description: 'Dollars per million tokens of OPENAI_EMBEDDING_MODEL (0.02: text-embedding-3-small; text-embedding-3-large is 0.13), for the estimated cost. The local parser and embedder cost nothing.', parse: decimal },
  { name: 'CHUNK_MAX_TOKENS', default: '512', description: 'Chunk size in cl100k_base tokens.', parse: int(16, 8191) },
  { name: 'CHUNK_OVERLAP_TOKENS', default: '64', description: 'Tokens repeated from the end of one chunk at the start of the next.', parse: int(0, 4000) },
  { name: 'MAX_DOCUMENT_TOKENS', default: '40000000', description: 'Most cl100k tokens in one parsed document; past it the document fails with DOCUMENT_LIMIT_EXCEEDED (a 50 MB application log has about 19 million, 50 MB of English prose about 11 million).', parse: int(1000, 1_000_000_000) },
  { name: 'PDF_MAX_PAGES', default: String(DEFAULT_PARSER_LIMITS.pdfMaxPages), description: 'Most pages of a PDF (local parser), read from its page tree before any page is extracted.', parse: int(1, 10_000_000) },
  { name: 'PDF_MAX_STREAM_BYTES', default: String(DEFAULT_PARSER_LIMITS.pdfMaxStreamBytes), description: 'Largest inflated size of one PDF content, object or font stream (local parser), checked before extraction.', parse: int(1024, 2 ** 40) },
  { name: 'PDF_MAX_INFLATED_BYTES', default: String(DEFAULT_PARSER_LIMITS.pdfMaxInflatedBytes), description: 'Largest inflated size of all those PDF streams together (local parser).', parse: int(1024, 2 ** 40) },
  { name: 'DOCX_MAX_XML_BYTES', default: String(DEFAULT_PARSER_LIMITS.docxMaxXmlBytes), description: 'Largest uncompressed size of the XML parts of a DOCX (local parser), read from the zip\'s central directory before anything inflates.', parse: int(1024, 2 ** 40) },
  { name: 'DOCX_MAX_COMPRESSION_RATIO', default: String(DEFAULT_PARSER_LIMITS.docxMaxCompressionRatio), description: 'Largest compression ratio of one DOCX entry over 1 MiB uncompressed (a zip bomb inflates 1000:1).', parse: int(2, 100_000) },
  { name: 'HTML_MAX_DEPTH', default: String(DEFAULT_PARSER_LIMITS.htmlMaxDepth), description: 'Deepest element nesting of an HTML document (local parser).', parse: int(8, 100_000) },
  { name: 'SANDBOX_PROCESSES', default: '2', description: 'Child processes of the worker that parse (local parser) and chunk documents, outside its heap; each idles at about 60 MB.', parse: int(1, 64) },
  { name: 'SANDBOX_MEMORY_MB', default: '1024', description: 'Memory of one sandbox process (resident set, and its V8 heap); a document that needs more fails with DOCUMENT_TOO_COMPLEX.', parse: int(128, 65536) },
  { name: 'SANDBOX_TIMEOUT_SECONDS', default: '300', description: 'Time limit of one parse or chunking task in the sandbox; past it the document fails with DOCUMENT_TOO_COMPLEX.', parse: int(1, 24 * 3600) },
  { name: 'WORKER_DOCUMENT_BUDGET_MB', default: '64', description: 'Sum of the sizes of the documents the worker\'s jobs hold in its main process at once (each job holds a few times its document); a job that would pass it waits, one larger document runs alone.', parse: int(1, 65536) },
  { name: 'EMBED_BATCH_SIZE', default: '64', description: 'Chunks per embedding request; progress is saved per batch.', parse: int(1, 2048) },
  { name: 'WORKER_CONCURRENCY', default: '4', description: 'Jobs per queue run at once by one worker process.', parse: int(1, 256) },
  { name: 'WORKER_BATCH_SIZE', default: '16', description: 'Most jobs a worker claims with one statement; it claims again at once while batches come back full. WORKER_CONCURRENCY still bounds the jobs running at once.', parse: int(1, 256) },
  { name: 'JOB_RETRY_LIMIT', default: '4', description: 'Retries of a failed stage before it is dead-lettered and the document fails.', parse: int(0, 100) },
  { name: 'JOB_RETRY_DELAY_SECONDS', default: '2', description: 'First retry delay; doubles each retry (exponential backoff).', parse: int(1, 3600) },
  { name: 'JOB_HEARTBEAT_SECONDS', default: '30', description: 'A job whose worker misses this heartbeat is retried (>= 10).', parse: int(10, 3600) },
  { name: 'QUEUE_SUPERVISE_INTERVAL_SECONDS', default: '15', description: 'How often pg-boss looks for expired jobs and missed heartbeats.', parse: int(1, 3600) },
  { name: 'QUEUE_POLLING_INTERVAL_SECONDS', default: '2', description: 'Polling interval of idle workers; new jobs wake them at once by LISTEN/NOTIFY, this bounds the wait for retries and backlog.', parse: int(1, 600) },
  { name: 'TRUST_PROXY', default: 'none', description: 'fly: behind Fly.io\'s proxy, the client address is the Fly-Client-IP header it sets; none: the connection\'s peer (a client cannot choose its address by sending the header).', parse: oneOf('none', 'fly') },
  { name: 'RATE_LIMIT_PER_ADDRESS', default: '1200', description: 'Requests per client address per minute on the api, before authentication (0: no limit). Per process.', parse: int(0, 10_000_000) },
  { name: 'RATE_LIMIT_UPLOADS', default: '60', description: 'Uploads (POST /v1/documents, /v1/uploads) per user per minute (0: no limit). Per process.', parse: int(0, 10_000_000) },
  { name: 'RATE_LIMIT_SEARCHES', default: '120', description: 'Searches (POST /v1/search; each embeds its query) per user per minute (0: no limit). Per process.', parse: int(0, 10_000_000) },
  { name: 'RATE_LIMIT_LONG_POLLS', default: '120', description: 'Long-polls (GET ...?wait=N) per user per minute (0: no limit). Per process.', parse: int(0, 10_000_000) },
  { name: 'RATE_LIMIT_REQUESTS', default: '1200', description: 'Other API requests per user per minute (0: no limit). Per process.', parse: int(0, 10_000_000) },
  { name: 'LONG_POLLS_PER_USER', default: '10', description: 'Long-polls one user may hold open at once; past it, 429 TOO_MANY_LONG_POLLS. Per process.', parse: int(1, 1_000_000) },
  { name: 'LONG_POLLS_MAX', default: '5000', description: 'Long-polls one api process holds open at once. Per process.', parse: int(1, 10_000_000) },
  { name: 'AUDIT_RETENTION_DAYS', default: '90', description: 'Rows of docpipe.audit_log are kept this long, then removed by the worker\'s maintenance job.', parse: int(1, 3650) },
  { name: 'AUTH_BLOCK_AFTER', default: '50', description: 'Failed authentications from one address within a minute that block it (403 ADDRESS_BLOCKED). Per process.', parse: int(1, 1_000_000) },
  { name: 'AUTH_BLOCK_SECONDS', default: '900', description: 'How long such a block lasts.', parse: int(1, 7 * 24 * 3600) },
  { name: 'FOREIGN_ID_FLAG_AFTER', default: '20', description: 'Distinct documents of other owners one user asks for within ten minutes before it is flagged (audit row, docpipe_security_events_total).', parse: int(1, 1_000_000) },
  { name: 'FORGED_WEBHOOK_FLAG_AFTER', default: '20', description: 'Webhook deliveries failing authentication from one address within a minute before it is flagged.', parse: int(1, 1_000_000) },
  { name: 'WEBHOOK_FAILURES_PER_ADDRESS', default: '30', description: 'Webhook deliveries failing authentication from one address per minute; past it the address gets 429 before anything is read. Deliveries that authenticate are never counted, so LlamaCloud\'s retries of a real delivery are never refused. Per process.', parse: int(1, 1_000_000) },
  { name: 'CORS_ORIGINS', default: undefined, description: 'Browser origins allowed to call the API (comma-separated, e.g. https://app.example.com). Unset: no CORS headers at all (server-to-server clients need none).', parse: origins },
  { name: 'MAX_CONNECTIONS', default: '1000', description: 'Open connections per HTTP server (api, webhook); further connections are closed at once.', parse: int(16, 1_000_000) },
  { name: 'UPLOAD_CONCURRENCY_PER_USER', default: '4', description: 'Uploads one user may stream to one API process at once; more answer 429 TOO_MANY_UPLOADS.', parse: int(1, 10_000) },
  { name: 'UPLOAD_CONCURRENCY_MAX', default: '64', description: 'Uploads one API process streams at once, all users together; more answer 503 SERVER_BUSY.', parse: int(1, 100_000) },
  { name: 'UPLOAD_MIN_BYTES_PER_SECOND', default: '1024', description: 'An upload body slower than this over any 10 s window is cut off with 408 UPLOAD_TOO_SLOW (0: never).', parse: int(0, 2 ** 30) },
  { name: 'LONG_POLL_MAX_SECONDS', default: '30', description: 'Upper bound of ?wait= on GET /v1/documents/:id.', parse: int(1, 300) },
  { name: 'SEARCH_EMBED_TIMEOUT_SECONDS', default: '10', description: 'POST /v1/search answers 503 EMBEDDER_UNAVAILABLE when its query is not embedded within this time (the embedder\'s own retries and the shared OpenAI budget included).', parse: int(1, 300) },
  { name: 'SHUTDOWN_TIMEOUT_MS', default: '10000', description: 'Drain budget on SIGTERM/SIGINT before the process exits anyway.', parse: int(100, 300000) },
];

/**
 * Reads the environment and returns the configuration, or throws one ConfigError naming every
 * bad variable. Empty strings count as unset, as in most .env tooling.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const values = new Map<string, unknown>();
  for (const spec of SPEC) {
    const raw = env[spec.name];
    const chosen = raw === undefined || raw === '' ? spec.default : raw;
    if (chosen === undefined) {
      values.set(spec.name, undefined);
      continue;
    }
    try {
      values.set(spec.name, spec.parse(chosen));
    } catch (err) {
      problems.push(`${spec.name}: ${(err as Error).message}`);
    }
  }
  const get = <T>(name: string) => values.get(name) as T;

  if (
    get<string | undefined>('DATABASE_URL') !== undefined &&
    get<string | undefined>('JWT_SECRET') === undefined &&
    get<string | undefined>('JWT_JWKS_URL') === undefined &&
    !problems.some((p) => p.startsWith('JWT_SECRET') || p.startsWith('JWT_JWKS_URL'))
  ) {
    problems.push('JWT_SECRET or JWT_JWKS_URL: one is required when DATABASE_URL is set (the JWKS URL of your Supabase project, or its legacy HS256 secret)');
  }
  const maxTokens = get<number>('CHUNK_MAX_TOKENS');
  const overlap = get<number>('CHUNK_OVERLAP_TOKENS');
  if (maxTokens !== undefined && overlap !== undefined && overlap * 2 >= maxTokens) {
    problems.push(`CHUNK_OVERLAP_TOKENS: must be less than half of CHUNK_MAX_TOKENS (${maxTokens}), got ${overlap}`);
  }
  const requires = (selector: string, names: string[]) => {
    const missing = names.filter((n) => get(n) === undefined && !problems.some((p) => p.startsWith(`${n}:`)));
    if (missing.length > 0) problems.push(`${selector} needs ${missing.join(', ')} (unset)`);
  };
  if (get('DOCPIPE_STORAGE') === 'supabase') requires('DOCPIPE_STORAGE=supabase', ['SUPABASE_URL', 'SUPABASE_SERVICE_ROLE_KEY']);
  if (get('DOCPIPE_PARSER') === 'llamaparse') requires('DOCPIPE_PARSER=llamaparse', ['LLAMAPARSE_API_KEY']);
  if (get('DOCPIPE_EMBEDDER') === 'openai') requires('DOCPIPE_EMBEDDER=openai', ['OPENAI_API_KEY']);
  if (get('WEBHOOK_PUBLIC_URL') !== undefined) requires('WEBHOOK_PUBLIC_URL', ['WEBHOOK_SECRET']);
  if (problems.length > 0) throw new ConfigError(problems);

  const dataDir = path.resolve(get<string>('DOCPIPE_DATA_DIR'));
  return {
    databaseUrl: get('DATABASE_URL'),
    databasePoolMax: get('DATABASE_POOL_MAX'),
    dataDir,
    embeddedPgPort: get('EMBEDDED_PG_PORT'),
    host: get('HOST'),
    apiPort: get('API_PORT'),
    webhookPort: get('WEBHOOK_PORT'),
    workerPort: get('WORKER_PORT'),
    metricsPorts: { api: get('API_METRICS_PORT'), worker: get('WORKER_METRICS_PORT'), webhook: get('WEBHOOK_METRICS_PORT') },
    metricsSampleIntervalSeconds: get('METRICS_SAMPLE_INTERVAL_SECONDS'),
    logLevel: get('LOG_LEVEL'),
    logFormat: get('LOG_FORMAT'),
    jwt: { secret: get('JWT_SECRET'), jwksUrl: get('JWT_JWKS_URL'), audience: get('JWT_AUDIENCE'), issuer: get('JWT_ISSUER') },
    maxUploadBytes: get('MAX_UPLOAD_BYTES'),
    storage:
      get('DOCPIPE_STORAGE') === 'supabase'
        ? { kind: 'supabase', url: get('SUPABASE_URL'), serviceKey: get('SUPABASE_SERVICE_ROLE_KEY'), bucket: get('SUPABASE_STORAGE_BUCKET'), timeoutSeconds: get('SUPABASE_TIMEOUT_SECONDS') }
        : { kind: 'fs', dir: path.resolve(get<string | undefined>('STORAGE_DIR') ?? path.join(dataDir, 'files')) },
    parser:
      get('DOCPIPE_PARSER') === 'llamaparse'
        ? {
            kind: 'llamaparse',
            apiKey: get('LLAMAPARSE_API_KEY'),
            baseUrl: get('LLAMAPARSE_BASE_URL'),
            organizationId: get('LLAMAPARSE_ORGANIZATION_ID'),
            projectId: get('LLAMAPARSE_PROJECT_ID'),
            tier: get('LLAMAPARSE_TIER'),
            version: get('LLAMAPARSE_VERSION'),
            pollAfterSeconds: get('LLAMAPARSE_POLL_AFTER_SECONDS'),
            jobTimeout: { baseSeconds: get('LLAMAPARSE_JOB_TIMEOUT_BASE_SECONDS'), perPageSeconds: get('LLAMAPARSE_JOB_TIMEOUT_PER_PAGE_SECONDS') },
            allowedPageFailureRatio: get('LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO'),
            timeoutSeconds: get('LLAMAPARSE_TIMEOUT_SECONDS'),
            webhookSigningSecret: get('LLAMAPARSE_WEBHOOK_SIGNING_SECRET'),
          }
        : { kind: 'local' },
    embedder:
      get('DOCPIPE_EMBEDDER') === 'openai'
        ? {
            kind: 'openai',
            dimensions: get('EMBEDDING_DIMENSIONS'),
            apiKey: get('OPENAI_API_KEY'),
            baseUrl: get('OPENAI_BASE_URL'),
            model: get('OPENAI_EMBEDDING_MODEL'),
            timeoutSeconds: get('OPENAI_TIMEOUT_SECONDS'),
            requestsPerMinute: get('OPENAI_REQUESTS_PER_MINUTE'),
            tokensPerMinute: get('OPENAI_TOKENS_PER_MINUTE'),
            maxRateLimitWaitSeconds: get('OPENAI_MAX_RATE_LIMIT_WAIT_SECONDS'),
          }
        : { kind: 'local', dimensions: get('EMBEDDING_DIMENSIONS') },
    pricing: { llamaparseCreditDollars: get('PRICE_LLAMAPARSE_CREDIT_DOLLARS'), openaiMillionTokensDollars: get('PRICE_OPENAI_MILLION_TOKENS_DOLLARS') },
    webhook: {
      publicUrl: get('WEBHOOK_PUBLIC_URL'),
      secret: get('WEBHOOK_SECRET'),
      llamaparseSigningSecret: get('LLAMAPARSE_WEBHOOK_SIGNING_SECRET'),
      deliveryRetentionDays: get('WEBHOOK_DELIVERY_RETENTION_DAYS'),
    },
    uploads: {
      publicApiUrl: get<string | undefined>('PUBLIC_API_URL') ?? `http://${urlHost(get('HOST'))}:${get<number>('API_PORT')}`,
      directMaxBytes: get('DIRECT_UPLOAD_MAX_BYTES'),
      urlTtlSeconds: get('UPLOAD_URL_TTL_SECONDS'),
    },
    chunking: { maxTokens, overlapTokens: overlap, maxDocumentTokens: get('MAX_DOCUMENT_TOKENS') },
    parserLimits: {
      pdfMaxPages: get('PDF_MAX_PAGES'),
      pdfMaxStreamBytes: get('PDF_MAX_STREAM_BYTES'),
      pdfMaxInflatedBytes: get('PDF_MAX_INFLATED_BYTES'),
      docxMaxXmlBytes: get('DOCX_MAX_XML_BYTES'),
      docxMaxCompressionRatio: get('DOCX_MAX_COMPRESSION_RATIO'),
      htmlMaxDepth: get('HTML_MAX_DEPTH'),
    },
    sandbox: { processes: get('SANDBOX_PROCESSES'), memoryMb: get('SANDBOX_MEMORY_MB'), timeoutSeconds: get('SANDBOX_TIMEOUT_SECONDS') },
    workerDocumentBudgetBytes: get<number>('WORKER_DOCUMENT_BUDGET_MB') * 1024 * 1024,
    http: {
      trustProxy: get('TRUST_PROXY'),
      rateLimits: {
        perAddress: get('RATE_LIMIT_PER_ADDRESS'),
        uploads: get('RATE_LIMIT_UPLOADS'),
        searches: get('RATE_LIMIT_SEARCHES'),
        longPolls: get('RATE_LIMIT_LONG_POLLS'),
        requests: get('RATE_LIMIT_REQUESTS'),
        longPollsPerUser: get('LONG_POLLS_PER_USER'),
        longPollsMax: get('LONG_POLLS_MAX'),
      },
      corsOrigins: get<string[] | undefined>('CORS_ORIGINS') ?? [],
      maxConnections: get('MAX_CONNECTIONS'),
      uploadConcurrencyPerUser: get('UPLOAD_CONCURRENCY_PER_USER'),
      uploadConcurrencyMax: get('UPLOAD_CONCURRENCY_MAX'),
      uploadMinBytesPerSecond: get('UPLOAD_MIN_BYTES_PER_SECOND'),
    },
    security: {
      auditRetentionDays: get('AUDIT_RETENTION_DAYS'),
      threats: {
        authFailuresToBlock: get('AUTH_BLOCK_AFTER'),
        blockSeconds: get('AUTH_BLOCK_SECONDS'),
        foreignIdsToFlag: get('FOREIGN_ID_FLAG_AFTER'),
        forgedWebhooksToFlag: get('FORGED_WEBHOOK_FLAG_AFTER'),
        webhookFailuresPerAddress: get('WEBHOOK_FAILURES_PER_ADDRESS'),
      },
    },
    embedBatchSize: get('EMBED_BATCH_SIZE'),
    queue: {
      concurrency: get('WORKER_CONCURRENCY'),
      batchSize: get('WORKER_BATCH_SIZE'),
      retryLimit: get('JOB_RETRY_LIMIT'),
      retryDelaySeconds: get('JOB_RETRY_DELAY_SECONDS'),
      heartbeatSeconds: get('JOB_HEARTBEAT_SECONDS'),
      superviseIntervalSeconds: get('QUEUE_SUPERVISE_INTERVAL_SECONDS'),
      pollingIntervalSeconds: get('QUEUE_POLLING_INTERVAL_SECONDS'),
    },
    longPollMaxSeconds: get('LONG_POLL_MAX_SECONDS'),
    searchEmbedTimeoutSeconds: get('SEARCH_EMBED_TIMEOUT_SECONDS'),
    shutdownTimeoutMs: get('SHUTDOWN_TIMEOUT_MS'),
  };
}

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

/** The text of `.env.example`, generated from SPEC. */
export function envExample(): string {
  const lines = ['# docpipe configuration. Generated by `npm run docpipe -- env-example`; every variable with its default.', ''];
  for (const spec of SPEC) {
    lines.push(`# ${spec.description}`);
    lines.push(spec.default === undefined ? `# ${spec.name}=` : `${spec.name}=${spec.default}`);
    lines.push('');
  }
  return lines.join('\n');
}

/** The README's configuration table (markdown), generated from SPEC; a test keeps them equal. */
export function configTable(): string {
  const cell = (text: string) => text.replaceAll('|', '\\|');
  const rows = SPEC.map((spec) => `| \`${spec.name}\` | ${spec.default === undefined ? '(unset)' : `\`${spec.default}\``} | ${cell(spec.description)} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}
