// pg-boss in the same database as the event log. Jobs are created through an adapter over the
// caller's postgres.js transaction, so an event and the job it triggers commit together.
// Pickup is LISTEN/NOTIFY (`useListenNotify` on the instance and `notify` on every queue);
// polling stays on only as a slow backstop.
import { PgBoss, type Db as IDatabase, type Queue } from 'pg-boss';
import type { Db } from '../db/client.ts';
import type { Logger } from '../observability/logger.ts';
import { QUEUES, type JobRequest, type JobSender, type QueueName } from './jobs.ts';

export const BOSS_SCHEMA = 'pgboss';

/** Connections of pg-boss's own pool in each process (besides DATABASE_POOL_MAX); docpipe doctor counts them. */
export const BOSS_POOL_MAX = 5;

export interface QueueSettings {
  retryLimit: number;
  retryDelaySeconds: number;
  heartbeatSeconds: number;
  superviseIntervalSeconds: number;
}

/** pg-boss's `db` option over a postgres.js transaction (or pool). */
export function bossDb(db: Db, options: { prepare?: boolean } = {}): IDatabase {
  // pg-boss's statements are a fixed set of texts with parameters: prepared, Postgres parses and
  // plans its large job-insert CTE once per connection instead of on every send (a third of the
  // database CPU of a webhook delivery). Not where the pool cannot prepare (Supavisor
  // transaction mode).
  const prepare = options.prepare === true;
  return {
    async executeSql(text: string, values?: unknown[]) {
      const rows = await db.unsafe(text, (values ?? []) as never[], { prepare: prepare && (values?.length ?? 0) > 0 });
      return { rows: [...rows] };
    },
  };
}

export function queueDefinitions(settings: QueueSettings): Queue[] {
  const stage = {
    retryLimit: settings.retryLimit,
    retryDelay: settings.retryDelaySeconds,
    retryBackoff: true,
    retryDelayMax: 300,
    heartbeatSeconds: settings.heartbeatSeconds,
    // A job that neither finishes nor misses a heartbeat is still bounded.
    expireInSeconds: 60 * 60,
    deadLetter: QUEUES.deadLetter,
    notify: true,
  } satisfies Partial<Queue>;
  return [
    { name: QUEUES.deadLetter, retryLimit: 10, retryDelay: 5, retryBackoff: true, notify: true },
    { name: QUEUES.parse, ...stage },
    { name: QUEUES.parseResult, ...stage },
    { name: QUEUES.embed, ...stage },
    { name: QUEUES.purge, retryLimit: 10, retryDelay: 5, retryBackoff: true, retryDelayMax: 600, notify: true },
    // One run at a time across every worker; a missed or failed run is simply the next one.
    { name: QUEUES.maintenance, policy: 'singleton', retryLimit: 1, retryDelay: 60, expireInSeconds: 15 * 60 },
  ];
}

export interface StartBossOptions {
  url: string;
  settings: QueueSettings;
  logger: Logger;
  instanceName: string;
  poolMax?: number;
}

export async function startBoss(options: StartBossOptions): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: options.url,
    schema: BOSS_SCHEMA,
    max: options.poolMax ?? BOSS_POOL_MAX,
    useListenNotify: true,
    // Its own name, so the server's connections can be told apart (observability/sample.ts).
    application_name: `docpipe-${options.instanceName}-queue`,
    instanceName: options.instanceName,
    superviseIntervalSeconds: options.settings.superviseIntervalSeconds,
    monitorIntervalSeconds: Math.max(options.settings.superviseIntervalSeconds, 10),
  });
  // Background loops report here instead of throwing into the void.
  boss.on('error', (err) => options.logger.error({ err }, 'pg-boss error'));
  boss.on('warning', (warning) => options.logger.warn({ warning }, 'pg-boss warning'));
  await boss.start();
  for (const queue of queueDefinitions(options.settings)) {
    const existing = await boss.getQueue(queue.name);
    if (existing) {
      // A queue's policy is fixed at creation; pg-boss refuses it in an update, even unchanged.
      const { policy: _policy, ...settings } = queue;
      await boss.updateQueue(queue.name, settings);
    } else {
      await boss.createQueue(queue.name, queue);
    }
  }
  return boss;
}

/** The JobSender over a started pg-boss: jobs go in with the caller's transaction. */
export function bossJobSender(boss: PgBoss, options: { prepare?: boolean } = {}): JobSender {
  return {
    async send(tx, jobs: readonly JobRequest[]) {
      const byQueue = new Map<QueueName, JobRequest[]>();
      for (const job of jobs) byQueue.set(job.queue, [...(byQueue.get(job.queue) ?? []), job]);
      for (const [queue, list] of byQueue) {
        await boss.insert(
          queue,
          list.map((j) => ({
            data: j.data as object,
            ...(j.id ? { id: j.id } : {}),
            // Seconds, counted from the database clock (pg-boss casts it to an interval).
            ...(j.startAfterSeconds ? { startAfter: j.startAfterSeconds } : {}),
          })),
          { db: bossDb(tx as Db, options) },
        );
      }
    },
  };
}
