// The security audit log (docpipe.audit_log, migration 004): who did what to what, from where,
// and how it ended. Rows that an attacker could multiply (denied authentication, refused rate
// limits, forged webhooks) are aggregated in memory per actor, action, outcome, address and
// minute, and written once a minute with their count: a flood costs one row a minute per
// address, not one per request. Everything else is one row per action. Writing never fails the
// request it describes: a failed write is logged.
import { parseArgs } from 'node:util';
import type { Sql } from '../db/client.ts';
import { storableText } from '../db/text.ts';
import type { Logger } from '../observability/logger.ts';

export interface AuditEntry {
  /** user:<sub>, address:<ip>, service:<name>. */
  actor: string;
  role?: string | null;
  action: string;
  target?: string | null;
  outcome: 'success' | 'denied' | 'refused' | 'flagged' | 'blocked' | 'failed';
  clientAddress?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
  details?: Record<string, unknown>;
}

export interface Audit {
  /** One row, written now (awaiting it is optional: it never rejects). */
  record(entry: AuditEntry): Promise<void>;
  /** Counted into the current minute's row for the same actor, action, outcome and address. */
  aggregate(entry: AuditEntry): void;
  /** Writes the aggregated rows now. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface AuditRow {
  id: string;
  at: Date;
  actor: string;
  role: string | null;
  action: string;
  target: string | null;
  outcome: string;
  client_address: string | null;
  user_agent: string | null;
  request_id: string | null;
  occurrences: number;
  details: Record<string, unknown>;
}

/** Distinct aggregation keys held between flushes; past it, new keys fold into one row per action. */
const MAX_KEYS = 1_000;
const clip = (value: string | null | undefined, max: number) => (value == null ? null : storableText(value).slice(0, max));

export function createAudit(options: { sql: Sql; logger: Logger; flushMs?: number }): Audit {
  const { sql, logger } = options;
  let pending = new Map<string, { entry: AuditEntry; occurrences: number; first: string }>();

  const insert = async (rows: { entry: AuditEntry; occurrences: number; details?: Record<string, unknown> }[]) => {
    if (rows.length === 0) return;
    const values = rows.map(({ entry, occurrences, details }) => ({
      actor: clip(entry.actor, 300)!,
      role: clip(entry.role, 100),
      action: clip(entry.action, 100)!,
      target: clip(entry.target, 300),
      outcome: entry.outcome,
      client_address: clip(entry.clientAddress, 100),
      user_agent: clip(entry.userAgent, 300),
      request_id: clip(entry.requestId, 128),
      occurrences,
      details: sql.json((details ?? entry.details ?? {}) as never),
    }));
    try {
      await sql`insert into docpipe.audit_log ${sql(values, 'actor', 'role', 'action', 'target', 'outcome', 'client_address', 'user_agent', 'request_id', 'occurrences', 'details')}`;
    } catch (err) {
      logger.error({ err, rows: rows.length }, 'audit log write failed');
    }
  };

  const flush = async () => {
    const batch = pending;
    pending = new Map();
    await insert([...batch.values()].map(({ entry, occurrences, first }) => ({ entry, occurrences, details: { ...entry.details, first, last: new Date().toISOString() } })));
  };
  const timer = setInterval(() => void flush(), options.flushMs ?? 60_000);
  timer.unref();

  return {
    record: (entry) => insert([{ entry, occurrences: 1 }]),
    aggregate(entry) {
      let key = [entry.actor, entry.action, entry.outcome, entry.clientAddress ?? ''].join('\u0000');
      if (!pending.has(key) && pending.size >= MAX_KEYS) {
        key = `overflow\u0000${entry.action}`;
        entry = { ...entry, actor: 'many', clientAddress: null, details: { overflow: true } };
      }
      const held = pending.get(key);
      if (held) held.occurrences++;
      else pending.set(key, { entry: { ...entry, requestId: null, userAgent: clip(entry.userAgent, 300) }, occurrences: 1, first: new Date().toISOString() });
    },
    flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}

export interface AuditQuery {
  actor?: string;
  action?: string;
  outcome?: string;
  target?: string;
  since?: Date;
  until?: Date;
  limit?: number;
  /** Rows with a smaller id (the previous page's last id). */
  before?: string;
}

/** The newest rows first, filtered; for `docpipe audit` and GET /v1/admin/audit. */
export async function queryAudit(sql: Sql, query: AuditQuery): Promise<AuditRow[]> {
  const limit = Math.min(Math.max(query.limit ?? 100, 1), 1000);
  return sql<AuditRow[]>`
    select id::text, at, actor, role, action, target, outcome, client_address, user_agent, request_id, occurrences, details
    from docpipe.audit_log
    where true
      ${query.actor ? sql`and actor = ${query.actor}` : sql``}
      ${query.action ? sql`and action = ${query.action}` : sql``}
      ${query.outcome ? sql`and outcome = ${query.outcome}` : sql``}
      ${query.target ? sql`and target = ${query.target}` : sql``}
      ${query.since ? sql`and at >= ${query.since}` : sql``}
      ${query.until ? sql`and at < ${query.until}` : sql``}
      ${query.before ? sql`and id < ${query.before}::bigint` : sql``}
    order by id desc
    limit ${limit}`;
}

/** Retention: removes rows older than `days`, in batches (the trigger allows only this). */
export async function pruneAudit(sql: Sql, days: number): Promise<number> {
  let removed = 0;
  for (;;) {
    const count = await sql.begin(async (tx) => {
      const [row] = await tx<{ cutoff: string }[]>`select (now() - make_interval(days => ${days}))::text as cutoff`;
      const cutoff = row!.cutoff;
      await tx`select set_config('docpipe.audit_prune_before', ${cutoff}, true)`;
      const deleted = await tx`delete from docpipe.audit_log where id in (select id from docpipe.audit_log where at < ${cutoff}::timestamptz order by id limit 5000)`;
      return deleted.count;
    });
    removed += count;
    if (count < 5000) return removed;
  }
}

/** `docpipe audit [--actor A] [--action X] [--outcome O] [--target T] [--since 1h|ISO] [--limit N] [--json]`. */
export function parseAuditArgs(args: string[]): { query: AuditQuery; json: boolean } {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      actor: { type: 'string' },
      action: { type: 'string' },
      outcome: { type: 'string' },
      target: { type: 'string' },
      since: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  if (positionals.length > 0) throw new Error(`unexpected argument ${JSON.stringify(positionals[0])}`);
  let since: Date | undefined;
  if (values.since !== undefined) {
    const relative = /^([1-9][0-9]*)([mhd])$/.exec(values.since);
    since = relative ? new Date(Date.now() - Number(relative[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as 'm' | 'h' | 'd']) : new Date(values.since);
    if (Number.isNaN(since.getTime())) throw new Error(`--since ${JSON.stringify(values.since)}: expected 30m, 24h, 7d or an ISO time`);
  }
  const limit = values.limit === undefined ? 100 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new Error(`--limit ${JSON.stringify(values.limit)}: expected 1 to 1000`);
  return { query: { actor: values.actor, action: values.action, outcome: values.outcome, target: values.target, since, limit }, json: values.json === true };
}

/** One line per row, for a terminal. */
export function formatAuditRow(r: AuditRow): string {
  const parts = [r.at.toISOString(), r.outcome.padEnd(7), r.action, r.actor];
  if (r.target) parts.push(`target=${r.target}`);
  if (r.role) parts.push(`role=${r.role}`);
  if (r.client_address) parts.push(`from=${r.client_address}`);
  if (r.occurrences > 1) parts.push(`x${r.occurrences}`);
  if (r.request_id) parts.push(`request=${r.request_id}`);
  if (Object.keys(r.details).length) parts.push(JSON.stringify(r.details));
  return parts.join('  ');
}
