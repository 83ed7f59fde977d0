// The usage_daily read model (migration 006): per owner and UTC day, the documents uploaded,
// their bytes, the pages parsed and the tokens chunked for the embedder. Written inline by the
// command handler (executeBatchIn), in the append's transaction, and rebuilt from the log by
// `docpipe rebuild-projections`; both go through `foldUsage`, so the two cannot disagree.
// Read by GET /v1/usage and `docpipe usage` (queryUsage, queryUsageByOwner).
//
// What counts: DocumentUploaded (documents +1, bytes + size), ParseSucceeded (pages), and
// DocumentChunked (tokenCount: what goes to the embedder). A reprocessed document is parsed and
// embedded again, and counted again; a deleted one keeps what it used. The day is the event's
// created_at (the database's clock) as a UTC date.
import { jsonRows, type Db, type Sql } from '../db/client.ts';
import type { RecordedEvent } from '../events/catalog.ts';
import { readAll } from '../events/store.ts';

export interface UsageCounts {
  documents: number;
  bytes: number;
  pages: number;
  tokens: number;
}

/** What one owner's usage on one day grows by. */
export interface UsageDelta extends UsageCounts {
  ownerId: string;
  /** YYYY-MM-DD, UTC. */
  day: string;
}

/** One day of usage (of one owner, or of all owners together). */
export interface UsageDayRow extends UsageCounts {
  /** YYYY-MM-DD, UTC. */
  day: string;
}

export interface UsageReport {
  days: UsageDayRow[];
  totals: UsageCounts;
}

export interface OwnerUsage extends UsageCounts {
  ownerId: string;
}

export const USAGE_FIELDS = ['documents', 'bytes', 'pages', 'tokens'] as const satisfies readonly (keyof UsageCounts)[];

export const zeroUsage = (): UsageCounts => ({ documents: 0, bytes: 0, pages: 0, tokens: 0 });

/** The UTC date of an instant, YYYY-MM-DD. */
export function usageDay(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/** What an event adds to its owner's usage, or null when it adds nothing. */
function contribution(event: RecordedEvent): Partial<UsageCounts> | null {
  switch (event.type) {
    case 'DocumentUploaded':
      return { documents: 1, bytes: event.data.size };
    case 'ParseSucceeded':
      return event.data.pages > 0 ? { pages: event.data.pages } : null;
    case 'DocumentChunked':
      return event.data.tokenCount > 0 ? { tokens: event.data.tokenCount } : null;
    default:
      return null;
  }
}

/**
 * The pure fold: committed `events` (in append order) to per-(owner, day) deltas, one per pair,
 * sorted by owner and day (the order the writer locks rows in, so two writers cannot deadlock).
 * `owners` gives each document's owner: the status rows (document-status.ts), before or after
 * the events. A DocumentUploaded names its owner itself; an event of a document whose owner is
 * known from neither (a stream whose upload was never seen) counts for nobody, as the status
 * projection shows nothing for it.
 */
export function foldUsage(events: readonly RecordedEvent[], owners: ReadonlyMap<string, { owner_id: string }>): UsageDelta[] {
  const uploaded = new Map<string, string>();
  const deltas = new Map<string, UsageDelta>();
  for (const event of events) {
    if (event.type === 'DocumentUploaded') uploaded.set(event.streamId, event.data.ownerId);
    const add = contribution(event);
    if (!add) continue;
    const ownerId = uploaded.get(event.streamId) ?? owners.get(event.streamId)?.owner_id;
    if (ownerId === undefined) continue;
    const day = usageDay(event.createdAt);
    const key = `${ownerId}\u0000${day}`;
    let delta = deltas.get(key);
    if (!delta) deltas.set(key, (delta = { ownerId, day, ...zeroUsage() }));
    for (const field of USAGE_FIELDS) delta[field] += add[field] ?? 0;
  }
  return [...deltas.values()].sort((a, b) => (a.ownerId < b.ownerId ? -1 : a.ownerId > b.ownerId ? 1 : a.day < b.day ? -1 : a.day > b.day ? 1 : 0));
}

/** Adds `more` into `into` (keyed by owner and day); for folding the log batch by batch. */
function mergeDeltas(into: Map<string, UsageDelta>, more: readonly UsageDelta[]): void {
  for (const d of more) {
    const key = `${d.ownerId}\u0000${d.day}`;
    const held = into.get(key);
    if (!held) into.set(key, { ...d });
    else for (const field of USAGE_FIELDS) held[field] += d[field];
  }
}

/**
 * Records `deltas` (from foldUsage: one per owner and day) in one statement; none, no statement.
 * They go to usage_deltas as new rows: an insert takes no row lock another writer waits for, so
 * one owner's uploads, parses and chunkings commit side by side. rollupUsage folds them into
 * usage_daily later; readers add both tables up.
 */
export async function writeUsage(tx: Db, deltas: readonly UsageDelta[]): Promise<void> {
  if (deltas.length === 0) return;
  const rows = deltas.map((d) => ({ owner_id: d.ownerId, day: d.day, documents: d.documents, bytes: d.bytes, pages: d.pages, tokens: d.tokens }));
  // One JSON parameter: the same statement text whatever the count (prepared once per connection).
  await tx`
    insert into docpipe.usage_deltas (owner_id, day, documents, bytes, pages, tokens)
    select owner_id, day, documents, bytes, pages, tokens from jsonb_populate_recordset(null::docpipe.usage_deltas, ${jsonRows(tx, rows)}::jsonb)`;
}

/** Adds `deltas` into usage_daily's rows (the rebuild, and the roll-up). */
async function addToDaily(tx: Db, deltas: readonly UsageDelta[]): Promise<void> {
  if (deltas.length === 0) return;
  const rows = deltas.map((d) => ({ owner_id: d.ownerId, day: d.day, documents: d.documents, bytes: d.bytes, pages: d.pages, tokens: d.tokens }));
  await tx`
    insert into docpipe.usage_daily ${tx(rows, 'owner_id', 'day', 'documents', 'bytes', 'pages', 'tokens')}
    on conflict (owner_id, day) do update set
      documents = usage_daily.documents + excluded.documents,
      bytes = usage_daily.bytes + excluded.bytes,
      pages = usage_daily.pages + excluded.pages,
      tokens = usage_daily.tokens + excluded.tokens`;
}

/**
 * Folds usage_deltas into usage_daily, a batch per transaction: each batch's rows are deleted
 * and added to their days in one statement, so a row counts in exactly one of the two tables at
 * any moment. Rows a transaction has not committed yet are not seen, and stay for the next run.
 * Run by the maintenance job (one at a time across workers). Returns the delta rows folded.
 */
export async function rollupUsage(sql: Sql, options: { batchSize?: number } = {}): Promise<number> {
  const batchSize = options.batchSize ?? 10_000;
  let total = 0;
  for (;;) {
    const [row] = await sql<{ moved: bigint }[]>`
      with moved as (
        delete from docpipe.usage_deltas
         where ctid = any (array(select ctid from docpipe.usage_deltas limit ${batchSize}))
        returning owner_id, day, documents, bytes, pages, tokens
      ), added as (
        insert into docpipe.usage_daily (owner_id, day, documents, bytes, pages, tokens)
        select owner_id, day, sum(documents), sum(bytes), sum(pages), sum(tokens) from moved group by owner_id, day
        on conflict (owner_id, day) do update set
          documents = usage_daily.documents + excluded.documents,
          bytes = usage_daily.bytes + excluded.bytes,
          pages = usage_daily.pages + excluded.pages,
          tokens = usage_daily.tokens + excluded.tokens
      )
      select count(*) as moved from moved`;
    const moved = Number(row?.moved ?? 0);
    total += moved;
    if (moved < batchSize) return total;
  }
}

/**
 * Rebuild: replays the whole log into an emptied usage_daily, inside `tx` (the caller's
 * transaction, that of rebuild-projections). Appenders that would add usage wait for the commit.
 */
export async function rebuildUsage(tx: Db, options: { batchSize?: number } = {}): Promise<{ usageRows: number }> {
  await tx`lock table docpipe.usage_daily, docpipe.usage_deltas in access exclusive mode`;
  await tx`truncate docpipe.usage_daily, docpipe.usage_deltas`;
  const owners = new Map<string, { owner_id: string }>();
  const totals = new Map<string, UsageDelta>();
  const batchSize = options.batchSize ?? 5000;
  let after = 0;
  for (;;) {
    // As in rebuildDocumentStatus: the caller holds the locks no appender passes, so every
    // committed event is read.
    const batch = await readAll(tx, { after, limit: batchSize, allCommitted: true });
    if (batch.length === 0) break;
    mergeDeltas(totals, foldUsage(batch, owners));
    for (const event of batch) if (event.type === 'DocumentUploaded') owners.set(event.streamId, { owner_id: event.data.ownerId });
    after = batch.at(-1)!.globalPosition;
  }
  const all = [...totals.values()];
  for (let i = 0; i < all.length; i += 1000) await addToDaily(tx, all.slice(i, i + 1000));
  return { usageRows: all.length };
}

/** The rows of both tables (usage_daily, and the deltas not yet folded into it) in a range of days. */
function usageRows(db: Db, query: { ownerId: string | null; from: string; to: string }) {
  const where = () => db`day between ${query.from}::date and ${query.to}::date and ${query.ownerId === null ? db`true` : db`owner_id = ${query.ownerId}`}`;
  return db`(
    select owner_id, day, documents, bytes, pages, tokens from docpipe.usage_daily where ${where()}
    union all
    select owner_id, day, documents, bytes, pages, tokens from docpipe.usage_deltas where ${where()})`;
}

type CountsRow = { documents: bigint; bytes: bigint; pages: bigint; tokens: bigint };
const counts = (r: CountsRow): UsageCounts => ({ documents: Number(r.documents), bytes: Number(r.bytes), pages: Number(r.pages), tokens: Number(r.tokens) });

/** The usage of one owner (`ownerId`) or of all owners together (null), day by day from `from` to `to` (YYYY-MM-DD, inclusive): the days with any usage, and the totals. */
export async function queryUsage(db: Db, query: { ownerId: string | null; from: string; to: string }): Promise<UsageReport> {
  const rows = await db<(CountsRow & { day: string })[]>`
    select to_char(day, 'YYYY-MM-DD') as day,
           sum(documents)::bigint as documents, sum(bytes)::bigint as bytes, sum(pages)::bigint as pages, sum(tokens)::bigint as tokens
    from ${usageRows(db, query)} u
    group by day
    order by day`;
  const days = rows.map((r) => ({ day: r.day, ...counts(r) }));
  const totals = zeroUsage();
  for (const d of days) for (const field of USAGE_FIELDS) totals[field] += d[field];
  return { days, totals };
}

/**
 * Per owner totals from `from` to `to` (inclusive), biggest first: by estimated cost (pages ×
 * `pageDollars` + tokens × `tokenDollars`), then tokens, pages, bytes and documents. At most
 * `limit` owners; `owners` is how many had usage in the range.
 */
export async function queryUsageByOwner(
  db: Db,
  query: { from: string; to: string; ownerId?: string | null; limit: number; pageDollars?: number; tokenDollars?: number },
): Promise<{ owners: OwnerUsage[]; ownerCount: number }> {
  const rows = await db<(CountsRow & { owner_id: string; owner_count: bigint })[]>`
    select owner_id,
           sum(documents)::bigint as documents, sum(bytes)::bigint as bytes, sum(pages)::bigint as pages, sum(tokens)::bigint as tokens,
           count(*) over () as owner_count
    from ${usageRows(db, { from: query.from, to: query.to, ownerId: query.ownerId ?? null })} u
    group by owner_id
    order by sum(pages) * ${query.pageDollars ?? 0}::float8 + sum(tokens) * ${query.tokenDollars ?? 0}::float8 desc,
             sum(tokens) desc, sum(pages) desc, sum(bytes) desc, sum(documents) desc, owner_id
    limit ${query.limit}`;
  return { owners: rows.map((r) => ({ ownerId: r.owner_id, ...counts(r) })), ownerCount: rows.length > 0 ? Number(rows[0]!.owner_count) : 0 };
}
