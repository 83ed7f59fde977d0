// The command handler: read the stream, fold it, decide, append at the expected version,
// project inline and enqueue the triggered jobs, all in one transaction. Every state change of
// a document goes through here, from the API and from the worker alike.
import type { Db, Sql } from '../db/client.ts';
import type { EventMetadata, RecordedEvent } from '../events/catalog.ts';
import { appendToStream, readStream } from '../events/store.ts';
import { projectInline, type DocumentStatusRow } from '../projections/document-status.ts';
import { QUEUES, stableJobId, type JobRequest, type JobSender } from '../queue/jobs.ts';
import { eventsAppended } from '../observability/metrics.ts';
import { decide, foldDocument, type DocumentCommand, type DocumentState } from './document.ts';

export interface CommandContext {
  sql: Sql;
  jobs: JobSender;
}

export interface CommandResult {
  state: DocumentState;
  events: RecordedEvent[];
  row: DocumentStatusRow | null;
}

export interface CommandHooks {
  /** Extra writes that must commit with the events (side tables such as chunks). */
  withEvents?(tx: Db, events: RecordedEvent[], state: DocumentState): Promise<void>;
}

/** The jobs that follow from freshly appended events. */
export function jobsFor(events: readonly RecordedEvent[]): JobRequest[] {
  const jobs: JobRequest[] = [];
  for (const event of events) {
    const base = {
      documentId: event.streamId,
      correlationId: event.metadata.correlationId,
      causationId: event.eventId,
      requestId: event.metadata.requestId,
    };
    switch (event.type) {
      case 'DocumentUploaded':
        jobs.push({ queue: QUEUES.parse, data: { ...base, run: 1 } });
        break;
      case 'ReprocessRequested':
        jobs.push({ queue: QUEUES.parse, data: { ...base, run: event.data.run } });
        break;
      case 'ParseSubmitted':
        // The polling backstop: webhooks can be lost, so a check is always scheduled.
        jobs.push({
          queue: QUEUES.parseResult,
          id: stableJobId(event.streamId, event.data.run, event.data.providerJobId, 'poll', 0),
          startAfterSeconds: event.data.pollAfterSeconds,
          data: { ...base, run: event.data.run, providerJobId: event.data.providerJobId, poll: 0 },
        });
        break;
      case 'ParserCallbackReceived':
        jobs.push({
          queue: QUEUES.parseResult,
          id: stableJobId(event.streamId, event.data.run, event.data.providerJobId, 'callback'),
          data: { ...base, run: event.data.run, providerJobId: event.data.providerJobId, poll: null },
        });
        break;
      case 'ParseSucceeded':
        jobs.push({ queue: QUEUES.embed, data: { ...base, run: event.data.run } });
        break;
      case 'DocumentDeleted':
        jobs.push({ queue: QUEUES.purge, data: { ...base, run: 0 } });
        break;
      default:
        break;
    }
  }
  return jobs;
}

export async function loadDocument(db: Db, documentId: string): Promise<DocumentState> {
  return foldDocument(await readStream(db, documentId));
}

/** Runs `command` against document `documentId` inside `tx` (an open transaction). */
export async function executeIn(
  tx: Db,
  ctx: CommandContext,
  documentId: string,
  command: DocumentCommand,
  metadata: EventMetadata,
  hooks: CommandHooks = {},
): Promise<CommandResult> {
  const before = await loadDocument(tx, documentId);
  const events = await appendToStream(tx, documentId, before.version, decide(command, before), metadata);
  const state = foldDocument(events, before);
  const row = await projectInline(tx, documentId, events);
  await hooks.withEvents?.(tx, events, state);
  const jobs = jobsFor(events);
  if (jobs.length > 0) await ctx.jobs.send(tx, jobs);
  return { state, events, row };
}

/** Runs `command` in a transaction of its own. DomainError and ConcurrencyError leave nothing behind. */
export async function execute(
  ctx: CommandContext,
  documentId: string,
  command: DocumentCommand,
  metadata: EventMetadata,
  hooks: CommandHooks = {},
): Promise<CommandResult> {
  const result = await ctx.sql.begin((tx) => executeIn(tx, ctx, documentId, command, metadata, hooks));
  countAppended(result.events);
  return result;
}

export function countAppended(events: readonly RecordedEvent[]): void {
  for (const event of events) eventsAppended.inc({ type: event.type });
}
