// `docpipe status`: the deployment at a glance, from the database alone, for an operator without
// Grafana: queue depths and ages (the same sample as the metrics, observability/sample.ts),
// documents by status, the last hour's failures by error code, today's provider usage with its
// estimated cost, and the server's connections. Read-only, a handful of cheap statements.
import type { Config } from '../config.ts';
import type { Db } from '../db/client.ts';
import { costSettings, estimateCostDollars, type CostEstimate } from '../documents/usage.ts';
import { sampleDatabase, type ConnectionSample, type DocumentStatus, type QueueSample } from '../observability/sample.ts';
import { bytes, thousands } from './format.ts';

export const STATUS_USAGE = `usage: docpipe status [--json]

The deployment at a glance, read from the database: jobs waiting, scheduled and running per
queue with the age of the oldest waiting job, documents by status, failures of the last hour by
error code, today's usage (UTC) with its estimated cost, and the database's connections.
  --json   one JSON object instead of the report
`;

export interface StatusArgs {
  json: boolean;
  help: boolean;
}

/** The command's flags. Throws with a message naming the bad argument (the CLI exits 2). */
export function parseStatusArgs(args: string[]): StatusArgs {
  const parsed: StatusArgs = { json: false, help: false };
  for (const arg of args) {
    if (arg === '--json') parsed.json = true;
    else if (arg === '--help' || arg === '-h') parsed.help = true;
    else if (arg.startsWith('-')) throw new Error(`unknown flag ${JSON.stringify(arg.slice(0, 40))}`);
    else throw new Error(`unexpected argument ${JSON.stringify(arg.slice(0, 40))}`);
  }
  return parsed;
}

export interface FailureCount {
  /** The document's error code; null for a failure recorded without one. */
  code: string | null;
  count: number;
}

export interface UsageToday {
  /** The UTC day (usage_daily's days are UTC), YYYY-MM-DD. */
  day: string;
  /** Owners with usage today. */
  owners: number;
  documents: number;
  bytes: number;
  pages: number;
  tokens: number;
  estimatedCost: CostEstimate;
}

export interface Status {
  /** The database's clock when the sample was taken (ISO 8601). */
  at: string;
  queues: QueueSample[];
  documents: Record<DocumentStatus, number>;
  /** Documents that failed in the last hour (by failed_at), per error code, most first. */
  failuresLastHour: FailureCount[];
  /** Null when docpipe.usage_daily or usage_deltas does not exist yet (a database not migrated to this version). */
  usageToday: UsageToday | null;
  connections: { total: number; max: number; byApplication: ConnectionSample[] };
}

const UNDEFINED_TABLE = '42P01';

export async function collectStatus(sql: Db, config: Pick<Config, 'parser' | 'embedder' | 'pricing'>): Promise<Status> {
  const [sample, failures, usage] = await Promise.all([
    sampleDatabase(sql),
    sql<{ code: string | null; count: bigint }[]>`
      select error_code as code, count(*) as count
        from docpipe.document_status
       where status = 'failed' and failed_at > now() - interval '1 hour'
       group by error_code
       order by count(*) desc, error_code nulls last`,
    // usage_daily's days are UTC dates (projections/usage.ts), whatever the session's time zone;
    // the command transactions' usage_deltas not yet folded into it count too.
    sql<{ day: string; owners: bigint; documents: bigint; bytes: bigint; pages: bigint; tokens: bigint }[]>`
      with today as (select (now() at time zone 'utc')::date as day),
      rows as (
        select owner_id, documents, bytes, pages, tokens from docpipe.usage_daily where day = (select day from today)
        union all
        select owner_id, documents, bytes, pages, tokens from docpipe.usage_deltas where day = (select day from today)
      )
      select to_char((select day from today), 'YYYY-MM-DD') as day,
             count(distinct owner_id) as owners,
             coalesce(sum(documents), 0)::bigint as documents, coalesce(sum(bytes), 0)::bigint as bytes,
             coalesce(sum(pages), 0)::bigint as pages, coalesce(sum(tokens), 0)::bigint as tokens
        from rows`.catch((err: { code?: string }) => {
      if (err?.code === UNDEFINED_TABLE) return null;
      throw err;
    }),
  ]);
  const row = usage?.[0];
  const counts = row ? { documents: Number(row.documents), bytes: Number(row.bytes), pages: Number(row.pages), tokens: Number(row.tokens) } : null;
  return {
    at: sample.at.toISOString(),
    queues: sample.queues,
    documents: sample.documents,
    failuresLastHour: failures.map((f) => ({ code: f.code, count: Number(f.count) })),
    usageToday: row && counts ? { day: row.day, owners: Number(row.owners), ...counts, estimatedCost: estimateCostDollars(counts, costSettings(config)) } : null,
    connections: {
      total: sample.connections.reduce((sum, c) => sum + c.count, 0),
      max: sample.maxConnections,
      byApplication: sample.connections,
    },
  };
}

/** 0 -> "-", 42 -> "42s", 125 -> "2m05s", 7300 -> "2h01m", 200000 -> "2d07h". */
export function formatAge(seconds: number): string {
  if (!(seconds > 0)) return '-';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  const two = (n: number) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${two(Math.floor((s % 86_400) / 3600))}h`;
}

/** Rows of cells as aligned columns: the first column left-aligned, the others right-aligned. */
function table(rows: string[][], indent = '  '): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => indent + r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
}

/** The report for a terminal: one section per subject, columns aligned. */
export function formatStatus(status: Status): string {
  const lines = [`docpipe status at ${status.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} (database clock)`, ''];

  lines.push('queues');
  lines.push(...table([
    ['queue', 'waiting', 'scheduled', 'active', 'oldest waiting'],
    ...status.queues.map((q) => [q.queue.replace(/^docpipe-/, ''), thousands(q.waiting), thousands(q.scheduled), thousands(q.active), formatAge(q.oldestWaitingSeconds)]),
  ]));
  lines.push('');

  lines.push('documents');
  const statuses = Object.entries(status.documents) as [DocumentStatus, number][];
  const live = statuses.reduce((sum, [name, n]) => (name === 'deleted' ? sum : sum + n), 0);
  lines.push(...table([...statuses.map(([name, n]) => [name, thousands(n)]), ['all but deleted', thousands(live)]]));
  lines.push('');

  const failed = status.failuresLastHour.reduce((sum, f) => sum + f.count, 0);
  lines.push(`failures in the last hour: ${thousands(failed)}`);
  if (failed > 0) lines.push(...table(status.failuresLastHour.map((f) => [f.code ?? '(no code)', thousands(f.count)])));
  lines.push('');

  const usage = status.usageToday;
  if (!usage) {
    lines.push('usage today: the usage tables are missing (run `docpipe migrate`)');
  } else {
    lines.push(`usage today (${usage.day}, UTC): ${thousands(usage.owners)} owner${usage.owners === 1 ? '' : 's'}`);
    const cost = usage.estimatedCost;
    lines.push(...table([
      ['documents', thousands(usage.documents)],
      ['bytes', bytes(usage.bytes)],
      ['pages parsed', thousands(usage.pages)],
      ['tokens embedded', thousands(usage.tokens)],
    ]));
    lines.push(`estimated cost today: $${cost.totalDollars.toFixed(4)} (parser $${cost.parserDollars.toFixed(4)}, embedder $${cost.embedderDollars.toFixed(4)})`);
  }
  lines.push('');

  const c = status.connections;
  const share = c.max > 0 ? ` (${Math.round((c.total / c.max) * 100)} %)` : '';
  lines.push(`database connections: ${thousands(c.total)} of max_connections ${thousands(c.max)}${share}`);
  const byApplication = new Map<string, number>();
  for (const a of c.byApplication) byApplication.set(a.application, (byApplication.get(a.application) ?? 0) + a.count);
  if (byApplication.size > 0) lines.push(...table([...byApplication].sort((a, b) => b[1] - a[1]).map(([name, n]) => [name, thousands(n)])));
  return lines.join('\n') + '\n';
}
