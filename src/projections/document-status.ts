// The document_status read model. `applyEvent` is the one pure fold used by both the inline
// path (in the append's transaction) and the rebuild, so the two cannot disagree.
import { jsonRows, type Db } from '../db/client.ts';
import type { RecordedEvent } from '../events/catalog.ts';
import { readAll } from '../events/store.ts';

export const STATUS_CHANNEL = 'docpipe_status';

export interface DocumentStatusRow {
  id: string;
  owner_id: string;
  file_name: string;
  media_type: string;
  size_bytes: number;
  sha256: string;
  storage_key: string;
  status: 'uploaded' | 'parsing' | 'parsed' | 'embedding' | 'ready' | 'failed' | 'deleted';
  stage: 'parse' | 'embed' | null;
  progress: number;
  run: number;
  parse_attempts: number;
  embed_attempts: number;
  error_code: string | null;
  error_message: string | null;
  parser_job_id: string | null;
  parse_warning_code: string | null;
  parse_warning_message: string | null;
  chunk_count: number;
  batches_total: number;
  batches_done: number;
  version: number;
  uploaded_at: Date;
  parse_started_at: Date | null;
  parsed_at: Date | null;
  embed_started_at: Date | null;
  ready_at: Date | null;
  failed_at: Date | null;
  deleted_at: Date | null;
  updated_at: Date;
}

export const STATUS_COLUMNS = [
  'id', 'owner_id', 'file_name', 'media_type', 'size_bytes', 'sha256', 'storage_key', 'status', 'stage', 'progress',
  'run', 'parse_attempts', 'embed_attempts', 'error_code', 'error_message', 'parser_job_id', 'parse_warning_code', 'parse_warning_message', 'chunk_count', 'batches_total',
  'batches_done', 'version', 'uploaded_at', 'parse_started_at', 'parsed_at', 'embed_started_at', 'ready_at',
  'failed_at', 'deleted_at', 'updated_at',
] as const satisfies readonly (keyof DocumentStatusRow)[];

/** Progress shown to clients: parsing up to 40 %, then embedding batch by batch up to 95 %. */
function embeddingProgress(done: number, total: number): number {
  return total === 0 ? 45 : 45 + Math.floor((50 * done) / total);
}

export function applyEvent(row: DocumentStatusRow | null, event: RecordedEvent): DocumentStatusRow | null {
  const at = event.createdAt;
  if (event.type === 'DocumentUploaded') {
    const d = event.data;
    return {
      id: event.streamId,
      owner_id: d.ownerId,
      file_name: d.fileName,
      media_type: d.mediaType,
      size_bytes: d.size,
      sha256: d.sha256,
      storage_key: d.storageKey,
      status: 'uploaded',
      stage: 'parse',
      progress: 0,
      run: 1,
      parse_attempts: 0,
      embed_attempts: 0,
      error_code: null,
      error_message: null,
      parser_job_id: null,
      parse_warning_code: null,
      parse_warning_message: null,
      chunk_count: 0,
      batches_total: 0,
      batches_done: 0,
      version: event.streamVersion,
      uploaded_at: at,
      parse_started_at: null,
      parsed_at: null,
      embed_started_at: null,
      ready_at: null,
      failed_at: null,
      deleted_at: null,
      updated_at: at,
    };
  }
  if (!row) return null; // events of a stream whose upload we never saw: nothing to show
  const next: DocumentStatusRow = { ...row, version: event.streamVersion, updated_at: at };
  switch (event.type) {
    case 'ParseStarted':
      return { ...next, status: 'parsing', stage: 'parse', progress: 5, parse_attempts: event.data.attempt, parse_started_at: row.parse_started_at ?? at };
    case 'ParseSubmitted':
      return { ...next, progress: 10, parser_job_id: event.data.providerJobId };
    case 'ParserCallbackReceived':
      return { ...next, progress: 30 };
    case 'ParseSucceeded':
      return {
        ...next,
        status: 'parsed',
        stage: 'embed',
        progress: 40,
        parsed_at: at,
        error_code: null,
        error_message: null,
        parse_warning_code: event.data.partial?.code ?? null,
        parse_warning_message: event.data.partial?.message ?? null,
      };
    case 'EmbeddingStarted':
      return { ...next, status: 'embedding', stage: 'embed', progress: Math.max(row.progress, 45), embed_attempts: event.data.attempt, embed_started_at: row.embed_started_at ?? at };
    case 'StageAttemptFailed':
      return { ...next, error_code: event.data.code, error_message: event.data.message };
    case 'DocumentChunked':
      return { ...next, chunk_count: event.data.chunkCount, batches_total: event.data.batches, batches_done: 0, progress: embeddingProgress(0, event.data.batches) };
    case 'EmbeddingBatchStored':
      return { ...next, batches_done: event.data.batch + 1, progress: embeddingProgress(event.data.batch + 1, row.batches_total), error_code: null, error_message: null };
    case 'DocumentReady':
      return { ...next, status: 'ready', stage: null, progress: 100, ready_at: at, error_code: null, error_message: null };
    case 'DocumentFailed':
      return { ...next, status: 'failed', stage: event.data.stage, failed_at: at, error_code: event.data.code, error_message: event.data.message };
    case 'ReprocessRequested':
      return {
        ...next,
        status: 'uploaded',
        stage: 'parse',
        progress: 0,
        run: event.data.run,
        parse_attempts: 0,
        embed_attempts: 0,
        error_code: null,
        error_message: null,
        parser_job_id: null,
        parse_warning_code: null,
        parse_warning_message: null,
        chunk_count: 0,
        batches_total: 0,
        batches_done: 0,
        parse_started_at: null,
        parsed_at: null,
        embed_started_at: null,
        ready_at: null,
        failed_at: null,
      };
    case 'DocumentDeleted':
      return { ...next, status: 'deleted', stage: null, deleted_at: at };
  }
}

const UPDATES = STATUS_COLUMNS.filter((c) => c !== 'id').map((c) => `${c} = excluded.${c}`).join(', ');

const COLUMN_LIST = STATUS_COLUMNS.join(', ');

/**
 * The upsert of `rows` as a query fragment (run it by awaiting, or embed it in another query).
 * The rows go as one JSON parameter, read back with the table's own row type, so the text is
 * the same whatever the count and each connection prepares it once.
 */
function upsertQuery(tx: Db, rows: readonly DocumentStatusRow[]) {
  return tx`
    insert into docpipe.document_status (${tx.unsafe(COLUMN_LIST)})
    select ${tx.unsafe(COLUMN_LIST)} from jsonb_populate_recordset(null::docpipe.document_status, ${jsonRows(tx, rows)}::jsonb)
    on conflict (id) do update set ${tx.unsafe(UPDATES)}`;
}

/** The current rows of several documents (absent ones are missing from the map), read by the inline path. */
export async function readStatusRows(tx: Db, streamIds: readonly string[]): Promise<Map<string, DocumentStatusRow>> {
  if (streamIds.length === 0) return new Map();
  const rows = await tx<DocumentStatusRow[]>`select * from docpipe.document_status where id = any(${streamIds as string[]}::uuid[])`;
  return new Map(rows.map((r) => [r.id, r]));
}

/** The inline path's fold: `priors` from readStatusRows, freshly appended `events` in append order. */
export function foldStatusRows(priors: ReadonlyMap<string, DocumentStatusRow>, events: readonly RecordedEvent[]): Map<string, DocumentStatusRow> {
  const rows = new Map<string, DocumentStatusRow | null>();
  for (const event of events) {
    const prior = rows.has(event.streamId) ? rows.get(event.streamId)! : event.type === 'DocumentUploaded' ? null : (priors.get(event.streamId) ?? null);
    rows.set(event.streamId, applyEvent(prior, event));
  }
  return new Map([...rows].filter((e): e is [string, DocumentStatusRow] => e[1] !== null));
}

/**
 * The inline path's write, in the append's transaction: upserts the folded rows and notifies
 * long-pollers of each (delivered at commit, never for a rollback), in one statement.
 */
export async function writeStatusRows(tx: Db, rows: ReadonlyMap<string, DocumentStatusRow>): Promise<void> {
  if (rows.size === 0) return;
  await tx`with up as (${upsertQuery(tx, [...rows.values()])} returning id, version)
    select pg_notify(${STATUS_CHANNEL}, up.id || ':' || up.version) from up`;
}

/** Rebuild: replays the whole log into an emptied document_status, in one transaction. */
export async function rebuildDocumentStatus(tx: Db, options: { batchSize?: number } = {}): Promise<{ events: number; documents: number }> {
  // Taken first: appenders wait at their inline update until the rebuilt table is committed,
  // then apply their events on top of it.
  await tx`lock table docpipe.document_status in access exclusive mode`;
  await tx`truncate docpipe.document_status`;
  const rows = new Map<string, DocumentStatusRow | null>();
  let count = 0;
  let after = 0;
  const batchSize = options.batchSize ?? 5000;
  for (;;) {
    // Every transaction that appended before our lock has committed its projection too, and
    // every later one waits for us, so all committed rows are read (not the xmin rule).
    const batch = await readAll(tx, { after, limit: batchSize, allCommitted: true });
    if (batch.length === 0) break;
    for (const event of batch) {
      rows.set(event.streamId, applyEvent(rows.get(event.streamId) ?? null, event));
      count++;
    }
    after = batch.at(-1)!.globalPosition;
  }
  const all = [...rows.values()].filter((r): r is DocumentStatusRow => r !== null);
  for (let i = 0; i < all.length; i += 500) await upsertQuery(tx, all.slice(i, i + 500));
  // Every api process's status cache forgets everything at commit (a payload naming no document).
  await tx`select pg_notify(${STATUS_CHANNEL}, '*')`;
  return { events: count, documents: all.length };
}
