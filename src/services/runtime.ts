// What every service process shares: the database (embedded or configured), migrations,
// the postgres.js pool, pg-boss, the providers, and an orderly shutdown of all of them.
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import { canPrepare, createSql, type Sql } from '../db/client.ts';
import { EmbeddedPgError, startEmbeddedPostgres, type EmbeddedPg } from '../db/embedded.ts';
import { migrate } from '../db/migrate.ts';
import { openVectorStore, type VectorStore } from '../db/vectors.ts';
import type { CommandContext } from '../documents/commands.ts';
import type { Logger } from '../observability/logger.ts';
import { observePool } from '../observability/metrics.ts';
import { createProviders, type Providers } from '../providers/index.ts';
import { bossJobSender, startBoss } from '../queue/boss.ts';
import { QUEUES } from '../queue/jobs.ts';
import type { JwtSettings } from '../security/tokens.ts';
import type { ReadinessCheck } from './http.ts';

export interface Database {
  url: string;
  embedded: EmbeddedPg | null;
}

/** The configured database, or the embedded cluster under the data directory, migrated. */
export async function openDatabase(config: Config, logger: Logger): Promise<Database> {
  if (config.databaseUrl) return { url: config.databaseUrl, embedded: null };
  const pgLog = logger.child({ component: 'embedded-postgres' });
  let embedded: EmbeddedPg;
  try {
    embedded = await startEmbeddedPostgres({
      dataDir: config.dataDir,
      port: config.embeddedPgPort,
      // Ctrl-C reaches the whole foreground process group: the database must outlive the drain.
      ownProcessGroup: true,
      log: (m) => pgLog.debug(m),
    });
  } catch (err) {
    // Not installed, a port taken, a cluster in use, out of the postgres user's reach: the user's
    // to fix, so one line that says how (like a configuration error, exit code 2), not a stack.
    if (!(err instanceof EmbeddedPgError)) throw err;
    process.stderr.write(`docpipe: ${err.message}\n`);
    process.exit(2);
  }
  logger.info({ dataDir: config.dataDir, port: config.embeddedPgPort, cluster: embedded.clusterDir, binaries: embedded.binDir }, 'embedded PostgreSQL started');
  return { url: embedded.url, embedded };
}

/**
 * The token settings: the configured HS256 secret and/or JWKS; with neither (the embedded
 * default only: config requires one with DATABASE_URL), a development secret generated once and kept.
 */
export async function jwtSettings(config: Config): Promise<JwtSettings> {
  const base = { audience: config.jwt.audience, issuer: config.jwt.issuer };
  if (config.jwt.secret || config.jwt.jwksUrl) return { ...base, secret: config.jwt.secret };
  return { ...base, secret: await keptSecret(config, 'dev-jwt-secret') };
}

/** A random secret generated once under DOCPIPE_DATA_DIR and kept there. */
async function keptSecret(config: Config, name: string): Promise<string> {
  const file = path.join(config.dataDir, name);
  await mkdir(config.dataDir, { recursive: true });
  if (!existsSync(file)) await writeFile(file, randomBytes(32).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  return (await readFile(file, 'utf8')).trim();
}

/**
 * The key of the fs storage's signed upload URLs: derived from the JWT secret (no extra secret to
 * manage), or, with a JWKS alone, from a secret kept under DOCPIPE_DATA_DIR (fs storage is one
 * machine's disk anyway).
 */
export async function uploadSigningKey(config: Config, jwt: JwtSettings): Promise<Buffer> {
  const secret = jwt.secret ?? (await keptSecret(config, 'upload-signing-secret'));
  return createHmac('sha256', secret).update('docpipe/fs-upload-url/v1').digest();
}

export interface Runtime {
  config: Config;
  jwt: JwtSettings;
  uploadSigningKey: Buffer;
  logger: Logger;
  database: Database;
  sql: Sql;
  /** Where the chunks' embeddings are; its dimension is the configuration's (checked at start-up). */
  vectors: VectorStore;
  boss: PgBoss;
  ctx: CommandContext;
  providers: Providers;
  readiness: ReadinessCheck[];
  close(): Promise<void>;
}

export async function openRuntime(config: Config, logger: Logger, instanceName: string): Promise<Runtime> {
  const database = await openDatabase(config, logger);
  const poolUse = { inFlight: 0 };
  const sql = createSql(database.url, { max: config.databasePoolMax, applicationName: `docpipe-${instanceName}`, track: poolUse });
  const unobserveApp = observePool('app', () => {
    const inUse = Math.min(poolUse.inFlight, config.databasePoolMax);
    return { max: config.databasePoolMax, inUse, idle: config.databasePoolMax - inUse, waiting: Math.max(0, poolUse.inFlight - config.databasePoolMax) };
  });
  try {
    if (database.embedded) {
      const applied = await migrate(sql, { log: (m) => logger.info(m), embeddingDimensions: config.embedder.dimensions });
      if (applied.length) logger.info({ applied }, 'migrations applied');
    }
    // Refused (EMBEDDING_DIMENSIONS_MISMATCH) before anything embeds or searches with another size.
    const vectors = await openVectorStore(sql, config.embedder.dimensions);
    const boss = await startBoss({ url: database.url, settings: config.queue, logger, instanceName });
    const unobserveQueue = observePool('queue', () => {
      const counts = (boss.getDb() as { poolCounts?: () => { max: number; total: number; idle: number; waiting: number } | null }).poolCounts?.();
      return counts ? { max: counts.max, inUse: counts.total - counts.idle, idle: counts.idle, waiting: counts.waiting } : null;
    });
    const jwt = await jwtSettings(config);
    const signingKey = await uploadSigningKey(config, jwt);
    const providers = createProviders(config, { sql, logger, uploadSigningKey: signingKey });
    // Checked once at start-up, loudly, without blocking it: /readyz keeps failing (so Fly.io
    // routes no traffic here) until the storage answers, e.g. after `docpipe setup-storage`.
    void providers.storage.check().then(
      () => logger.info({ storage: providers.storage.kind }, 'storage is ready'),
      (err: unknown) => logger.error({ storage: providers.storage.kind, reason: (err as Error).message }, 'storage is not ready; /readyz fails until it is'),
    );
    const readiness: ReadinessCheck[] = [
      {
        name: 'queue',
        check: async () => {
          if (!(await boss.getQueue(QUEUES.parse))) throw new Error('pg-boss queues are not created');
        },
      },
      { name: 'storage', check: () => providers.storage.check() },
    ];
    return {
      config,
      jwt,
      uploadSigningKey: signingKey,
      logger,
      database,
      sql,
      vectors,
      boss,
      ctx: { sql, jobs: bossJobSender(boss, { prepare: canPrepare(database.url) }) },
      providers,
      readiness,
      async close() {
        unobserveApp();
        unobserveQueue();
        await boss.stop({ graceful: true, timeout: config.shutdownTimeoutMs, close: true }).catch((err: unknown) => logger.warn({ err }, 'pg-boss stop failed'));
        await providers.close();
        await sql.end({ timeout: 5 });
        await database.embedded?.stop();
      },
    };
  } catch (err) {
    unobserveApp();
    await sql.end({ timeout: 1 }).catch(() => {});
    await database.embedded?.stop().catch(() => {});
    throw err;
  }
}
