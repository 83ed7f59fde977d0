// The event store: append with an expected version, read a stream, read the log by position.
// Appends take a transaction from the caller, so the inline projection, side tables and the
// jobs an event triggers commit (or roll back) together with it.
import type { Db } from '../db/client.ts';
import { isUniqueViolation, jsonRows } from '../db/client.ts';
import { EVENT_VERSIONS, isEventType, type EventMetadata, type NewEvent, type RecordedEvent } from './catalog.ts';

/** Optimistic concurrency failure: the stream moved on since the caller read it. HTTP 409. */
export class ConcurrencyError extends Error {
  readonly code = 'CONCURRENCY_CONFLICT';
  constructor(readonly streamId: string, readonly expectedVersion: number) {
    super(`stream ${streamId} is no longer at version ${expectedVersion}`);
    this.name = 'ConcurrencyError';
  }
}

export class UnknownEventTypeError extends Error {
  readonly code = 'UNKNOWN_EVENT_TYPE';
  constructor(readonly type: string) {
    super(`unknown event type ${type}`);
    this.name = 'UnknownEventTypeError';
  }
}

interface EventRow {
  event_id: string;
  global_position: number;
  stream_id: string;
  stream_version: number;
  type: string;
  type_version: number;
  data: unknown;
  metadata: unknown;
  created_at: Date;
}

function toRecorded(row: EventRow): RecordedEvent {
  if (!isEventType(row.type)) throw new UnknownEventTypeError(row.type);
  return {
    eventId: row.event_id,
    globalPosition: Number(row.global_position),
    streamId: row.stream_id,
    streamVersion: row.stream_version,
    type: row.type,
    typeVersion: row.type_version,
    data: row.data,
    metadata: row.metadata as EventMetadata,
    createdAt: row.created_at,
  } as RecordedEvent;
}

const COLUMNS = 'event_id, global_position, stream_id, stream_version, type, type_version, data, metadata, created_at';

/**
 * Appends `events` to `streamId`, which must currently be at `expectedVersion` (0: a new
 * stream), for a caller that has not read the stream in this transaction. A concurrent append
 * at the same version makes exactly one of them fail with ConcurrencyError, via the
 * (stream_id, stream_version) unique constraint. (The command handler reads first and uses
 * appendToStreams directly.)
 */
export async function appendToStream(
  tx: Db,
  streamId: string,
  expectedVersion: number,
  events: readonly NewEvent[],
  metadata: EventMetadata,
): Promise<RecordedEvent[]> {
  if (events.length === 0) return [];
  // A caller whose expected version is ahead of the stream is refused before anything is
  // written (rows are never deleted, so the check cannot go stale).
  if (expectedVersion > 0) {
    const [prev] = await tx`select 1 from docpipe.events where stream_id = ${streamId} and stream_version = ${expectedVersion}`;
    if (!prev) throw new ConcurrencyError(streamId, expectedVersion);
  }
  const [recorded] = await appendToStreams(tx, [{ streamId, expectedVersion, events, metadata }]);
  return recorded!;
}

export interface StreamAppend {
  streamId: string;
  /** The version the caller read in this transaction (appends share the stream's read). */
  expectedVersion: number;
  events: readonly NewEvent[];
  metadata: EventMetadata;
}

/**
 * Appends to several streams in one statement, for callers that read those streams in this
 * transaction (executeBatchIn). Two appends to one stream must come in order, the second
 * expecting the first's last version. A conflict with any other writer fails the whole
 * statement with ConcurrencyError (the unique constraint), and the caller's transaction with it.
 * Returns the recorded events of each append, in the order given.
 */
export async function appendToStreams(tx: Db, appends: readonly StreamAppend[]): Promise<RecordedEvent[][]> {
  const rows = appends.flatMap((a) =>
    a.events.map((event, i) => ({
      stream_id: a.streamId,
      stream_version: a.expectedVersion + i + 1,
      type: event.type,
      type_version: EVENT_VERSIONS[event.type],
      data: event.data,
      metadata: a.metadata,
    })),
  );
  if (rows.length === 0) return appends.map(() => []);
  let inserted: EventRow[];
  try {
    // One JSON parameter, not a VALUES row per event: the statement's text is the same whatever
    // the count, so each connection prepares it once. (A new text costs a describe round trip
    // before it runs, and a plan: per batch size, on every connection.) Rows take their
    // positions in the array's order.
    inserted = await tx<EventRow[]>`
      insert into docpipe.events (stream_id, stream_version, type, type_version, data, metadata)
      select r.stream_id, r.stream_version, r.type, r.type_version, r.data, r.metadata
      from jsonb_to_recordset(${jsonRows(tx, rows)}::jsonb)
        as r(stream_id uuid, stream_version integer, type text, type_version smallint, data jsonb, metadata jsonb)
      returning ${tx.unsafe(COLUMNS)}`;
  } catch (err) {
    if (isUniqueViolation(err, 'events_stream_version_unique')) {
      const first = appends.find((a) => a.events.length > 0)!;
      throw new ConcurrencyError(first.streamId, first.expectedVersion);
    }
    throw err;
  }
  // RETURNING's order is not promised: match rows back by (stream, version).
  const byKey = new Map(inserted.map((row) => [`${row.stream_id}:${row.stream_version}`, toRecorded(row)]));
  return appends.map((a) => a.events.map((_, i) => byKey.get(`${a.streamId}:${a.expectedVersion + i + 1}`)!));
}

/** The events of several streams, each in version order. */
export async function readStreams(db: Db, streamIds: readonly string[]): Promise<Map<string, RecordedEvent[]>> {
  const streams = new Map<string, RecordedEvent[]>(streamIds.map((id) => [id, []]));
  if (streamIds.length === 0) return streams;
  const rows = await db<EventRow[]>`
    select ${db.unsafe(COLUMNS)} from docpipe.events
    where stream_id = any(${streamIds as string[]}::uuid[]) order by stream_id, stream_version`;
  for (const row of rows) streams.get(row.stream_id)?.push(toRecorded(row));
  return streams;
}

/**
 * The events of several streams after a version each (0: the whole stream), each in version
 * order: for a reader that holds a stream's state up to that version already.
 */
export async function readStreamsAfter(db: Db, after: ReadonlyMap<string, number>): Promise<Map<string, RecordedEvent[]>> {
  const streams = new Map<string, RecordedEvent[]>([...after.keys()].map((id) => [id, []]));
  if (after.size === 0) return streams;
  const rows = await db<EventRow[]>`
    select ${db.unsafe(COLUMNS.split(', ').map((c) => `e.${c}`).join(', '))}
    from unnest(${[...after.keys()] as string[]}::uuid[], ${[...after.values()] as number[]}::int[]) as k(stream_id, after_version)
    join docpipe.events e on e.stream_id = k.stream_id and e.stream_version > k.after_version
    order by e.stream_id, e.stream_version`;
  for (const row of rows) streams.get(row.stream_id)?.push(toRecorded(row));
  return streams;
}

export async function readStream(db: Db, streamId: string): Promise<RecordedEvent[]> {
  const rows = await db<EventRow[]>`
    select ${db.unsafe(COLUMNS)} from docpipe.events
    where stream_id = ${streamId} order by stream_version`;
  return rows.map(toRecorded);
}

/**
 * Reads the log after `after` (a global position), oldest first. Only rows written by
 * transactions older than every transaction still in flight are returned, so a reader that
 * stores its last position never skips a row that commits late with a smaller position.
 */
export async function readAll(
  db: Db,
  options: { after?: number; limit?: number; /** Skip the xmin rule: only for a reader that holds a lock no appender can pass. */ allCommitted?: boolean } = {},
): Promise<RecordedEvent[]> {
  const visible = options.allCommitted ? db`true` : db`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`;
  const rows = await db<EventRow[]>`
    select ${db.unsafe(COLUMNS)} from docpipe.events
    where global_position > ${options.after ?? 0} and ${visible}
    order by global_position
    limit ${options.limit ?? 1000}`;
  return rows.map(toRecorded);
}
