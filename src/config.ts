// Environment -> typed configuration, validated once at start-up. Every variable is declared
// once in SPEC (name, default, description, parser); `.env.example` is generated from the same
// table (`docpipe env-example`), so the documentation cannot drift from the code.
import path from 'node:path';

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
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  jwt: { secret: string | undefined; audience: string; issuer: string | undefined };
  maxUploadBytes: number;
  storage: { kind: 'fs'; dir: string };
  parser: { kind: 'local' };
  embedder: { kind: 'local'; dimensions: number };
  chunking: { maxTokens: number; overlapTokens: number };
  embedBatchSize: number;
  queue: {
    concurrency: number;
    retryLimit: number;
    retryDelaySeconds: number;
    heartbeatSeconds: number;
    superviseIntervalSeconds: number;
    pollingIntervalSeconds: number;
  };
  longPollMaxSeconds: number;
  shutdownTimeoutMs: number;
}

type Parse<T> = (raw: string) => T;

interface VarSpec {
  name: string;
  default: string | undefined;
  description: string;
  parse: Parse<unknown>;
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

const secret: Parse<string> = (raw) => {
  if (raw.length < 32) throw new Error('must be at least 32 characters');
  return raw;
};

export const SPEC: VarSpec[] = [
  { name: 'DATABASE_URL', default: undefined, description: 'Postgres URL (direct or Supavisor session mode). Unset: an embedded PostgreSQL under DOCPIPE_DATA_DIR.', parse: postgresUrl },
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
  { name: 'LOG_LEVEL', default: 'info', description: 'pino level: fatal, error, warn, info, debug, trace, silent.', parse: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent') },
  { name: 'JWT_SECRET', default: undefined, description: 'HS256 secret of the Supabase project (>= 32 chars). Required with DATABASE_URL; the embedded default generates one under DOCPIPE_DATA_DIR.', parse: secret },
  { name: 'JWT_AUDIENCE', default: 'authenticated', description: 'Required `aud` claim.', parse: text },
  { name: 'JWT_ISSUER', default: undefined, description: 'Required `iss` claim, e.g. https://<ref>.supabase.co/auth/v1 (unset: not checked).', parse: text },
  { name: 'MAX_UPLOAD_BYTES', default: String(50 * 1024 * 1024), description: 'Largest accepted upload; larger answers 413 FILE_TOO_LARGE.', parse: int(1, 2 ** 40) },
  { name: 'DOCPIPE_STORAGE', default: 'fs', description: 'Storage adapter: fs.', parse: oneOf('fs') },
  { name: 'STORAGE_DIR', default: undefined, description: 'Root of the fs storage (default DOCPIPE_DATA_DIR/files).', parse: text },
  { name: 'DOCPIPE_PARSER', default: 'local', description: 'Parser adapter: local.', parse: oneOf('local') },
  { name: 'DOCPIPE_EMBEDDER', default: 'local', description: 'Embedder adapter: local (lexical feature hashing, not semantic).', parse: oneOf('local') },
  { name: 'EMBEDDING_DIMENSIONS', default: '512', description: 'Vector dimensions.', parse: int(8, 4096) },
  { name: 'CHUNK_MAX_TOKENS', default: '512', description: 'Chunk size in cl100k_base tokens.', parse: int(16, 8191) },
  { name: 'CHUNK_OVERLAP_TOKENS', default: '64', description: 'Tokens repeated from the end of one chunk at the start of the next.', parse: int(0, 4000) },
  { name: 'EMBED_BATCH_SIZE', default: '64', description: 'Chunks per embedding request; progress is saved per batch.', parse: int(1, 2048) },
  { name: 'WORKER_CONCURRENCY', default: '4', description: 'Jobs per queue run at once by one worker process.', parse: int(1, 256) },
  { name: 'JOB_RETRY_LIMIT', default: '4', description: 'Retries of a failed stage before it is dead-lettered and the document fails.', parse: int(0, 100) },
  { name: 'JOB_RETRY_DELAY_SECONDS', default: '2', description: 'First retry delay; doubles each retry (exponential backoff).', parse: int(1, 3600) },
  { name: 'JOB_HEARTBEAT_SECONDS', default: '30', description: 'A job whose worker misses this heartbeat is retried (>= 10).', parse: int(10, 3600) },
  { name: 'QUEUE_SUPERVISE_INTERVAL_SECONDS', default: '15', description: 'How often pg-boss looks for expired jobs and missed heartbeats.', parse: int(1, 3600) },
  { name: 'QUEUE_POLLING_INTERVAL_SECONDS', default: '2', description: 'Polling interval of idle workers; new jobs wake them at once by LISTEN/NOTIFY, this bounds the wait for retries and backlog.', parse: int(1, 600) },
  { name: 'LONG_POLL_MAX_SECONDS', default: '30', description: 'Upper bound of ?wait= on GET /v1/documents/:id.', parse: int(1, 300) },
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

  if (get<string | undefined>('DATABASE_URL') !== undefined && get<string | undefined>('JWT_SECRET') === undefined && !problems.some((p) => p.startsWith('JWT_SECRET'))) {
    problems.push('JWT_SECRET: required when DATABASE_URL is set (the HS256 secret of your Supabase project)');
  }
  const maxTokens = get<number>('CHUNK_MAX_TOKENS');
  const overlap = get<number>('CHUNK_OVERLAP_TOKENS');
  if (maxTokens !== undefined && overlap !== undefined && overlap * 2 >= maxTokens) {
    problems.push(`CHUNK_OVERLAP_TOKENS: must be less than half of CHUNK_MAX_TOKENS (${maxTokens}), got ${overlap}`);
  }
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
    logLevel: get('LOG_LEVEL'),
    jwt: { secret: get('JWT_SECRET'), audience: get('JWT_AUDIENCE'), issuer: get('JWT_ISSUER') },
    maxUploadBytes: get('MAX_UPLOAD_BYTES'),
    storage: { kind: 'fs', dir: path.resolve(get<string | undefined>('STORAGE_DIR') ?? path.join(dataDir, 'files')) },
    parser: { kind: 'local' },
    embedder: { kind: 'local', dimensions: get('EMBEDDING_DIMENSIONS') },
    chunking: { maxTokens, overlapTokens: overlap },
    embedBatchSize: get('EMBED_BATCH_SIZE'),
    queue: {
      concurrency: get('WORKER_CONCURRENCY'),
      retryLimit: get('JOB_RETRY_LIMIT'),
      retryDelaySeconds: get('JOB_RETRY_DELAY_SECONDS'),
      heartbeatSeconds: get('JOB_HEARTBEAT_SECONDS'),
      superviseIntervalSeconds: get('QUEUE_SUPERVISE_INTERVAL_SECONDS'),
      pollingIntervalSeconds: get('QUEUE_POLLING_INTERVAL_SECONDS'),
    },
    longPollMaxSeconds: get('LONG_POLL_MAX_SECONDS'),
    shutdownTimeoutMs: get('SHUTDOWN_TIMEOUT_MS'),
  };
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
