// A fresh, migrated database per test file on the run's shared cluster (test/global-setup.ts).
import { randomBytes } from 'node:crypto';
import { after } from 'node:test';
import postgres from 'postgres';
import { createSql, type Sql } from '../../src/db/client.ts';
import { migrate } from '../../src/db/migrate.ts';
import type { PgBoss } from 'pg-boss';
import type { CommandContext } from '../../src/documents/commands.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { bossJobSender, startBoss } from '../../src/queue/boss.ts';

export interface TestDatabase {
  url: string;
  sql: Sql;
  name: string;
  /** Closes the pool and drops the database (done after the file's tests unless `manual`). */
  drop(): Promise<void>;
}

function adminUrl(): string {
  const url = process.env.DOCPIPE_TEST_ADMIN_URL;
  if (!url) throw new Error('DOCPIPE_TEST_ADMIN_URL is not set: run tests with `npm test` (it starts the cluster)');
  return url;
}

/** Creates an empty database; dropped after the file's tests. */
export async function createDatabase(options: { migrate?: boolean; manual?: boolean } = {}): Promise<TestDatabase> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  const sql = createSql(url.toString(), { max: 10 });
  if (options.migrate !== false) await migrate(sql);
  const drop = async () => {
    await sql.end({ timeout: 5 });
    const a = postgres(adminUrl(), { max: 1, onnotice: () => {} });
    await a.unsafe(`drop database if exists ${name} with (force)`);
    await a.end();
  };
  if (!options.manual) after(drop);
  return { url: url.toString(), sql, name, drop };
}

/**
 * A fresh database with pg-boss started on it, and the command context that enqueues through
 * it: for tests of the command handler without the services. pg-boss stops, then the database
 * is dropped, after the file's tests.
 */
export async function createQueueDatabase(instanceName: string): Promise<{ db: TestDatabase; boss: PgBoss; ctx: CommandContext }> {
  const db = await createDatabase({ manual: true });
  const boss = await startBoss({
    url: db.url,
    settings: { retryLimit: 1, retryDelaySeconds: 1, heartbeatSeconds: 10, superviseIntervalSeconds: 60 },
    logger: createLogger('silent'),
    instanceName,
    poolMax: 2,
  });
  after(async () => {
    await boss.stop({ graceful: false, close: true });
    await db.drop();
  });
  return { db, boss, ctx: { sql: db.sql, jobs: bossJobSender(boss) } };
}
