// What the database says about the deployment as a whole: queue depths and ages (pg-boss's job
// table), documents by status, the server's connections. Read by the one process that holds the
// metrics lease (observability/sampler.ts) and by `docpipe status`.
import type { Db } from '../db/client.ts';
import { BOSS_SCHEMA } from '../queue/boss.ts';
import { QUEUES, type QueueName } from '../queue/jobs.ts';

export const DOCUMENT_STATUSES = ['uploaded', 'parsing', 'parsed', 'embedding', 'ready', 'failed', 'deleted'] as const;
export type DocumentStatus = (typeof DOCUMENT_STATUSES)[number];

export const CONNECTION_APPLICATIONS = ['api', 'worker', 'webhook', 'all', 'queue', 'cli', 'other'] as const;
export const CONNECTION_STATES = ['active', 'idle', 'idle_in_transaction', 'other'] as const;

export interface QueueSample {
  queue: QueueName;
  /** Jobs that may run now (created or retry, start-after reached) and have not started. */
  waiting: number;
  /** Jobs waiting for their start-after (poll checks, retries in backoff). */
  scheduled: number;
  active: number;
  /** Seconds since the oldest waiting job became runnable; 0 when none waits. */
  oldestWaitingSeconds: number;
}

export interface ConnectionSample {
  application: (typeof CONNECTION_APPLICATIONS)[number];
  state: (typeof CONNECTION_STATES)[number];
  count: number;
}

export interface DatabaseSample {
  /** The database's clock at the sample. */
  at: Date;
  queues: QueueSample[];
  documents: Record<DocumentStatus, number>;
  connections: ConnectionSample[];
  maxConnections: number;
}

/**
 * The application a connection's application_name belongs to: docpipe-<service> for a service's
 * pool, docpipe-<service>-queue for its pg-boss pool (queue/boss.ts), docpipe-cli and
 * docpipe-doctor for operators' commands.
 */
export function connectionApplication(applicationName: string): ConnectionSample['application'] {
  const name = applicationName.toLowerCase();
  if (!name.startsWith('docpipe-')) return 'other';
  if (name.endsWith('-queue')) return 'queue';
  const service = name.slice('docpipe-'.length);
  for (const app of ['api', 'worker', 'webhook', 'all'] as const) if (service === app) return app;
  return service === 'cli' || service === 'doctor' ? 'cli' : 'other';
}

function connectionState(state: string | null): ConnectionSample['state'] {
  if (state === 'active' || state === 'idle') return state;
  if (state === 'idle in transaction' || state === 'idle in transaction (aborted)') return 'idle_in_transaction';
  return 'other';
}

/** Three statements, run together; each reads an index or a small catalogue. */
export async function sampleDatabase(db: Db): Promise<DatabaseSample> {
  const queueNames = Object.values(QUEUES);
  const [queueRows, statusRows, connectionRows] = await Promise.all([
    db.unsafe<{ name: string; waiting: string; scheduled: string; active: string; oldest: number | null; at: Date }[]>(
      `select name,
              count(*) filter (where state < 'active' and start_after <= now()) as waiting,
              count(*) filter (where state < 'active' and start_after > now()) as scheduled,
              count(*) filter (where state = 'active') as active,
              extract(epoch from now() - min(start_after) filter (where state < 'active' and start_after <= now()))::float8 as oldest,
              now() as at
         from ${BOSS_SCHEMA}.job
        where name = any($1) and state < 'completed'
        group by name`,
      [queueNames],
    ),
    db<{ status: string; count: string }[]>`select status, count(*) as count from docpipe.document_status group by status`,
    db<{ application_name: string; state: string | null; count: string; max: number; at: Date }[]>`
      select a.application_name, a.state, count(*) as count, current_setting('max_connections')::int as max, now() as at
        from pg_stat_activity a
       where a.datname = current_database() and a.backend_type = 'client backend'
       group by a.application_name, a.state
      union all
      select '', null, 0, current_setting('max_connections')::int, now()`,
  ]);
  const byQueue = new Map(queueRows.map((r) => [r.name, r]));
  const queues = queueNames.map((queue): QueueSample => {
    const r = byQueue.get(queue);
    return {
      queue,
      waiting: Number(r?.waiting ?? 0),
      scheduled: Number(r?.scheduled ?? 0),
      active: Number(r?.active ?? 0),
      oldestWaitingSeconds: Math.max(0, Math.round((r?.oldest ?? 0) * 1000) / 1000),
    };
  });
  const documents = Object.fromEntries(DOCUMENT_STATUSES.map((s) => [s, 0])) as Record<DocumentStatus, number>;
  for (const r of statusRows) if ((DOCUMENT_STATUSES as readonly string[]).includes(r.status)) documents[r.status as DocumentStatus] = Number(r.count);
  const connections = new Map<string, ConnectionSample>();
  for (const r of connectionRows) {
    if (r.application_name === '' && r.state === null && Number(r.count) === 0) continue;
    const application = connectionApplication(r.application_name);
    const state = connectionState(r.state);
    const key = `${application}/${state}`;
    const current = connections.get(key) ?? { application, state, count: 0 };
    current.count += Number(r.count);
    connections.set(key, current);
  }
  return {
    at: connectionRows[0]!.at,
    queues,
    documents,
    connections: [...connections.values()],
    maxConnections: connectionRows[0]!.max,
  };
}
