// The command handler: read the stream, fold it, decide, append at the expected version,
// project inline and enqueue the triggered jobs, all in one transaction. Every state change of
// a document goes through here, from the API and from the worker alike.
import type { Db, Sql } from '../db/client.ts';
import type { EventMetadata, RecordedEvent } from '../events/catalog.ts';
import { appendToStreams, readStream, readStreams, readStreamsAfter, type StreamAppend } from '../events/store.ts';
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
  /** Items with the same chain are steps of one sequence: after a refused step, the later ones are refused with it. */
  chain?: number;
}

export type BatchOutcome = ({ ok: true } & CommandResult) | { ok: false; error: DomainError };

export interface BatchOptions {
  /**
   * States the caller already holds (from its earlier commands): only the events after each
   * one's version are read. Events are never changed or removed, so folding them onto the held
   * state is the full fold.
   */
  known?: ReadonlyMap<string, DocumentState>;
  /** Resolved together with the reads (one round trip): which items run. The others are skipped (null). */
  include?: Promise<boolean[]>;
  /** Writes that depend on the outcomes, sent together with the projection and the jobs. */
  afterDecide?(outcomes: readonly (BatchOutcome | null)[]): Promise<unknown> | undefined;
  /**
   * The items' documents are new: ids the caller generated itself (randomUUID) in this request,
   * so their streams and status rows are known to be empty and are not read. An id that did
   * exist would still fail the append (the stream's unique version) with ConcurrencyError.
   */
  fresh?: boolean;
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
  const known = options.known;
  const streamRead = options.fresh
    ? new Map<string, RecordedEvent[]>()
    : known
      ? readStreamsAfter(tx, new Map(ids.map((id) => [id, known.get(id)?.version ?? 0])))
      : readStreams(tx, ids);
  const statusRead = options.fresh ? new Map<string, DocumentStatusRow>() : readStatusRows(tx, ids);
  const [streams, priors, include] = await Promise.all([streamRead, statusRead, options.include]);
  const states = new Map(ids.map((id) => [id, foldDocument(streams.get(id) ?? [], known?.get(id))]));
  const appends: (StreamAppend & { item: number })[] = [];
  const refusedChains = new Map<number, DomainError>();
  const outcomes: (BatchOutcome | null)[] = items.map((item, index) => {
    if (include && !include[index]) return null;
    const stopped = item.chain === undefined ? undefined : refusedChains.get(item.chain);
    if (stopped) return { ok: false, error: stopped };
    const before = states.get(item.documentId)!;
    try {
      const events = decide(item.command, before);
      states.set(item.documentId, foldDocument(events, before));
      appends.push({ item: index, streamId: item.documentId, expectedVersion: before.version, events, metadata: item.metadata });
      return null;
    } catch (err) {
      if (err instanceof DomainError) {
        if (item.chain !== undefined) refusedChains.set(item.chain, err);
        return { ok: false, error: err };
      }
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
  return executeSteps(ctx, documentId, [{ command, hooks }], metadata);
}

export interface CommandStep {
  command: DocumentCommand;
  hooks?: CommandHooks;
}

/**
 * Runs several commands on one document in one transaction, each seeing the one before, as
 * if executed one after another, but with one read, one append and one commit: stages whose
 * steps need nothing between them share a transaction this way. Returns the last step's
 * result; a refused step throws its DomainError, and the steps before it still commit (as they
 * would have one by one). The hooks of all steps are sent together, in step order.
 */
export async function executeSteps(ctx: CommandContext, documentId: string, steps: readonly CommandStep[], metadata: EventMetadata): Promise<CommandResult> {
  if (ctx.group) return ctx.group.run({ documentId, steps, metadata });
  const [outcome] = await ctx.sql.begin((tx) => runSteps(tx, ctx, [{ documentId, steps, metadata }]));
  observeCommitted(outcome!.events, outcome!.row);
  if (!outcome!.ok) throw outcome!.error;
  return outcome!.result;
}

interface StepsItem {
  documentId: string;
  steps: readonly CommandStep[];
  metadata: EventMetadata;
}

/** An item's outcome, with every event it appended (a refused item's earlier steps commit) for the metrics. */
type Settled = ({ ok: true; result: CommandResult } | { ok: false; error: unknown }) & { events: RecordedEvent[]; row: DocumentStatusRow | null };

/** The items' steps through executeBatchIn, in `tx`; per item, its last step's result (and every event it appended), or its first refusal. */
async function runSteps(tx: Db, ctx: CommandContext, items: readonly StepsItem[], known?: ReadonlyMap<string, DocumentState>): Promise<Settled[]> {
  const flat = items.flatMap((item, i) => item.steps.map((step) => ({ item: i, chain: i, step, documentId: item.documentId, command: step.command, metadata: item.metadata })));
  const outcomes = await executeBatchIn(tx, ctx, flat, {
    known,
    afterDecide: (all) => Promise.all(all.map((o, i) => (o?.ok ? flat[i]!.step.hooks?.withEvents?.(tx, o.events, o.state) : undefined))),
  });
  return items.map((_, i): Settled => {
    const mine = outcomes.filter((_, j) => flat[j]!.item === i);
    const committed = mine.filter((o) => o?.ok);
    const events = committed.flatMap((o) => (o?.ok ? o.events : []));
    const row = committed.length > 0 && committed.at(-1)!.ok ? (committed.at(-1) as CommandResult).row : null;
    const refused = mine.find((o) => o && !o.ok);
    if (refused && !refused.ok) return { ok: false, error: refused.error, events, row };
    const last = mine.at(-1);
    if (!last?.ok) return { ok: false, error: new Error('command steps: an outcome is missing'), events, row };
    return { ok: true, result: last, events, row };
  });
}

export interface CommandGroup {
  run(item: StepsItem): Promise<CommandResult>;
  /** The state this group's last command left the document in, if it remembers one (it may be stale). */
  peek(documentId: string): DocumentState | undefined;
  /** The document's current state, read with the reads of other concurrent callers (one statement for all). */
  load(documentId: string): Promise<DocumentState>;
}

/**
 * The document's state for deciding what work to do, not for deciding a command: the group's
 * memory of it when it has one, else a read. It may be stale; the command that records the
 * work decides on the current state and refuses if the document moved on.
 */
export async function peekDocument(ctx: CommandContext, documentId: string): Promise<DocumentState> {
  if (!ctx.group) return loadDocument(ctx.sql, documentId);
  return ctx.group.peek(documentId) ?? ctx.group.load(documentId);
}

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
export function createCommandGroup(ctx: Omit<CommandContext, 'group'>, options: { maxBatch: number; concurrency: number; knownStates?: number }): CommandGroup {
  // The states this group's commands left documents in, so that a document's next command reads
  // only what was appended since (usually nothing): a stage's commands need its stream, not a
  // re-read of it. Bounded; the oldest entries go first.
  const known = new Map<string, DocumentState>();
  const maxKnown = options.knownStates ?? 4096;
  const remember = (state: DocumentState, documentId: string) => {
    known.delete(documentId);
    known.set(documentId, state);
    if (known.size > maxKnown) known.delete(known.keys().next().value!);
  };
  // Reads for peekDocument: concurrent ones go in one statement (readStreamsAfter), from where
  // the group's memory of each document starts.
  const reads = createBatcher<string, DocumentState>(async (ids) => {
    const unique = [...new Set(ids)];
    const streams = await readStreamsAfter(ctx.sql, new Map(unique.map((id) => [id, known.get(id)?.version ?? 0])));
    return ids.map((id) => foldDocument(streams.get(id) ?? [], known.get(id)));
  }, { maxBatch: options.maxBatch, concurrency: options.concurrency });
  const alone = (item: StepsItem): Promise<Settled> =>
    // executeSteps counts its own events in the metrics: none to count here.
    executeSteps(ctx, item.documentId, item.steps, item.metadata).then(
      (result): Settled => ({ ok: true, result, events: [], row: null }),
      (error: unknown): Settled => ({ ok: false, error, events: [], row: null }),
    );
  const batcher: Batcher<StepsItem, Settled> = createBatcher(async (items) => {
    let settled: Settled[];
    try {
      settled = await ctx.sql.begin((tx) => runSteps(tx, ctx, items, known));
    } catch {
      // Usually a ConcurrencyError (a writer outside the batch); whatever it was, alone each
      // item meets it again or not at all.
      const one: Settled[] = [];
      for (const item of items) one.push(await alone(item));
      return one;
    }
    settled.forEach((s, i) => {
      observeCommitted(s.events, s.row);
      if (s.ok) remember(s.result.state, items[i]!.documentId);
      // A refused item's earlier steps committed; its state is read afresh next time.
      else known.delete(items[i]!.documentId);
    });
    return settled;
  }, options);
  return {
    async run(item) {
      const settled = await batcher.submit(item);
      if (!settled.ok) throw settled.error;
      return settled.result;
    },
    peek: (documentId) => known.get(documentId),
    load: (documentId) => reads.submit(documentId),
  };
}
