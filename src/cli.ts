#!/usr/bin/env node
// docpipe <api|worker|webhook|all|migrate|rebuild-projections|setup-storage|doctor|audit|token|...>
// One entrypoint for the three services (three Fly apps, one image) and the operator commands.
// SIGINT/SIGTERM: stop accepting, drain requests and jobs, close pools, stop the embedded
// Postgres, all within SHUTDOWN_TIMEOUT_MS; a repeated signal does not cut the drain short.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { ConfigError, configTable, envExample, loadConfig, type Config, type ServiceName } from './config.ts';
import { createSql } from './db/client.ts';
import { migrate } from './db/migrate.ts';
import { EmbeddingDimensionsError, openVectorStore } from './db/vectors.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { buildInfo, initializeSeries, startMetricsServer } from './observability/metrics.ts';
import { configurePipelineMetrics } from './observability/pipeline-metrics.ts';
import { startSampler } from './observability/sampler.ts';
import { DOCTOR_USAGE, formatReport, parseDoctorArgs, runDoctor } from './ops/doctor.ts';
import { collectStatus, formatStatus, parseStatusArgs, STATUS_USAGE } from './ops/status.ts';
import { rebuildProjections } from './projections/rebuild.ts';
import { formatAuditRow, parseAuditArgs, queryAudit } from './security/audit.ts';
import { costSettings } from './documents/usage.ts';
import { formatUsage, parseUsageArgs, USAGE_COMMAND_HELP, usageSummary } from './ops/usage.ts';
import { parseTokenArgs, signUserToken } from './security/tokens.ts';
import { buildApiApp } from './services/api/app.ts';
import { createHttpApp, registerHealth, type App } from './services/http.ts';
import { createStorage } from './providers/index.ts';
import { jwtSettings, openDatabase, openRuntime, uploadSigningKey, type Runtime } from './services/runtime.ts';
import { buildWebhookApp } from './services/webhook/app.ts';
import { startWorker } from './services/worker/worker.ts';

const USAGE = `usage: docpipe <command>

services
  all                  api + worker + webhook in one process (npm start)
  api                  the HTTP API
  worker               the pipeline's job handlers
  webhook              parser callbacks

operations
  migrate              apply pending SQL migrations (Fly release_command)
  rebuild-projections  rebuild the read models from the event log
  setup-storage        create the storage bucket (Supabase) or directory (fs); idempotent
  doctor [--api N] [--worker N] [--webhook N]
                       check this environment against the services it names: database,
                       session mode, migrations, connection budget for N machines of each
                       app, storage, JWT settings, provider keys, webhook URL; exit 0 when
                       all pass
  audit [--actor A] [--action X] [--outcome O] [--target T] [--since 24h] [--limit N] [--json]
                       the security audit log, newest first (also GET /v1/admin/audit)
  usage [--owner ID] [--since 30d | --from D --to D] [--limit N] [--json]
                       per-owner usage (documents, bytes, pages, tokens) by UTC day, biggest
                       estimated cost first, with the totals (a user's own: GET /v1/usage)
  status [--json]      queues (depth, oldest waiting), documents by status, the last hour's
                       failures by error code, today's usage and cost, database connections
  token [sub] [--ttl 24h]
                       print a user JWT signed with JWT_SECRET (or the embedded default);
                       --ttl in m, h or d (a smoke-test user's token: --ttl 365d)
  env-example          print .env.example
  config-table         print the README's configuration table

Logs are JSON lines, or readable lines on a terminal; LOG_FORMAT=json|pretty chooses.
`;

/** A development user id, stable across restarts so `npm start` always shows the same documents. */
const DEV_USER = '00000000-0000-4000-8000-000000000001';

/** Signals that stop a command or start the drain; Node's default for each would kill the process on the spot. */
const SHUTDOWN_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR2'] as const;

async function withDatabase<T>(config: Config, logger: Logger, fn: (sql: ReturnType<typeof createSql>) => Promise<T>): Promise<T> {
  const database = await openDatabase(config, logger);
  const sql = createSql(database.url, { max: 2, applicationName: 'docpipe-cli' });
  // The embedded PostgreSQL runs in a process group of its own, out of reach of the terminal's
  // Ctrl-C: an interrupted command stops it itself, or it would outlive the command.
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    logger.warn({ signal }, 'interrupted: stopping');
    void Promise.allSettled([sql.end({ timeout: 1 }), database.embedded?.stop()]).then(() => process.exit(128 + (os.constants.signals[signal] ?? 2)));
  };
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, onSignal);
  try {
    return await fn(sql);
  } catch (err) {
    // What the interruption broke is no news: the handler exits.
    if (interrupted) return new Promise<never>(() => {});
    throw err;
  } finally {
    for (const signal of SHUTDOWN_SIGNALS) process.off(signal, onSignal);
    if (!interrupted) {
      await sql.end({ timeout: 5 });
      await database.embedded?.stop();
    }
  }
}

/**
 * The logger of a command whose report goes to stdout (audit, usage, status): warnings only, so
 * that the report, `--json`'s object above all, is all stdout holds (the embedded database's
 * start-up line is info).
 */
function reportLogger(logger: Logger): Logger {
  return logger.child({}, { level: logger.levelVal < 40 ? 'warn' : logger.level });
}

/** docpipe's version, from the package.json above this file (src/ or dist/src/). */
function docpipeVersion(): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'docpipe') return pkg.version ?? 'unknown';
  }
  return 'unknown';
}

async function listen(app: App, host: string, port: number): Promise<string> {
  return app.listen({ host, port });
}

/**
 * Closes an HTTP app: in-flight requests finish, then the connections go. Fastify closes the
 * connections that are idle when close() begins; a keep-alive connection whose request finishes
 * during the drain (an upload in flight at SIGTERM) would stay open until its keep-alive timeout
 * (72 s) and hold the drain past SHUTDOWN_TIMEOUT_MS. So idle connections are closed as they
 * become idle.
 */
async function closeHttp(app: App): Promise<void> {
  const sweep = setInterval(() => app.server.closeIdleConnections(), 100);
  try {
    await app.close();
  } finally {
    clearInterval(sweep);
  }
}

/**
 * One orderly drain on a signal or a fatal error, bounded by SHUTDOWN_TIMEOUT_MS, then exit: 0
 * when drained after a signal, 1 after a fatal error or a timeout. A terminal's Ctrl-C arrives
 * more than once: npm forwards SIGINT to its script, and tsx relays it to its child when it has
 * not seen the child get it. So a repeat during the drain is expected and must not cut it short.
 */
function handleShutdown(logger: Logger, timeoutMs: number, drain: () => Promise<void>, stopDatabase: () => Promise<void>): void {
  let startedAt = 0;
  let failed = false;
  const begin = (why: { signal: NodeJS.Signals } | { err: unknown }) => {
    if ('err' in why) failed = true;
    if (startedAt) {
      if ('err' in why) logger.error({ err: why.err }, 'error during the drain');
      else if (Date.now() - startedAt < 2_000) logger.debug({ signal: why.signal }, 'signal repeated during the drain (npm and tsx relay Ctrl-C): ignored');
      else logger.info({ signal: why.signal }, `still draining: docpipe exits within SHUTDOWN_TIMEOUT_MS (${timeoutMs} ms)`);
      return;
    }
    startedAt = Date.now();
    if ('err' in why) logger.error({ err: why.err }, 'fatal error, shutting down');
    else logger.info({ signal: why.signal }, 'shutting down');
    setTimeout(() => {
      logger.error({ timeoutMs }, 'the drain did not finish within SHUTDOWN_TIMEOUT_MS: exiting anyway (raise it if jobs need longer)');
      // The embedded PostgreSQL, in a process group of its own, would outlive us: ask it to stop
      // (its fast shutdown needs no help from us) and wait for it briefly.
      void Promise.race([stopDatabase().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 2_000))]).then(() => process.exit(1));
    }, timeoutMs).unref();
    drain().then(
      () => {
        logger.info('stopped');
        process.exit(failed ? 1 : 0);
      },
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  for (const signal of SHUTDOWN_SIGNALS) process.on(signal, (s: NodeJS.Signals) => begin({ signal: s }));
  process.on('uncaughtException', (err) => begin({ err }));
  process.on('unhandledRejection', (err) => begin({ err }));
}

async function runServices(config: Config, logger: Logger, services: ServiceName[]): Promise<void> {
  const name = services.length === 1 ? services[0]! : 'all';
  const closers: (() => Promise<void>)[] = [];
  let runtime: Runtime | null = null;
  let startupSettled!: () => void;
  const startup = new Promise<void>((resolve) => (startupSettled = resolve));
  let draining: Promise<void> | null = null;
  // A signal during start-up waits for it to settle, then closes whatever was opened.
  const drain = () =>
    (draining ??= (async () => {
      await startup;
      // Reverse order of start: HTTP first (stop accepting, drain), then jobs, pools, Postgres.
      for (const close of closers.reverse()) await close().catch((err: unknown) => logger.error({ err }, 'close failed'));
      await runtime?.close();
    })());
  // Installed before anything starts: from here on, a signal never kills the process outright.
  handleShutdown(logger, config.shutdownTimeoutMs, drain, async () => runtime?.database.embedded?.stop());

  let failed = false;
  try {
    runtime = await openRuntime(config, logger, name);
    const rt = runtime;
    const jwt = await jwtSettings(config);
    const urls: Record<string, string> = {};
    const metrics = await startMetricsServer(config.host, config.metricsPorts[services.length === 1 ? services[0]! : 'api']);
    closers.push(metrics.close);
    buildInfo.set({ service: name, version: docpipeVersion() }, 1);
    initializeSeries();
    configurePipelineMetrics(config);
    // Every process competes for the sampling lease; one samples the database for the whole deployment.
    const sampler = startSampler({ sql: rt.sql, logger, intervalSeconds: config.metricsSampleIntervalSeconds });
    closers.push(() => sampler.stop());
    if (services.includes('worker') && !draining) {
      const worker = await startWorker({ config, boss: rt.boss, ctx: rt.ctx, providers: rt.providers, logger });
      closers.push(() => worker.stop());
      if (services.length === 1) {
        const health = createHttpApp({ service: 'worker', logger, maxConnections: config.http.maxConnections });
        registerHealth(health, [{ name: 'database', check: async () => void (await rt.sql`select 1`) }, ...rt.readiness]);
        closers.push(() => closeHttp(health));
        urls.worker = await listen(health, config.host, config.workerPort);
      }
    }
    if (services.includes('webhook') && !draining) {
      // Alone (a Fly app), it serves the deployment's LlamaParse whatever its own DOCPIPE_PARSER
      // says; beside the worker in `all`, deliveries come only if that worker's parser calls back.
      const expectsDeliveries = services.length === 1 || config.parser.kind === 'llamaparse';
      const webhook = await buildWebhookApp({ ctx: rt.ctx, config, logger, readiness: rt.readiness, expectsDeliveries });
      closers.push(() => closeHttp(webhook));
      urls.webhook = await listen(webhook, config.host, config.webhookPort);
    }
    if (services.includes('api') && !draining) {
      const { app } = await buildApiApp({ config, jwt, jwksUrl: config.jwt.jwksUrl, logger, ctx: rt.ctx, storage: rt.providers.storage, embedder: rt.providers.embedder, vectors: rt.vectors, uploadSigningKey: rt.uploadSigningKey, readiness: rt.readiness });
      closers.push(() => closeHttp(app));
      urls.api = await listen(app, config.host, config.apiPort);
    }
    if (!draining) {
      logger.info({ urls, metrics: `http://${config.host}:${metrics.port}/metrics` }, 'docpipe started');
      if (services.includes('api') && rt.database.embedded && !config.jwt.secret) printWelcome(urls.api!, signUserToken(jwt, DEV_USER, { expiresInSeconds: 7 * 24 * 3600 }));
    }
  } catch (err) {
    logger.error({ err }, 'start-up failed');
    failed = true;
  } finally {
    startupSettled();
  }
  if (failed) {
    await drain();
    process.exitCode = 1;
  }
}

function printWelcome(apiUrl: string, token: string): void {
  const lines = [
    '',
    `docpipe is running: ${apiUrl}`,
    '',
    'Development token (user ' + DEV_USER + ', valid 7 days):',
    `  export TOKEN=${token}`,
    '',
    'Try it:',
    `  curl -s -H "Authorization: Bearer $TOKEN" -F file=@test/fixtures/sample.pdf ${apiUrl}/v1/documents`,
    `  curl -s -H "Authorization: Bearer $TOKEN" "${apiUrl}/v1/documents/<id>?wait=30"`,
    '',
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

/** `docpipe doctor`: the report on stdout; exit 0 when every check passes, 1 otherwise, 2 for bad flags. */
async function doctor(args: string[]): Promise<number> {
  let machines;
  try {
    machines = parseDoctorArgs(args);
  } catch (err) {
    process.stderr.write(`docpipe doctor: ${(err as Error).message}\n\n${DOCTOR_USAGE}`);
    return 2;
  }
  if (machines === 'help') {
    process.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  const results = await runDoctor({ machines });
  process.stdout.write(formatReport(results, machines));
  return results.every((r) => r.ok) ? 0 : 1;
}

async function main(argv: string[]): Promise<void> {
  const command = argv[0];
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (command === 'env-example') {
    process.stdout.write(envExample());
    return;
  }
  if (command === 'config-table') {
    process.stdout.write(configTable() + '\n');
    return;
  }
  // A local .env fills in what the environment leaves unset (never overrides it).
  if (existsSync('.env')) process.loadEnvFile('.env');
  if (command === 'doctor') {
    process.exitCode = await doctor(argv.slice(1));
    return;
  }
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`docpipe: ${err.message}\n`);
    process.exitCode = 2;
    return;
  }
  // `service` on every line: the command (all, api, worker, webhook, migrate...), unless a service binds its own.
  const logger = createLogger(config.logLevel, {}, { format: config.logFormat, service: command });
  switch (command) {
    case 'all':
      return runServices(config, logger, ['api', 'worker', 'webhook']);
    case 'api':
    case 'worker':
    case 'webhook':
      return runServices(config, logger, [command]);
    case 'migrate': {
      const applied = await withDatabase(config, logger, async (sql) => {
        // The release command: a changed EMBEDDING_DIMENSIONS stops the deploy here, before any machine changes.
        await openVectorStore(sql, config.embedder.dimensions);
        return migrate(sql, { log: (m) => logger.info(m), embeddingDimensions: config.embedder.dimensions });
      });
      logger.info({ applied }, applied.length ? 'migrations applied' : 'database is current');
      return;
    }
    case 'rebuild-projections': {
      const result = await withDatabase(config, logger, async (sql) => {
        // As `migrate`: a changed EMBEDDING_DIMENSIONS stops here, before anything changes.
        await openVectorStore(sql, config.embedder.dimensions);
        await migrate(sql, { embeddingDimensions: config.embedder.dimensions });
        return rebuildProjections(sql);
      });
      logger.info(result, 'projections rebuilt');
      return;
    }
    case 'audit': {
      let parsed: ReturnType<typeof parseAuditArgs>;
      try {
        parsed = parseAuditArgs(argv.slice(1));
      } catch (err) {
        process.stderr.write(`docpipe audit: ${(err as Error).message}\n\n${USAGE}`);
        process.exitCode = 2;
        return;
      }
      const rows = await withDatabase(config, reportLogger(logger), (sql) => queryAudit(sql, parsed.query));
      for (const row of rows) process.stdout.write((parsed.json ? JSON.stringify(row) : formatAuditRow(row)) + '\n');
      if (!parsed.json && rows.length === 0) process.stderr.write('no audit rows match\n');
      return;
    }
    case 'usage': {
      let parsed: ReturnType<typeof parseUsageArgs>;
      try {
        parsed = parseUsageArgs(argv.slice(1));
      } catch (err) {
        process.stderr.write(`docpipe usage: ${(err as Error).message}\n\n${USAGE_COMMAND_HELP}`);
        process.exitCode = 2;
        return;
      }
      if (parsed === 'help') {
        process.stdout.write(USAGE_COMMAND_HELP);
        return;
      }
      const args = parsed;
      const summary = await withDatabase(config, reportLogger(logger), (sql) => usageSummary(sql, args, costSettings(config)));
      process.stdout.write(args.json ? JSON.stringify(summary) + '\n' : formatUsage(summary));
      return;
    }
    case 'status': {
      let parsed: ReturnType<typeof parseStatusArgs>;
      try {
        parsed = parseStatusArgs(argv.slice(1));
      } catch (err) {
        process.stderr.write(`docpipe status: ${(err as Error).message}\n\n${STATUS_USAGE}`);
        process.exitCode = 2;
        return;
      }
      if (parsed.help) {
        process.stdout.write(STATUS_USAGE);
        return;
      }
      const status = await withDatabase(config, reportLogger(logger), (sql) => collectStatus(sql, config));
      process.stdout.write(parsed.json ? JSON.stringify(status, null, 2) + '\n' : formatStatus(status));
      return;
    }
    case 'setup-storage': {
      const storage = createStorage(config, await uploadSigningKey(config, await jwtSettings(config)));
      const outcome = await storage.setup();
      await storage.check();
      const where = config.storage.kind === 'supabase' ? `bucket "${config.storage.bucket}" at ${config.storage.url}` : `directory ${config.storage.dir}`;
      logger.info({ storage: config.storage.kind, outcome }, `storage ${where} ${outcome === 'created' ? 'created' : 'already exists'}; it is ready`);
      return;
    }
    case 'token': {
      let args: { sub: string; ttlSeconds: number };
      try {
        args = parseTokenArgs(argv.slice(1), DEV_USER);
      } catch (err) {
        process.stderr.write(`docpipe token: ${(err as Error).message}\n\n${USAGE}`);
        process.exitCode = 2;
        return;
      }
      const jwt = await jwtSettings(config);
      if (!jwt.secret) {
        process.stderr.write('docpipe token: signs with JWT_SECRET (HS256), which is not set; with JWT_JWKS_URL alone, user tokens come from Supabase Auth (the access_token of a signed-in user)\n');
        process.exitCode = 2;
        return;
      }
      process.stdout.write(signUserToken(jwt, args.sub, { expiresInSeconds: args.ttlSeconds }) + '\n');
      return;
    }
    default:
      process.stderr.write(`docpipe: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      process.exitCode = 2;
  }
}

try {
  await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof EmbeddingDimensionsError) {
    // The operator's to fix, like a configuration error: one line that says how, exit code 2.
    process.stderr.write(`docpipe: ${err.code}: ${err.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`docpipe: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
// One-shot commands end here; services keep running on their open handles until a signal.
if (process.exitCode) process.exit(process.exitCode);
