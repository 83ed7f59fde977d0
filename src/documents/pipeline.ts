// The pipeline's stages, as plain functions of a job. Each is idempotent: it reads the stream,
// skips work the log says is done (or belongs to a stale run) and appends at the expected
// version, so a job that runs twice appends nothing twice and writes no duplicate chunks.
import { createWriteStream, openAsBlob } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { buffer } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Db } from '../db/client.ts';
import { storableText } from '../db/text.ts';
import type { EventMetadata } from '../events/catalog.ts';
import type { Logger } from '../observability/logger.ts';
import type { ByteBudget } from '../util/byte-budget.ts';
import { pageEstimate, type PageCounter } from '../providers/parser/pages.ts';
import type { AsyncParser, ChunkOptions, Chunker, Embedder, MediaType, Parser, ParsedDocument, Storage } from '../providers/types.ts';
import { DocumentLimitError, DocumentTooComplexError, ProviderError, UnparseableDocumentError } from '../providers/types.ts';
import { QUEUES, stableJobId, type JobData } from '../queue/jobs.ts';
import { WEBHOOK_TOKEN_HEADER, webhookCredential } from '../security/webhook-auth.ts';
import { ConcurrencyError } from '../events/store.ts';
import { execute, executeSteps, loadDocument, peekDocument, type CommandContext, type CommandStep } from './commands.ts';
import { DomainError, type DocumentState } from './document.ts';

export interface PipelineDeps {
  ctx: CommandContext;
  storage: Storage;
  parser: Parser;
  chunker: Chunker;
  /** Pages of a document before a remote parse: its deadline grows with them. */
  pages: PageCounter;
  embedder: Embedder;
  chunking: ChunkOptions;
  embedBatchSize: number;
  /** Bounds the documents this worker's jobs hold in memory at once. */
  memory: ByteBudget;
  /** Remote (async) parsers: where their webhooks go, and how long to wait for them. */
  remoteParse: RemoteParseSettings;
}

export interface RemoteParseSettings {
  /** Base URL of the webhook service as the provider reaches it; undefined: no webhooks, polling only. */
  webhookBaseUrl: string | undefined;
  webhookSecret: string | undefined;
  pollAfterSeconds: number;
}

/** Polling backoff after the webhook grace period: 1 s doubling to 60 s. */
export const pollDelaySeconds = (poll: number) => Math.min(60, 2 ** Math.min(poll, 6));

/** `pending`: a remote job is still running; the next check is scheduled. */
export type StageOutcome = 'done' | 'skipped' | 'failed' | 'pending';

/**
 * What one job runs with besides its data: aborted when the worker shuts down, so a long task in
 * the sandbox is cut short and its attempt recorded (retried later) instead of left to look like
 * a crash.
 */
export interface JobContext {
  log: Logger;
  signal?: AbortSignal;
}

/** The worker is shutting down: the attempt is recorded and retried later, by this worker's successor. */
export class StageInterruptedError extends Error {
  readonly code = 'WORKER_SHUTDOWN';
  constructor() {
    super('the worker stopped while the document was being processed; it will be processed again');
    this.name = 'StageInterruptedError';
  }
}

function stopIfShuttingDown(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new StageInterruptedError();
}

/**
 * `work`, unless the worker starts shutting down first: then the attempt ends (and is recorded)
 * at once, and `work` is left to finish or die with the process. For calls that take no signal
 * of their own, such as a large upload to a remote parser (a job it leaves behind is ignored).
 */
async function unlessShuttingDown<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    work.catch(() => {}); // abandoned: its failure has no one to tell
    throw new StageInterruptedError();
  }
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new StageInterruptedError());
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * Documents under this size skip the worker's document budget: with WORKER_CONCURRENCY jobs a
 * queue they hold little, and they must never wait behind a large document (the end-to-end
 * latency of an ordinary upload is a success bar).
 */
export const BUDGET_EXEMPT_BYTES = 1024 * 1024;

/** Waits for `bytes` of the worker's document budget; a shutdown while waiting ends the attempt. */
async function reserve(deps: PipelineDeps, bytes: number, signal: AbortSignal | undefined, log: Logger): Promise<() => void> {
  if (bytes < BUDGET_EXEMPT_BYTES) return () => {};
  const waitingBefore = deps.memory.waiting();
  try {
    const release = await deps.memory.acquire(bytes, signal);
    if (waitingBefore > 0 || deps.memory.inUse() > bytes) log.debug({ bytes, inUse: deps.memory.inUse() }, 'document budget granted');
    return release;
  } catch (err) {
    if (signal?.aborted) throw new StageInterruptedError();
    throw err;
  }
}

/** A failure that retrying cannot fix: the document fails at once, with this code. */
export class PermanentStageError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'PermanentStageError';
  }
}

export const documentPrefix = (documentId: string) => `documents/${documentId}/`;
export const originalKey = (documentId: string) => `${documentPrefix(documentId)}original`;
export const parsedKey = (documentId: string, run: number) => `${documentPrefix(documentId)}runs/${run}/parsed.md`;

function metadataFor(job: JobData): EventMetadata {
  return { correlationId: job.correlationId, causationId: job.causationId, actor: 'worker', requestId: job.requestId };
}

function inRun(state: DocumentState, job: JobData, statuses: readonly DocumentState['status'][]): boolean {
  return state.run === job.run && statuses.includes(state.status);
}

function errorCode(err: unknown): string {
  if (err instanceof RangeError) return 'DOCUMENT_TOO_COMPLEX';
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(code) ? code : 'STAGE_ERROR';
}

/**
 * Errors no retry can fix: the same document would fail the same way. A RangeError (a stack
 * overflow, an allocation too large) is one, wherever it comes from.
 */
function isPermanent(err: unknown): boolean {
  return (
    err instanceof PermanentStageError ||
    err instanceof UnparseableDocumentError ||
    err instanceof DocumentLimitError ||
    err instanceof DocumentTooComplexError ||
    err instanceof RangeError ||
    (err instanceof ProviderError && err.permanent)
  );
}

/** An attempt is recorded even through a short database outage: an unrecorded one would later read as a crash. */
async function record(deps: PipelineDeps, job: JobData, command: Parameters<typeof execute>[2], log: Logger): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await execute(deps.ctx, job.documentId, command, metadataFor(job));
      return;
    } catch (err) {
      if (err instanceof DomainError) return; // the document moved on (deleted, reprocessed): nothing to record
      if (attempt >= 3) {
        log.error({ err }, 'could not record the stage failure');
        return;
      }
      await sleep(250 * attempt);
    }
  }
}

/**
 * Runs one stage body with the shared failure policy: a DomainError means the job is stale
 * (skip), a permanent error fails the document, anything else is recorded as a failed attempt
 * and rethrown so pg-boss retries it with backoff. The body says when it opened an attempt
 * (ParseStarted, EmbeddingStarted): every way out of it must then leave an outcome in the log.
 */
async function guarded(
  deps: PipelineDeps,
  job: JobData,
  stage: 'parse' | 'embed',
  log: Logger,
  body: (opened: () => void) => Promise<StageOutcome>,
): Promise<StageOutcome> {
  let attemptOpen = false;
  try {
    return await body(() => {
      attemptOpen = true;
    });
  } catch (err) {
    if (err instanceof DomainError) {
      log.info({ code: err.code, status: err.status }, `${stage} job is stale: ${err.message}`);
      return 'skipped';
    }
    if (err instanceof ConcurrencyError) {
      // Another job appended to this document meanwhile (the webhook-sent check and the polling
      // check both finishing a parse, say). Not a failure of this stage; pg-boss runs the job
      // again and it finds the document as the winner left it. An attempt this job opened is
      // closed first, or the next one would take it for a crash.
      log.info({ code: err.code }, `${stage} job lost a race for the document; it will re-read and retry`);
      if (attemptOpen) await record(deps, job, { type: 'RecordAttemptFailure', run: job.run, stage, code: err.code, message: 'another job changed the document meanwhile' }, log);
      throw err;
    }
    const permanent = isPermanent(err);
    const code = errorCode(err);
    const message = storableText((err as Error)?.message ?? String(err));
    await record(
      deps,
      job,
      permanent ? { type: 'Fail', run: job.run, stage, code, message } : { type: 'RecordAttemptFailure', run: job.run, stage, code, message },
      log,
    );
    if (permanent) {
      log.warn({ code, message }, `${stage} failed permanently`);
      return 'failed';
    }
    throw err;
  }
}

/** After StartParse/StartEmbedding: the document failed instead, because its last attempt crashed the worker. */
function failedByCrash(state: DocumentState, log: Logger): boolean {
  if (state.status !== 'failed') return false;
  log.warn({ code: state.error?.code, message: state.error?.message }, 'the previous attempt died with its worker; the document fails');
  return true;
}

export async function runParseStage(deps: PipelineDeps, job: JobData, context: JobContext): Promise<StageOutcome> {
  const { log, signal } = context;
  return guarded(deps, job, 'parse', log, async (opened) => {
    const meta = metadataFor(job);
    if (deps.parser.mode === 'sync' && deps.parser.inline) {
      // Short work that cannot crash or stall the worker needs no attempt opened before it: a
      // small text document is parsed, then its attempt opened and closed in one transaction.
      // A larger one shows `parsing` while it is parsed; a document with an attempt open already
      // (a retry, a crash) takes the path below, which records what became of it.
      const peeked = await peekDocument(deps.ctx, job.documentId);
      if (peeked.status === 'uploaded' && peeked.run === job.run && (peeked.size ?? Infinity) < BUDGET_EXEMPT_BYTES && deps.parser.inline(peeked.mediaType as MediaType)) {
        const release = await reserve(deps, peeked.size ?? 0, signal, log);
        try {
          const bytes = await buffer(await deps.storage.get(peeked.storageKey!));
          const parsed = await deps.parser.parse(bytes, peeked.mediaType as MediaType, { signal });
          await storeParsed(deps, job, parsed, null, [{ command: { type: 'StartParse', run: job.run, parser: deps.parser.kind } }]);
        } finally {
          release();
        }
        return 'done';
      }
    }
    // StartParse's decide rejects a stale run or a finished parse (DomainError -> skipped),
    // so no separate read is needed first.
    const started = await execute(deps.ctx, job.documentId, { type: 'StartParse', run: job.run, parser: deps.parser.kind }, meta);
    const state = started.state;
    if (failedByCrash(state, log)) return 'failed';
    opened();
    if (deps.parser.mode === 'async' && state.mediaType !== 'application/pdf') {
      // Streamed to the provider from a file on disk: the original is never in memory. (A PDF's
      // page tree is read from its bytes, before the upload, so a PDF is held.)
      const spooled = await spoolOriginal(deps, state, signal);
      try {
        return await submitRemoteParse(deps, deps.parser, job, state, spooled, log, signal);
      } finally {
        await spooled.dispose();
      }
    }
    const release = await reserve(deps, state.size ?? 0, signal, log);
    try {
      const bytes = await buffer(await deps.storage.get(state.storageKey!));
      if (deps.parser.mode === 'async') {
        // Before the upload: a PDF over the page limit fails here, not on the provider's bill.
        const pages = await deps.pages.count(bytes, state.mediaType as MediaType, { signal });
        return await submitRemoteParse(deps, deps.parser, job, state, { body: bytes, pages }, log, signal);
      }
      const parsed = await deps.parser.parse(bytes, state.mediaType as MediaType, { signal });
      await storeParsed(deps, job, parsed, null);
      return 'done';
    } finally {
      release();
    }
  });
}

/**
 * The original copied from storage to a private temporary file as it downloads, its pages
 * estimated on the way (pageEstimate), and opened as a file-backed Blob that the parser's
 * upload reads as it sends. `dispose` removes the file.
 */
async function spoolOriginal(deps: PipelineDeps, state: DocumentState, signal: AbortSignal | undefined): Promise<{ body: Blob; pages: number; dispose(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'docpipe-spool-'));
  const dispose = () => rm(dir, { recursive: true, force: true });
  try {
    const file = path.join(dir, 'original');
    const estimate = pageEstimate(state.mediaType as MediaType);
    const count = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        estimate.add(chunk);
        callback(null, chunk);
      },
    });
    await pipeline(await deps.storage.get(state.storageKey!), count, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal });
    return { body: await openAsBlob(file, { type: state.mediaType ?? undefined }), pages: estimate.pages(), dispose };
  } catch (err) {
    await dispose();
    if (signal?.aborted) throw new StageInterruptedError();
    throw err;
  }
}

/**
 * Stores the markdown (never in the event) and appends ParseSucceeded with its size and hash,
 * after `before` (steps that commit with it).
 */
async function storeParsed(deps: PipelineDeps, job: JobData, parsed: ParsedDocument, partial: { code: string; message: string } | null, before: CommandStep[] = []): Promise<void> {
  if (parsed.markdown.trim() === '') throw new PermanentStageError('EMPTY_DOCUMENT', 'the document contains no text');
  const key = parsedKey(job.documentId, job.run);
  const markdown = Buffer.from(parsed.markdown, 'utf8');
  // The length goes with it: Supabase applies the bucket's size limit only to a declared length.
  const stored = await deps.storage.put(key, Readable.from([markdown]), { contentType: 'text/markdown', size: markdown.length });
  await executeSteps(deps.ctx, job.documentId, [
    ...before,
    { command: { type: 'CompleteParse', run: job.run, parsedKey: key, pages: parsed.pages, characters: parsed.markdown.length, sha256: stored.sha256, partial } },
  ], metadataFor(job));
}

/**
 * Hands the document to a remote parser and records its job id. The webhook (if configured)
 * or the polling chain scheduled by ParseSubmitted finishes the parse in runParseResult.
 */
async function submitRemoteParse(
  deps: PipelineDeps,
  parser: AsyncParser,
  job: JobData,
  state: DocumentState,
  { body, pages }: { body: Buffer | Blob; pages: number },
  log: Logger,
  signal: AbortSignal | undefined,
): Promise<StageOutcome> {
  const { webhookBaseUrl, webhookSecret, pollAfterSeconds } = deps.remoteParse;
  const timeLimitSeconds = parser.timeLimitSeconds(pages);
  const webhook =
    webhookBaseUrl && webhookSecret
      ? {
          url: `${webhookBaseUrl}/v1/webhooks/${parser.kind}/${job.documentId}`,
          headers: { [WEBHOOK_TOKEN_HEADER]: webhookCredential(webhookSecret, parser.kind, job.documentId, job.run) },
        }
      : null;
  const { jobId, status } = await unlessShuttingDown(
    parser.submit({ bytes: body, fileName: state.fileName ?? 'document', mediaType: state.mediaType as MediaType, webhook }),
    signal,
  );
  // Finished already (a cache hit, which may send no webhook): check at once. No webhooks: poll
  // from the first second. Otherwise give the webhook its grace period.
  const firstCheck = status !== undefined && status !== 'PENDING' ? 0 : webhook ? pollAfterSeconds : 1;
  await execute(deps.ctx, job.documentId, {
    type: 'SubmitParse',
    run: job.run,
    parser: parser.kind,
    providerJobId: jobId,
    webhook: webhook !== null,
    pollAfterSeconds: firstCheck,
    deadline: new Date(Date.now() + timeLimitSeconds * 1000).toISOString(),
  }, metadataFor(job));
  log.info({ providerJobId: jobId, webhook: webhook !== null, pages, timeLimitSeconds }, 'submitted to the remote parser');
  return 'pending';
}

/**
 * Checks a remote parse job (after a webhook, or as the polling backstop): still running ->
 * schedule the next check (1 s doubling to 60 s) until the deadline; failed -> the document
 * fails with the provider's code and message; done -> fetch, store, ParseSucceeded.
 */
export async function runParseResult(deps: PipelineDeps, job: JobData, { log }: JobContext): Promise<StageOutcome> {
  return guarded(deps, job, 'parse', log, async () => {
    const state = await loadDocument(deps.ctx.sql, job.documentId);
    if (!inRun(state, job, ['parsing']) || state.parserJobId !== job.providerJobId) return 'skipped';
    if (deps.parser.mode !== 'async') throw new PermanentStageError('PARSER_MISMATCH', `the configured parser (${deps.parser.kind}) cannot finish a remote parse job`);
    const providerJobId = job.providerJobId!;
    const pastDeadline = () => state.parseDeadline !== null && Date.now() >= Date.parse(state.parseDeadline);
    const pollAgain = async (): Promise<StageOutcome> => {
      if (pastDeadline()) {
        // Given up: stop the provider's job too, or it runs (and bills) on for nobody.
        const parser = deps.parser as AsyncParser;
        await parser.cancel?.(providerJobId).catch((err: unknown) => log.warn({ err, providerJobId }, 'could not cancel the remote parse job given up on'));
        throw new PermanentStageError('PARSE_TIMEOUT', `${deps.parser.kind} job ${providerJobId} did not finish by its deadline (${state.parseDeadline})`);
      }
      // A webhook-sent check that finds the job still running leaves it to the polling chain.
      if (job.poll === null || job.poll === undefined) return 'pending';
      const poll = job.poll + 1;
      await deps.ctx.jobs.send(deps.ctx.sql, [{
        queue: QUEUES.parseResult,
        id: stableJobId(job.documentId, job.run, providerJobId, 'poll', poll),
        startAfterSeconds: pollDelaySeconds(job.poll),
        data: { ...job, poll },
      }]);
      return 'pending';
    };
    let remote;
    try {
      remote = await deps.parser.status(providerJobId);
    } catch (err) {
      // The provider's job runs on regardless of our view of it: an outage of the status route
      // must not fail a document that has up to the deadline to finish. The polling chain just
      // asks again later; a webhook-sent check leaves it to the chain.
      if (err instanceof ProviderError && !err.permanent) {
        log.warn({ code: err.code, message: err.message, poll: job.poll }, 'parse status check failed; polling again later');
        return pollAgain();
      }
      throw err;
    }
    switch (remote.status) {
      case 'PENDING':
        return pollAgain();
      case 'ERROR':
        throw new PermanentStageError(providerCode(remote.errorCode, 'PARSE_ERROR'), remote.errorMessage ?? `${deps.parser.kind} reported an error without a message`);
      case 'CANCELLED':
        throw new PermanentStageError(providerCode(remote.errorCode, 'PARSE_CANCELLED'), remote.errorMessage ?? `the ${deps.parser.kind} job was cancelled`);
      case 'SUCCESS': {
        try {
          const parsed = await deps.parser.result(providerJobId);
          await storeParsed(deps, job, parsed, parsed.warning ?? null);
        } catch (err) {
          // The provider holds a finished parse: a passing outage of its result route or of our
          // storage must not fail the document either; the polling chain fetches it later.
          if (err instanceof ProviderError && !err.permanent) {
            log.warn({ code: err.code, message: err.message, poll: job.poll }, 'could not fetch or store the parse result; trying again later');
            return pollAgain();
          }
          throw err;
        }
        return 'done';
      }
    }
  });
}

/** The provider's error code when it is a plain CODE_LIKE_THIS, else `fallback`. */
function providerCode(code: string | null, fallback: string): string {
  return code && /^[A-Z][A-Z0-9_]{0,63}$/.test(code) ? code : fallback;
}

interface ChunkText {
  index: number;
  text: string;
}

interface ChunkRows {
  documentIds: string[];
  rows: { documentId: string; run: number; index: number; text: string; tokenCount: number; embedding: string | null }[];
  written: Promise<void>;
}

/** The chunk writes of each open transaction, gathered until its hooks have all been called. */
const chunkWrites = new WeakMap<Db, ChunkRows>();

/**
 * Stores a document's chunks (with their vectors when known already: a document of one
 * embedding batch). A reprocess replaces the previous run's chunks in the same transaction as
 * DocumentChunked. Every document of a transaction (a group's batch calls the hooks of all its
 * commands at once) goes in the same two statements, one delete and one insert: one statement
 * per document would cost a round trip each on a connection that has not prepared it yet.
 */
function storeChunks(tx: Db, documentId: string, run: number, chunks: { index: number; text: string; tokenCount: number }[], vectors?: Float32Array[]): Promise<void> {
  let pending = chunkWrites.get(tx);
  if (!pending) {
    const batch: ChunkRows = { documentIds: [], rows: [], written: Promise.resolve() };
    // Written once the hooks called in this turn of the event loop have added their rows.
    batch.written = Promise.resolve().then(() => {
      chunkWrites.delete(tx);
      return writeChunks(tx, batch);
    });
    chunkWrites.set(tx, batch);
    pending = batch;
  }
  pending.documentIds.push(documentId);
  chunks.forEach((c, i) => pending.rows.push({ documentId, run, index: c.index, text: c.text, tokenCount: c.tokenCount, embedding: vectors ? `{${Array.from(vectors[i]!).join(',')}}` : null }));
  return pending.written;
}

async function writeChunks(tx: Db, { documentIds, rows }: ChunkRows): Promise<void> {
  // Sent without waiting in between: a transaction's statements run in the order sent. With
  // pgvector, migration 005's trigger moves `embedding` into `embedding_vector`.
  await Promise.all([
    tx`delete from docpipe.document_chunks where document_id = any(${documentIds}::uuid[])`,
    tx`
      insert into docpipe.document_chunks (document_id, chunk_index, run, content, token_count, embedding)
      select v.document_id, v.chunk_index, v.run, v.content, v.token_count, v.embedding::real[]
      from unnest(${rows.map((r) => r.documentId)}::uuid[], ${rows.map((r) => r.index)}::int[], ${rows.map((r) => r.run)}::int[],
                  ${rows.map((r) => r.text)}::text[], ${rows.map((r) => r.tokenCount)}::int[], ${rows.map((r) => r.embedding) as string[]}::text[])
        as v(document_id, chunk_index, run, content, token_count, embedding)`,
  ]);
}

async function storeEmbeddings(tx: Db, documentId: string, run: number, fromChunk: number, vectors: Float32Array[]): Promise<void> {
  // With pgvector, a trigger moves what is written to `embedding` into `embedding_vector`
  // (migration 005): this statement is the same on both storages, and the previous release's.
  const indexes = vectors.map((_, i) => fromChunk + i);
  const literals = vectors.map((v) => `{${Array.from(v).join(',')}}`);
  const updated = await tx`
    update docpipe.document_chunks c set embedding = v.embedding::real[]
    from unnest(${indexes}::int[], ${literals}::text[]) as v(chunk_index, embedding)
    where c.document_id = ${documentId} and c.run = ${run} and c.chunk_index = v.chunk_index`;
  if (updated.count !== vectors.length) {
    throw new Error(`expected to store ${vectors.length} embeddings, stored ${updated.count}`);
  }
}

export async function runEmbedStage(deps: PipelineDeps, job: JobData, context: JobContext): Promise<StageOutcome> {
  const { log, signal } = context;
  return guarded(deps, job, 'embed', log, async (opened) => {
    const meta = metadataFor(job);
    const start = { command: { type: 'StartEmbedding', run: job.run } } as const;
    // Chunking runs in the sandbox and embedding waits on the embedder: neither can take the
    // worker down, so a small document not started yet opens its attempt in the transaction
    // that records its chunks (`leading`). A larger one opens it first, and shows `embedding`
    // while it is chunked; one with an attempt open already (a retry, a crash) opens the next
    // one first too, which records what became of the last. As in parse, StartEmbedding's
    // decide is the staleness check.
    const peeked = await peekDocument(deps.ctx, job.documentId);
    let state: DocumentState;
    let leading: CommandStep[] = [];
    if (peeked.status === 'parsed' && peeked.run === job.run && peeked.chunkCount === null && (peeked.parsedCharacters ?? Infinity) < BUDGET_EXEMPT_BYTES) {
      state = peeked;
      leading = [start];
    } else {
      ({ state } = await execute(deps.ctx, job.documentId, start.command, meta));
      if (failedByCrash(state, log)) return 'failed';
      opened();
    }
    // The chunks of the document stay in memory until its last batch is stored.
    const release = await reserve(deps, state.parsedCharacters ?? 0, signal, log);
    try {
      let chunks: ChunkText[];
      if (state.chunkCount === null) {
        // The markdown goes to the sandbox as bytes, decoded and chunked there.
        const markdown = await buffer(await deps.storage.get(state.parsedKey!));
        const made = await deps.chunker.chunk(markdown, deps.chunking, { signal });
        if (made.length === 0) throw new PermanentStageError('EMPTY_DOCUMENT', 'the document contains no text to embed');
        const tokenCount = made.reduce((sum, c) => sum + c.tokenCount, 0);
        const recordChunks = { type: 'RecordChunks', run: job.run, chunkCount: made.length, tokenCount, batchSize: deps.embedBatchSize } as const;
        if (made.length <= deps.embedBatchSize) {
          // One embedding batch: nothing to resume between the steps, so the chunks, their
          // vectors and the document's readiness commit together, in one transaction.
          const vectors = await unlessShuttingDown(deps.embedder.embed(made.map((c) => c.text)), signal);
          await executeSteps(deps.ctx, job.documentId, [
            ...leading,
            { command: recordChunks, hooks: { withEvents: (tx) => storeChunks(tx, job.documentId, job.run, made, vectors) } },
            { command: { type: 'StoreEmbeddingBatch', run: job.run, batch: 0, model: deps.embedder.model, dimensions: deps.embedder.dimensions } },
            { command: { type: 'MarkReady', run: job.run } },
          ], meta);
          return 'done';
        }
        ({ state } = await executeSteps(deps.ctx, job.documentId, [...leading, { command: recordChunks, hooks: { withEvents: (tx) => storeChunks(tx, job.documentId, job.run, made) } }], meta));
        opened();
        chunks = made;
      } else {
        // Resuming a retried job: the chunks of this run are already stored; embed what is left.
        chunks = (
          await deps.ctx.sql<{ chunk_index: number; content: string }[]>`
            select chunk_index, content from docpipe.document_chunks
            where document_id = ${job.documentId} and run = ${job.run} order by chunk_index`
        ).map((r) => ({ index: r.chunk_index, text: r.content }));
        log.info({ batchesDone: state.batchesDone, batches: state.batches }, 'resuming embedding');
      }

      const batchSize = state.batchSize!;
      for (let batch = state.batchesDone; batch < state.batches!; batch++) {
        const slice = chunks.slice(batch * batchSize, (batch + 1) * batchSize);
        const vectors = await unlessShuttingDown(deps.embedder.embed(slice.map((c) => c.text)), signal);
        const fromChunk = batch * batchSize;
        ({ state } = await execute(
          deps.ctx,
          job.documentId,
          { type: 'StoreEmbeddingBatch', run: job.run, batch, model: deps.embedder.model, dimensions: deps.embedder.dimensions },
          meta,
          { withEvents: (tx) => storeEmbeddings(tx, job.documentId, job.run, fromChunk, vectors) },
        ));
      }
    } finally {
      release();
    }
    await execute(deps.ctx, job.documentId, { type: 'MarkReady', run: job.run }, meta);
    return 'done';
  });
}

/** Removes the files of a deleted document. Chunks went with DocumentDeleted's transaction. */
export async function runPurge(deps: Pick<PipelineDeps, 'ctx' | 'storage'>, job: JobData): Promise<StageOutcome> {
  const state = await loadDocument(deps.ctx.sql, job.documentId);
  if (state.status !== 'deleted') return 'skipped';
  await deps.storage.deletePrefix(documentPrefix(job.documentId));
  return 'done';
}

/** A stage job that exhausted its retries: the document fails with the last recorded reason. */
export async function runDeadLetter(deps: Pick<PipelineDeps, 'ctx'>, job: JobData, stage: 'parse' | 'embed' | null, retries: number | null): Promise<StageOutcome> {
  const state = await loadDocument(deps.ctx.sql, job.documentId);
  if (!inRun(state, job, ['uploaded', 'parsing', 'parsed', 'embedding'])) return 'skipped';
  const last = state.lastAttemptError;
  const attempts = retries === null ? '' : ` after ${retries + 1} attempts`;
  const code = last?.code ?? 'STAGE_TIMED_OUT';
  const message = last
    ? `${last.stage} failed${attempts}: ${last.message}`
    : `${stage ?? 'a stage'} did not finish${attempts} (the worker stopped or timed out)`;
  try {
    await execute(deps.ctx, job.documentId, { type: 'Fail', run: job.run, stage: stage ?? last?.stage ?? null, code, message }, metadataFor(job));
  } catch (err) {
    if (err instanceof DomainError) return 'skipped';
    throw err;
  }
  return 'failed';
}
