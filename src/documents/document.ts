// The document aggregate: pure `decide(command, state) -> events` and
// `evolve(state, event) -> state`. No I/O here; the command handler reads the stream, folds it
// with evolve, asks decide, and appends what it returns with the expected version.
import type { EventPayloads, NewEvent, Stage } from '../events/catalog.ts';

export type DocumentStatus = 'uploaded' | 'parsing' | 'parsed' | 'embedding' | 'ready' | 'failed' | 'deleted';

export interface DocumentState {
  /** 0 before the first event; equals the stream version afterwards. */
  version: number;
  status: DocumentStatus | 'absent';
  ownerId: string | null;
  storageKey: string | null;
  mediaType: string | null;
  fileName: string | null;
  /** Bytes of the original. */
  size: number | null;
  /** Length of the parsed markdown of the current run, once parsed. */
  parsedCharacters: number | null;
  /** Processing run: 1 for the upload, +1 per reprocess. Jobs carry it; stale runs are ignored. */
  run: number;
  parseAttempts: number;
  embedAttempts: number;
  parsedKey: string | null;
  /** The remote parser's job of the current run (async parsers), once submitted. */
  parserJobId: string | null;
  /** ISO time after which a still-running remote parse fails with PARSE_TIMEOUT. */
  parseDeadline: string | null;
  /** A callback for parserJobId was recorded: later ones (redeliveries, other events) are ignored. */
  parserNotified: boolean;
  chunkCount: number | null;
  batchSize: number | null;
  batches: number | null;
  batchesDone: number;
  lastAttemptError: { stage: Stage; code: string; message: string } | null;
  error: { code: string; message: string } | null;
  /**
   * The stage attempt that started (ParseStarted, EmbeddingStarted) and has no outcome yet, with
   * the progress made when it started. Still set when the next attempt starts means the process
   * running it died: see `interrupted`.
   */
  openAttempt: { stage: Stage; attempt: number; batchesDone: number; chunked: boolean } | null;
}

export const initialState: DocumentState = {
  version: 0,
  status: 'absent',
  ownerId: null,
  storageKey: null,
  mediaType: null,
  fileName: null,
  size: null,
  parsedCharacters: null,
  run: 0,
  parseAttempts: 0,
  embedAttempts: 0,
  parsedKey: null,
  parserJobId: null,
  parseDeadline: null,
  parserNotified: false,
  chunkCount: null,
  batchSize: null,
  batches: null,
  batchesDone: 0,
  lastAttemptError: null,
  error: null,
  openAttempt: null,
};

/** The code of a document whose stage attempt was cut short by the death of its worker process. */
export const WORKER_CRASHED = 'WORKER_CRASHED';

export type DocumentCommand =
  | ({ type: 'Upload' } & EventPayloads['DocumentUploaded'])
  | { type: 'StartParse'; run: number; parser: string }
  | ({ type: 'SubmitParse' } & EventPayloads['ParseSubmitted'])
  | {
      type: 'RecordParserCallback';
      /** The job the callback names; null when the delivery names none (then the current job is meant: LlamaParse v1's result form did so, and old events keep it). */
      providerJobId: string | null;
      /** The run the callback's credential was issued for; null when authenticated otherwise (LC-Signature). */
      run: number | null;
      eventId: string;
      eventType: string;
    }
  | ({ type: 'CompleteParse' } & EventPayloads['ParseSucceeded'])
  | { type: 'StartEmbedding'; run: number }
  | { type: 'RecordChunks'; run: number; chunkCount: number; tokenCount: number; batchSize: number }
  | { type: 'StoreEmbeddingBatch'; run: number; batch: number; model: string; dimensions: number }
  | { type: 'MarkReady'; run: number }
  | { type: 'RecordAttemptFailure'; run: number; stage: Stage; code: string; message: string }
  | { type: 'Fail'; run: number; stage: Stage | null; code: string; message: string }
  | { type: 'Reprocess'; reason: string | null }
  | { type: 'Delete'; reason: string | null };

export type DomainErrorCode = 'DOCUMENT_NOT_FOUND' | 'DOCUMENT_EXISTS' | 'ILLEGAL_TRANSITION' | 'STALE_RUN' | 'INVALID_COMMAND' | 'PROVIDER_JOB_NOT_RECORDED';

/** A command the current state does not allow. HTTP 404/409 at the edge, a skip in the worker. */
export class DomainError extends Error {
  constructor(
    readonly code: DomainErrorCode,
    message: string,
    readonly status: DocumentState['status'],
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

const ACTIVE: ReadonlySet<DocumentState['status']> = new Set(['uploaded', 'parsing', 'parsed', 'embedding']);

function reject(state: DocumentState, code: DomainErrorCode, message: string): never {
  throw new DomainError(code, message, state.status);
}

function requireStatus(state: DocumentState, command: DocumentCommand, allowed: readonly DocumentState['status'][]): void {
  if (state.status === 'absent' || state.status === 'deleted') reject(state, 'DOCUMENT_NOT_FOUND', 'document not found');
  if (!allowed.includes(state.status)) {
    reject(state, 'ILLEGAL_TRANSITION', `${command.type} is not allowed while the document is ${state.status}`);
  }
}

function requireRun(state: DocumentState, run: number): void {
  if (run !== state.run) reject(state, 'STALE_RUN', `run ${run} is not the current run ${state.run}`);
}

/**
 * The events that settle an attempt of `stage` that started and never ended: its process died
 * under it (killed, out of memory, a crash), so pg-boss handed the job out again. The attempt is
 * recorded as failed with WORKER_CRASHED. A poison document must not kill worker after worker,
 * so unless the dead attempt had made progress (chunks recorded or embedding batches stored,
 * which a document that kills its worker does not get to), the document fails at once. Returns
 * null when there is no such attempt.
 */
function interrupted(state: DocumentState, stage: Stage): { events: NewEvent[]; resume: boolean } | null {
  const open = state.openAttempt;
  if (open === null || open.stage !== stage) return null;
  const verb = stage === 'parse' ? 'parsing' : 'embedding';
  const progressed = stage === 'embed' && (state.batchesDone > open.batchesDone || (state.chunkCount !== null && !open.chunked));
  const lost: NewEvent = {
    type: 'StageAttemptFailed',
    data: {
      run: state.run,
      stage,
      attempt: open.attempt,
      code: WORKER_CRASHED,
      message: `${stage} attempt ${open.attempt} never finished: the worker process died while ${verb} this document${progressed ? '; it resumes after the last stored batch' : ''}`,
    },
  };
  if (progressed) return { events: [lost], resume: true };
  return {
    resume: false,
    events: [
      lost,
      {
        type: 'DocumentFailed',
        data: {
          run: state.run,
          stage,
          code: WORKER_CRASHED,
          message: `the worker process died while ${verb} this document (attempt ${open.attempt}); it is not retried, because the document may be what killed it. Reprocess it to try again`,
        },
      },
    ],
  };
}

export function decide(command: DocumentCommand, state: DocumentState): NewEvent[] {
  switch (command.type) {
    case 'Upload': {
      if (state.status !== 'absent') reject(state, 'DOCUMENT_EXISTS', 'document already exists');
      const { type: _t, ...data } = command;
      return [{ type: 'DocumentUploaded', data }];
    }
    case 'StartParse':
      requireStatus(state, command, ['uploaded', 'parsing']);
      requireRun(state, command.run);
      // A remote job already runs for this run: a retried parse job must not submit again.
      if (state.parserJobId !== null) reject(state, 'ILLEGAL_TRANSITION', `run ${command.run} is already submitted to the parser`);
      {
        const crash = interrupted(state, 'parse');
        if (crash && !crash.resume) return crash.events;
        return [...(crash?.events ?? []), { type: 'ParseStarted', data: { run: command.run, attempt: state.parseAttempts + 1, parser: command.parser } }];
      }
    case 'SubmitParse': {
      requireStatus(state, command, ['parsing']);
      requireRun(state, command.run);
      if (state.parserJobId !== null) reject(state, 'ILLEGAL_TRANSITION', `run ${command.run} is already submitted to the parser`);
      const { type: _t, ...data } = command;
      return [{ type: 'ParseSubmitted', data }];
    }
    case 'RecordParserCallback': {
      requireStatus(state, command, ['parsing']);
      if (command.run !== null) requireRun(state, command.run);
      // The provider can finish (a cache hit) before the worker has recorded the job it was
      // given: the webhook must be retried, not dropped.
      if (state.parserJobId === null) reject(state, 'PROVIDER_JOB_NOT_RECORDED', 'the provider job of the current run is not recorded yet');
      if (command.providerJobId !== null && state.parserJobId !== command.providerJobId) {
        reject(state, 'STALE_RUN', `provider job ${command.providerJobId} is not the current job (${state.parserJobId})`);
      }
      if (state.parserNotified) reject(state, 'ILLEGAL_TRANSITION', `a callback for provider job ${state.parserJobId} is already recorded`);
      return [{
        type: 'ParserCallbackReceived',
        data: { run: state.run, providerJobId: state.parserJobId, eventId: command.eventId, eventType: command.eventType },
      }];
    }
    case 'CompleteParse': {
      requireStatus(state, command, ['parsing']);
      requireRun(state, command.run);
      const { type: _t, ...data } = command;
      return [{ type: 'ParseSucceeded', data }];
    }
    case 'StartEmbedding': {
      requireStatus(state, command, ['parsed', 'embedding']);
      requireRun(state, command.run);
      const crash = interrupted(state, 'embed');
      if (crash && !crash.resume) return crash.events;
      return [...(crash?.events ?? []), { type: 'EmbeddingStarted', data: { run: command.run, attempt: state.embedAttempts + 1 } }];
    }
    case 'RecordChunks': {
      requireStatus(state, command, ['embedding']);
      requireRun(state, command.run);
      if (state.chunkCount !== null) reject(state, 'ILLEGAL_TRANSITION', 'the document is already chunked for this run');
      if (command.chunkCount < 1 || command.batchSize < 1) reject(state, 'INVALID_COMMAND', 'chunkCount and batchSize must be positive');
      const batches = Math.ceil(command.chunkCount / command.batchSize);
      return [{ type: 'DocumentChunked', data: { run: command.run, chunkCount: command.chunkCount, tokenCount: command.tokenCount, batchSize: command.batchSize, batches } }];
    }
    case 'StoreEmbeddingBatch': {
      requireStatus(state, command, ['embedding']);
      requireRun(state, command.run);
      if (state.chunkCount === null || state.batchSize === null || state.batches === null) {
        reject(state, 'ILLEGAL_TRANSITION', 'the document has not been chunked');
      }
      // Batches are stored in order, each exactly once: a retried job resumes at batchesDone.
      if (command.batch >= state.batches) reject(state, 'ILLEGAL_TRANSITION', 'all batches are already stored');
      if (command.batch !== state.batchesDone) {
        reject(state, 'ILLEGAL_TRANSITION', `batch ${command.batch} is not the next batch (${state.batchesDone})`);
      }
      const fromChunk = command.batch * state.batchSize;
      const toChunk = Math.min(fromChunk + state.batchSize, state.chunkCount) - 1;
      return [{ type: 'EmbeddingBatchStored', data: { run: command.run, batch: command.batch, fromChunk, toChunk, model: command.model, dimensions: command.dimensions } }];
    }
    case 'MarkReady':
      requireStatus(state, command, ['embedding']);
      requireRun(state, command.run);
      if (state.batches === null || state.batchesDone !== state.batches) {
        reject(state, 'ILLEGAL_TRANSITION', `only ${state.batchesDone} of ${state.batches ?? '?'} batches are stored`);
      }
      return [{ type: 'DocumentReady', data: { run: command.run, chunkCount: state.chunkCount ?? 0 } }];
    case 'RecordAttemptFailure':
      requireStatus(state, command, [...ACTIVE]);
      requireRun(state, command.run);
      return [{
        type: 'StageAttemptFailed',
        data: {
          run: command.run,
          stage: command.stage,
          attempt: command.stage === 'parse' ? state.parseAttempts : state.embedAttempts,
          code: command.code,
          message: command.message,
        },
      }];
    case 'Fail':
      requireStatus(state, command, [...ACTIVE]);
      requireRun(state, command.run);
      return [{ type: 'DocumentFailed', data: { run: command.run, stage: command.stage, code: command.code, message: command.message } }];
    case 'Reprocess':
      requireStatus(state, command, ['failed', 'ready']);
      return [{ type: 'ReprocessRequested', data: { run: state.run + 1, reason: command.reason } }];
    case 'Delete':
      requireStatus(state, command, ['uploaded', 'parsing', 'parsed', 'embedding', 'ready', 'failed']);
      return [{ type: 'DocumentDeleted', data: { reason: command.reason } }];
  }
}

export function evolve(state: DocumentState, event: NewEvent): DocumentState {
  const version = state.version + 1;
  switch (event.type) {
    case 'DocumentUploaded':
      return {
        ...initialState,
        version,
        status: 'uploaded',
        ownerId: event.data.ownerId,
        storageKey: event.data.storageKey,
        mediaType: event.data.mediaType,
        fileName: event.data.fileName,
        size: event.data.size,
        run: 1,
      };
    case 'ParseStarted':
      return {
        ...state,
        version,
        status: 'parsing',
        parseAttempts: event.data.attempt,
        openAttempt: { stage: 'parse', attempt: event.data.attempt, batchesDone: 0, chunked: false },
      };
    case 'ParseSubmitted':
      // The attempt's work is handed to the remote parser: it ended here.
      return { ...state, version, parserJobId: event.data.providerJobId, parseDeadline: event.data.deadline, parserNotified: false, openAttempt: null };
    case 'ParserCallbackReceived':
      return { ...state, version, parserNotified: true };
    case 'ParseSucceeded':
      return { ...state, version, status: 'parsed', parsedKey: event.data.parsedKey, parsedCharacters: event.data.characters, lastAttemptError: null, openAttempt: null };
    case 'EmbeddingStarted':
      return {
        ...state,
        version,
        status: 'embedding',
        embedAttempts: event.data.attempt,
        openAttempt: { stage: 'embed', attempt: event.data.attempt, batchesDone: state.batchesDone, chunked: state.chunkCount !== null },
      };
    case 'StageAttemptFailed':
      return { ...state, version, lastAttemptError: { stage: event.data.stage, code: event.data.code, message: event.data.message }, openAttempt: null };
    case 'DocumentChunked':
      return { ...state, version, chunkCount: event.data.chunkCount, batchSize: event.data.batchSize, batches: event.data.batches, batchesDone: 0 };
    case 'EmbeddingBatchStored':
      return { ...state, version, batchesDone: event.data.batch + 1 };
    case 'DocumentReady':
      return { ...state, version, status: 'ready', lastAttemptError: null, openAttempt: null };
    case 'DocumentFailed':
      return { ...state, version, status: 'failed', error: { code: event.data.code, message: event.data.message }, openAttempt: null };
    case 'ReprocessRequested':
      return {
        ...initialState,
        version,
        status: 'uploaded',
        ownerId: state.ownerId,
        storageKey: state.storageKey,
        mediaType: state.mediaType,
        fileName: state.fileName,
        size: state.size,
        run: event.data.run,
      };
    case 'DocumentDeleted':
      return { ...state, version, status: 'deleted' };
  }
}

export function foldDocument(events: readonly NewEvent[], from: DocumentState = initialState): DocumentState {
  return events.reduce(evolve, from);
}
