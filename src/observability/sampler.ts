// The deployment-wide gauges (docs/METRICS.md, "Sampled from Postgres") come from one process
// at a time: every service process runs this loop, and the one holding the lease in
// docpipe.metrics_lease samples the database and exports them; the others export none. N
// machines would otherwise report N copies of the same number (and N times the queries).
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Sql } from '../db/client.ts';
import type { Logger } from './logger.ts';
import { dbConnections, dbMaxConnections, documentsByStatus, queueJobs, queueOldestWaiting, sampleTimestamp, samplerLeader } from './metrics.ts';
import { sampleDatabase, type DatabaseSample } from './sample.ts';

/** A lease not renewed for this many intervals passes to whoever asks next. */
const LEASE_INTERVALS = 3;

export interface Sampler {
  /** Whether this process held the lease at its last attempt. */
  readonly leader: boolean;
  /** One attempt now (tests, and the loop). */
  tick(): Promise<void>;
  /** Stops the loop and gives the lease up, so another process takes over at its next tick. */
  stop(): Promise<void>;
}

function clearSampled(): void {
  queueJobs.reset();
  queueOldestWaiting.reset();
  documentsByStatus.reset();
  dbConnections.reset();
  dbMaxConnections.reset();
  sampleTimestamp.reset();
}

export function exportSample(sample: DatabaseSample): void {
  clearSampled();
  for (const q of sample.queues) {
    queueJobs.set({ queue: q.queue, state: 'waiting' }, q.waiting);
    queueJobs.set({ queue: q.queue, state: 'scheduled' }, q.scheduled);
    queueJobs.set({ queue: q.queue, state: 'active' }, q.active);
    queueOldestWaiting.set({ queue: q.queue }, q.oldestWaitingSeconds);
  }
  for (const [status, count] of Object.entries(sample.documents)) documentsByStatus.set({ status: status as keyof typeof sample.documents }, count);
  for (const c of sample.connections) dbConnections.set({ application: c.application, state: c.state }, c.count);
  dbMaxConnections.set(sample.maxConnections);
  sampleTimestamp.set(sample.at.getTime() / 1000);
}

export function startSampler(options: { sql: Sql; logger: Logger; intervalSeconds: number; autoStart?: boolean }): Sampler {
  const holder = `${process.env.FLY_MACHINE_ID ?? os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const log = options.logger.child({ component: 'metrics-sampler' });
  const leaseSeconds = options.intervalSeconds * LEASE_INTERVALS;
  let leader = false;
  let stopped = false;
  let running: Promise<void> | null = null;
  samplerLeader.set(0);

  async function attempt(): Promise<void> {
    const [row] = await options.sql<{ holder: string }[]>`
      insert into docpipe.metrics_lease as l (id, holder, expires_at)
      values (true, ${holder}, now() + make_interval(secs => ${leaseSeconds}))
      on conflict (id) do update set holder = excluded.holder, expires_at = excluded.expires_at
       where l.holder = excluded.holder or l.expires_at < now()
      returning l.holder`;
    const won = row?.holder === holder;
    if (won !== leader) log.info({ holder }, won ? 'this process now samples the database for the metrics' : 'another process samples the database for the metrics');
    leader = won;
    samplerLeader.set(won ? 1 : 0);
    if (!won) {
      clearSampled();
      return;
    }
    exportSample(await sampleDatabase(options.sql));
  }

  const tick = () =>
    (running ??= attempt()
      .catch((err: unknown) => {
        // Stale numbers are worse than none: the gauges go, and the alert on the sample's age fires.
        clearSampled();
        log.warn({ err }, 'sampling the database for the metrics failed');
      })
      .finally(() => (running = null)));

  const timer = options.autoStart === false ? null : setInterval(() => void (stopped || tick()), options.intervalSeconds * 1000);
  timer?.unref();
  if (options.autoStart !== false) void tick();

  return {
    get leader() {
      return leader;
    },
    tick,
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await running;
      clearSampled();
      samplerLeader.set(0);
      if (leader) {
        leader = false;
        await options.sql`delete from docpipe.metrics_lease where holder = ${holder}`.catch(() => {});
      }
    },
  };
}
