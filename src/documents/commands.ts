// The command handler: read the stream, fold it, decide, append at the expected version,
// project inline and enqueue the triggered jobs, all in one transaction. Every state change of
// a document goes through here, from the API and from the worker alike.
import type { Db, Sql } from '../db/client.ts';
import type { EventMetadata, RecordedEvent } from '../events/catalog.ts';
import { appendToStreams, readStream, readStreams, type StreamAppend } from '../events/store.ts';
import { foldStatusRows, readStatusRows, writeStatusRows, type DocumentStatusRow } from '../projections/document-status.ts';
import { foldUsage, writeUsage } from '../projections/usage.ts';
import { QUEUES, stableJobId, type JobRequest, type JobSender } from '../queue/jobs.ts';
import { observeCommitted } from '../observability/pipeline-metrics.ts';
import { createBatcher, type Batcher } from '../util/batcher.ts';
import { decide, DomainError, foldDocument, type DocumentCommand, type DocumentState } from './document.ts';

export interface CommandContext {
  sql: Sql;
  jobs: JobSender;
  /**
   * Group commit (createCommandGroup): `execute` hands its command to this instead of opening a
   * transaction of its own, and commands from concurrent jobs share one. The worker's.
   */
  group?: CommandGroup;
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

/**
 * Runs `command` against document `documentId` inside `tx` (an open transaction): a batch of
 * one through executeBatchIn, the one command-handler flow. A refused command throws its
 * DomainError.
 */
export async function executeIn(
  tx: Db,
  ctx: CommandContext,
  documentId: string,
  command: DocumentCommand,
  metadata: EventMetadata,
  hooks: CommandHooks = {},
): Promise<CommandResult> {
  const [outcome] = await executeBatchIn(tx, ctx, [{ documentId, command, metadata }], {
    afterDecide: ([o]) => (o?.ok ? hooks.withEvents?.(tx, o.events, o.state) : undefined),
  });
  if (!outcome!.ok) throw outcome!.error;
  return outcome!;
}

export interface BatchItem {
  documentId: string;
  command: DocumentCommand;
  metadata: EventMetadata;
}

export type BatchOutcome = ({ ok: true } & CommandResult) | { ok: false; error: DomainError };

export interface BatchOptions {
  /** Resolved together with the reads (one round trip): which items run. The others are skipped (null). */
  include?: Promise<boolean[]>;
  /** Writes that depend on the outcomes, sent together with the projection and the jobs. */
  afterDecide?(outcomes: readonly (BatchOutcome | null)[]): Promise<unknown> | undefined;
}

/**
 * executeIn for many commands at once, inside `tx`: one read of all their streams and status
 * rows, one append, one projection write and one enqueue per queue, whatever the count. This is
 * group commit for bursts of small commands (webhook deliveries): the per-statement cost is
 * paid once per batch. Items of one document apply in order, each seeing the one before. A
 * refused command is that item's outcome (the others go on); a ConcurrencyError (a writer
 * outside the batch) aborts the whole batch, and the caller runs the items one by one instead.
 */
export async function executeBatchIn(tx: Db, ctx: CommandContext, items: readonly BatchItem[], options: BatchOptions = {}): Promise<(BatchOutcome | null)[]> {
  const ids = [...new Set(items.map((i) => i.documentId))];
  const [streams, priors, include] = await Promise.all([readStreams(tx, ids), readStatusRows(tx, ids), options.include]);
  const states = new Map(ids.map((id) => [id, foldDocument(streams.get(id) ?? [])]));
  const appends: (StreamAppend & { item: number })[] = [];
  const outcomes: (BatchOutcome | null)[] = items.map((item, index) => {
    if (include && !include[index]) return null;
    const before = states.get(item.documentId)!;
    try {
      const events = decide(item.command, before);
      states.set(item.documentId, foldDocument(events, before));
      appends.push({ item: index, streamId: item.documentId, expectedVersion: before.version, events, metadata: item.metadata });
      return null;
    } catch (err) {
      if (err instanceof DomainError) return { ok: false, error: err };
      throw err;
    }
  });
  const recorded = await appendToStreams(tx, appends);
  const all = recorded.flat();
  // Rows are folded before they are written, so the outcomes are complete for afterDecide.
  const rows = foldStatusRows(priors, all);
  appends.forEach((a, i) => {
    // With several items of one document, each outcome's state and row are the document after
    // the whole batch, which is what the caller can observe anyway.
    outcomes[a.item] = { ok: true, state: states.get(a.streamId)!, events: recorded[i]!, row: rows.get(a.streamId) ?? null };
  });
  const jobs = jobsFor(all);
  // Usage by owner and day (projections/usage.ts): most commands add none, and send nothing.
  const usage = foldUsage(all, rows);
  // All in one round trip (postgres.js pipelines a transaction's statements). The usage rows are
  // inserts into usage_deltas: no lock that another writer waits for, whatever the order.
  await Promise.all([
    writeStatusRows(tx, rows),
    jobs.length > 0 ? ctx.jobs.send(tx, jobs) : undefined,
    options.afterDecide?.(outcomes),
    usage.length > 0 ? writeUsage(tx, usage) : undefined,
  ]);
  return outcomes;
}

/**
 * Runs `command` in a transaction of its own, or in its group's (ctx.group). DomainError and
 * ConcurrencyError leave nothing behind.
 */
export async function execute(
  ctx: CommandContext,
  documentId: string,
  command: DocumentCommand,
  metadata: EventMetadata,
  hooks: CommandHooks = {},
): Promise<CommandResult> {
  if (ctx.group) return ctx.group.run({ documentId, command, metadata, hooks });
  const result = await ctx.sql.begin((tx) => executeIn(tx, ctx, documentId, command, metadata, hooks));
  observeCommitted(result.events, result.row);
  return result;
}

export interface CommandGroup {
  run(item: BatchItem & { hooks: CommandHooks }): Promise<CommandResult>;
}

type Settled = { ok: true; result: CommandResult } | { ok: false; error: unknown };

/**
 * Group commit for the commands of concurrent jobs (the worker's): commands submitted while
 * others are in flight go together, up to `maxBatch`, through executeBatchIn in one
 * transaction: one read of their streams, one append, one projection write, one enqueue and one
 * commit for all, their side-table writes (hooks) in the same round trip. Idle, a command goes
 * at once and alone. A batch whose transaction fails as a whole (a writer outside it, a hook's
 * error) commits nothing; its commands are then run one by one, each in its own transaction, so
 * one command's failure is its own and every other command's outcome is what it would have been
 * alone.
 */
export function createCommandGroup(ctx: Omit<CommandContext, 'group'>, options: { maxBatch: number; concurrency: number }): CommandGroup {
  const alone = (item: BatchItem & { hooks: CommandHooks }): Promise<Settled> =>
    execute(ctx, item.documentId, item.command, item.metadata, item.hooks).then(
      (result): Settled => ({ ok: true, result }),
      (error: unknown): Settled => ({ ok: false, error }),
    );
  const batcher: Batcher<BatchItem & { hooks: CommandHooks }, Settled> = createBatcher(async (items) => {
    if (items.length === 1) return [await alone(items[0]!)];
    let outcomes: (BatchOutcome | null)[];
    try {
      outcomes = await ctx.sql.begin((tx) =>
        executeBatchIn(tx, ctx, items, {
          afterDecide: (all) => Promise.all(all.map((o, i) => (o?.ok ? items[i]!.hooks.withEvents?.(tx, o.events, o.state) : undefined))),
        }),
      );
    } catch {
      // Usually a ConcurrencyError (a writer outside the batch); whatever it was, alone each
      // command meets it again or not at all.
      const settled: Settled[] = [];
      for (const item of items) settled.push(await alone(item));
      return settled;
    }
    return outcomes.map((o): Settled => {
      if (!o) return { ok: false, error: new Error('command group: an item was skipped') };
      if (!o.ok) return { ok: false, error: o.error };
      observeCommitted(o.events, o.row);
      return { ok: true, result: o };
    });
  }, options);
  return {
    async run(item) {
      const settled = await batcher.submit(item);
      if (!settled.ok) throw settled.error;
      return settled.result;
    },
  };
}
