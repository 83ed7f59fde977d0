#!/usr/bin/env node
// docpipe <api|worker|webhook|all|migrate|rebuild-projections|token|env-example>
// One entrypoint for the three services (three Fly apps, one image) and the operator commands.
// SIGINT/SIGTERM: stop accepting, drain requests and jobs, close pools, stop the embedded
// Postgres, all within SHUTDOWN_TIMEOUT_MS.
import { existsSync } from 'node:fs';
import closeWithGrace from 'close-with-grace';
import { ConfigError, configTable, envExample, loadConfig, type Config, type ServiceName } from './config.ts';
import { createSql } from './db/client.ts';
import { migrate } from './db/migrate.ts';
import { createLogger, type Logger } from './observability/logger.ts';
import { startMetricsServer } from './observability/metrics.ts';
import { rebuildProjections } from './projections/rebuild.ts';
import { signUserToken } from './security/tokens.ts';
import { buildApiApp } from './services/api/app.ts';
import { createHttpApp, registerHealth, type App } from './services/http.ts';
import { createStorage } from './providers/index.ts';
import { jwtSettings, openDatabase, openRuntime, uploadSigningKey } from './services/runtime.ts';
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
  token [sub]          print a development JWT (embedded default or JWT_SECRET)
  env-example          print .env.example
  config-table         print the README's configuration table
`;

/** A development user id, stable across restarts so `npm start` always shows the same documents. */
const DEV_USER = '00000000-0000-4000-8000-000000000001';

async function withDatabase<T>(config: Config, logger: Logger, fn: (sql: ReturnType<typeof createSql>) => Promise<T>): Promise<T> {
  const database = await openDatabase(config, logger);
  const sql = createSql(database.url, { max: 2, applicationName: 'docpipe-cli' });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
    await database.embedded?.stop();
  }
}

async function listen(app: App, host: string, port: number): Promise<string> {
  return app.listen({ host, port });
}

async function runServices(config: Config, logger: Logger, services: ServiceName[]): Promise<void> {
  const name = services.length === 1 ? services[0]! : 'all';
  const runtime = await openRuntime(config, logger, name);
  const closers: (() => Promise<void>)[] = [];
  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    // Reverse order of start: HTTP first (stop accepting, drain), then jobs, pools, Postgres.
    for (const close of closers.reverse()) await close().catch((err: unknown) => logger.error({ err }, 'close failed'));
    await runtime.close();
  };
  closeWithGrace({ delay: config.shutdownTimeoutMs, logger: { error: (m: unknown) => logger.error(m) } }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'fatal error, shutting down');
    else logger.info({ signal }, 'shutting down');
    await shutdown();
    logger.info('stopped');
  });

  try {
    const jwt = await jwtSettings(config);
    const urls: Record<string, string> = {};
    const metrics = await startMetricsServer(config.host, config.metricsPorts[services.length === 1 ? services[0]! : 'api']);
    closers.push(metrics.close);
    if (services.includes('worker')) {
      const worker = await startWorker({ config, boss: runtime.boss, ctx: runtime.ctx, providers: runtime.providers, logger });
      closers.push(() => worker.stop());
      if (services.length === 1) {
        const health = createHttpApp({ service: 'worker', logger, maxConnections: config.http.maxConnections });
        registerHealth(health, [{ name: 'database', check: async () => void (await runtime.sql`select 1`) }, ...runtime.readiness]);
        urls.worker = await listen(health, config.host, config.workerPort);
        closers.push(() => health.close());
      }
    }
    if (services.includes('webhook')) {
      const webhook = buildWebhookApp({ ctx: runtime.ctx, config, logger, readiness: runtime.readiness });
      urls.webhook = await listen(webhook, config.host, config.webhookPort);
      closers.push(() => webhook.close());
    }
    if (services.includes('api')) {
      const { app } = await buildApiApp({ config, jwt, logger, ctx: runtime.ctx, storage: runtime.providers.storage, uploadSigningKey: runtime.uploadSigningKey, readiness: runtime.readiness });
      urls.api = await listen(app, config.host, config.apiPort);
      closers.push(() => app.close());
    }
    logger.info({ urls, metrics: `http://${config.host}:${metrics.port}/metrics` }, 'docpipe started');
    if (services.includes('api') && runtime.database.embedded && !config.jwt.secret) printWelcome(urls.api!, signUserToken(jwt, DEV_USER, { expiresInSeconds: 7 * 24 * 3600 }));
  } catch (err) {
    logger.error({ err }, 'start-up failed');
    await shutdown();
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
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`docpipe: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  const logger = createLogger(config.logLevel);
  switch (command) {
    case 'all':
      return runServices(config, logger, ['api', 'worker', 'webhook']);
    case 'api':
    case 'worker':
    case 'webhook':
      return runServices(config, logger, [command]);
    case 'migrate': {
      const applied = await withDatabase(config, logger, (sql) => migrate(sql, { log: (m) => logger.info(m) }));
      logger.info({ applied }, applied.length ? 'migrations applied' : 'database is current');
      return;
    }
    case 'rebuild-projections': {
      const result = await withDatabase(config, logger, async (sql) => {
        await migrate(sql);
        return rebuildProjections(sql);
      });
      logger.info(result, 'projections rebuilt');
      return;
    }
    case 'setup-storage': {
      const storage = createStorage(config, uploadSigningKey(await jwtSettings(config)));
      const outcome = await storage.setup();
      await storage.check();
      const where = config.storage.kind === 'supabase' ? `bucket "${config.storage.bucket}" at ${config.storage.url}` : `directory ${config.storage.dir}`;
      logger.info({ storage: config.storage.kind, outcome }, `storage ${where} ${outcome === 'created' ? 'created' : 'already exists'}; it is ready`);
      return;
    }
    case 'token': {
      const jwt = await jwtSettings(config);
      process.stdout.write(signUserToken(jwt, argv[1] ?? DEV_USER, { expiresInSeconds: 24 * 3600 }) + '\n');
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
  process.stderr.write(`docpipe: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exitCode = 1;
}
// One-shot commands end here; services keep running on their open handles until a signal.
if (process.exitCode) process.exit(process.exitCode);
