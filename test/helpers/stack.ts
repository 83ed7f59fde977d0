// Starts docpipe's services for end-to-end tests: in-process on real ports (port 0), or as a
// child process running the real CLI (for crash tests). Everything runs against a database of
// its own on the run's cluster.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { loadConfig, type Config } from '../../src/config.ts';
import { createLogger, type Logger } from '../../src/observability/logger.ts';
import { signUserToken, type JwtSettings } from '../../src/security/tokens.ts';
import { buildApiApp, type ApiApp } from '../../src/services/api/app.ts';
import { openRuntime, type Runtime } from '../../src/services/runtime.ts';
import { buildWebhookApp } from '../../src/services/webhook/app.ts';
import { startWorker, type RunningWorker } from '../../src/services/worker/worker.ts';
import { freePort } from '../../src/util/free-port.ts';
import { createDatabase, type TestDatabase } from './db.ts';

export const TEST_JWT_SECRET = 'test-secret-test-secret-test-secret-0123456789';
export const NO_RATE_LIMITS = { RATE_LIMIT_PER_ADDRESS: '0', RATE_LIMIT_UPLOADS: '0', RATE_LIMIT_SEARCHES: '0', RATE_LIMIT_LONG_POLLS: '0', RATE_LIMIT_REQUESTS: '0' } as const;
export const TEST_WEBHOOK_SECRET = 'test-webhook-secret-test-webhook-secret-01';

export interface TestStack {
  db: TestDatabase;
  config: Config;
  env: Record<string, string>;
  runtime: Runtime;
  apiUrl: string;
  webhookUrl: string;
  jwt: JwtSettings;
  worker: RunningWorker | null;
  token(sub?: string, options?: { expiresInSeconds?: number }): string;
  /** Writes the api's aggregated audit rows now (they are written once a minute). */
  flushAudit(): Promise<void>;
  /** Every route of the api, as registered (for the OpenAPI check). */
  apiRoutes(): ApiApp['routes'];
  /** Starts (again) an in-process worker. */
  startWorker(): Promise<RunningWorker>;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Extra environment (config variables) for the services. */
  env?: Record<string, string>;
  /** Start an in-process worker (default true). Off for tests that run the worker as a child. */
  worker?: boolean;
  /** Give the parser this stack's webhook service as WEBHOOK_PUBLIC_URL (with a WEBHOOK_SECRET). */
  webhooks?: boolean;
  /** The services' logger (default: pino on stdout at LOG_LEVEL); tests that assert on log lines pass their own. */
  logger?: Logger;
}

export interface StackEnvOptions {
  databaseUrl: string;
  dataDir: string;
  apiPort: number;
  webhookPort: number;
  webhooks?: boolean;
  env?: Record<string, string>;
}

/**
 * The services' environment as startStack gives it, for a test that runs every service as a
 * child process of the real CLI (spawnCli) against a database of its own (createDatabase).
 */
export function stackEnv(options: StackEnvOptions): Record<string, string> {
  return {
    DATABASE_URL: options.databaseUrl,
    JWT_SECRET: TEST_JWT_SECRET,
    DOCPIPE_DATA_DIR: options.dataDir,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    API_PORT: String(options.apiPort),
    WEBHOOK_PORT: String(options.webhookPort),
    WORKER_PORT: '0',
    API_METRICS_PORT: '0',
    WORKER_METRICS_PORT: '0',
    WEBHOOK_METRICS_PORT: '0',
    JOB_RETRY_DELAY_SECONDS: '1',
    JOB_HEARTBEAT_SECONDS: '10',
    QUEUE_SUPERVISE_INTERVAL_SECONDS: '2',
    // One sandbox process is enough for a test's few documents, and each costs a start-up.
    SANDBOX_PROCESSES: '1',
    // Every test client is 127.0.0.1 and one of a few users: the request budgets are off unless a
    // test sets them (test/security/rate-limits.test.ts does).
    ...NO_RATE_LIMITS,
    ...(options.webhooks ? { WEBHOOK_PUBLIC_URL: `http://127.0.0.1:${options.webhookPort}`, WEBHOOK_SECRET: TEST_WEBHOOK_SECRET } : {}),
    ...options.env,
  };
}

export async function startStack(options: StackOptions = {}): Promise<TestStack> {
  const db = await createDatabase({ manual: true });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-stack-'));
  // Known before start-up: signed fs upload URLs and webhook URLs carry it.
  const apiPort = await freePort();
  const webhookPort = await freePort();
  const env = stackEnv({ databaseUrl: db.url, dataDir, apiPort, webhookPort, webhooks: options.webhooks, env: options.env });
  const config = loadConfig(env);
  const logger = options.logger ?? createLogger(config.logLevel);
  const runtime = await openRuntime(config, logger, 'test');
  const jwt: JwtSettings = { secret: TEST_JWT_SECRET, audience: config.jwt.audience, issuer: config.jwt.issuer };
  const api = await buildApiApp({ config, jwt, jwksUrl: config.jwt.jwksUrl, logger, ctx: runtime.ctx, storage: runtime.providers.storage, embedder: runtime.providers.embedder, vectors: runtime.vectors, uploadSigningKey: runtime.uploadSigningKey, readiness: runtime.readiness });
  const apiUrl = await api.app.listen({ host: '127.0.0.1', port: config.apiPort });
  const webhook = await buildWebhookApp({ ctx: runtime.ctx, config, logger, readiness: runtime.readiness });
  const webhookUrl = await webhook.listen({ host: '127.0.0.1', port: config.webhookPort });
  const workers: RunningWorker[] = [];
  const stack: TestStack = {
    db,
    config,
    env,
    runtime,
    apiUrl,
    webhookUrl,
    jwt,
    worker: null,
    token: (sub = 'user-a', o = {}) => signUserToken(jwt, sub, o),
    flushAudit: () => api.audit.flush(),
    apiRoutes: () => api.routes,
    async startWorker() {
      const w = await startWorker({ config, boss: runtime.boss, ctx: runtime.ctx, providers: runtime.providers, logger });
      workers.push(w);
      stack.worker = w;
      return w;
    },
    async close() {
      await api.app.close();
      await webhook.close();
      for (const w of workers) await w.stop().catch(() => {});
      await runtime.close();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  if (options.worker !== false) await stack.startWorker();
  after(() => stack.close());
  return stack;
}

/** Runs `docpipe <command>` (the real CLI) as a child process with the stack's environment. */
export function spawnCli(command: string, env: Record<string, string>): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), command], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return child;
}

/** What the client helpers below need: an in-process stack, or services run as child processes. */
export type ApiTarget = Pick<TestStack, 'apiUrl' | 'token'>;

/** Authenticated fetch against the API. */
export function api(stack: ApiTarget, sub = 'user-a') {
  const token = stack.token(sub);
  return (route: string, init: RequestInit = {}) =>
    fetch(new URL(route, stack.apiUrl), { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) } });
}

/** Uploads a file as multipart, like `curl -F file=@...`. */
export async function upload(stack: ApiTarget, bytes: Buffer | Uint8Array, fileName: string, options: { sub?: string; idempotencyKey?: string } = {}): Promise<Response> {
  const form = new FormData();
  form.append('file', new Blob([bytes]), fileName);
  const headers: Record<string, string> = { authorization: `Bearer ${stack.token(options.sub ?? 'user-a')}` };
  if (options.idempotencyKey) headers['idempotency-key'] = options.idempotencyKey;
  return fetch(new URL('/v1/documents', stack.apiUrl), { method: 'POST', body: form, headers });
}

/** Long-polls GET /v1/documents/:id until the status is one of `statuses` or the deadline passes. */
export async function waitForStatus(stack: ApiTarget, id: string, statuses: string[], options: { sub?: string; timeoutMs?: number } = {}): Promise<Record<string, any>> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  const call = api(stack, options.sub);
  let last: Record<string, any> | null = null;
  while (Date.now() < deadline) {
    const res = await call(`/v1/documents/${id}?wait=5`, last ? { headers: { 'if-none-match': `"${last.version}"` } } : {});
    if (res.status === 200) last = (await res.json()) as Record<string, any>;
    else if (res.status !== 304) throw new Error(`GET /v1/documents/${id} answered ${res.status}: ${await res.text()}`);
    if (last && statuses.includes(last.status)) return last;
  }
  throw new Error(`document ${id} did not reach ${statuses.join('|')} in time; last: ${JSON.stringify(last)}`);
}
