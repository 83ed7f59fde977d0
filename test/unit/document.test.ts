// The document aggregate, without a database: decide(command, state) -> events and
// evolve(state, event) -> state, the happy path event by event, retries, failures, reprocess,
// delete, and every (state, command) pair of the transition table.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { NewEvent } from '../../src/events/catalog.ts';
import {
  decide,
  DomainError,
  evolve,
  foldDocument,
  initialState,
  type DocumentCommand,
  type DocumentState,
  type DomainErrorCode,
} from '../../src/documents/document.ts';

const UPLOAD = {
  type: 'Upload',
  ownerId: 'user-1',
  fileName: 'report.pdf',
  mediaType: 'application/pdf',
  size: 4096,
  sha256: 'a'.repeat(64),
  storageKey: 'documents/d1/original',
  idempotencyKey: 'key-1',
} as const satisfies DocumentCommand;

const PARSED = (run: number) =>
  ({ type: 'CompleteParse', run, parsedKey: `documents/d1/runs/${run}/parsed.md`, pages: 3, characters: 1200, sha256: 'b'.repeat(64) }) as const satisfies DocumentCommand;

/** decide + evolve, asserting that decide leaves its input untouched. */
function step(state: DocumentState, command: DocumentCommand): { events: NewEvent[]; state: DocumentState } {
  const before = structuredClone(state);
  const events = decide(command, state);
  assert.deepEqual(state, before, 'decide must not mutate the state');
  const next = foldDocument(events, state);
  assert.deepEqual(state, before, 'evolve must not mutate the state');
  return { events, state: next };
}

function run(commands: readonly DocumentCommand[], from: DocumentState = initialState): DocumentState {
  return commands.reduce((state, command) => step(state, command).state, from);
}

function assertDomainError(fn: () => unknown, code: DomainErrorCode, status?: DocumentState['status']): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DomainError, `expected a DomainError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (status !== undefined) assert.equal(err.status, status);
    return true;
  });
}

// Reachable states, each built through decide/evolve only.
const uploaded = run([UPLOAD]);
const parsing = run([{ type: 'StartParse', run: 1, parser: 'local' }], uploaded);
const parsed = run([PARSED(1)], parsing);
const embedding = run([{ type: 'StartEmbedding', run: 1 }], parsed);
/** 10 chunks in batches of 4: 3 batches, none stored. */
const chunked = run([{ type: 'RecordChunks', run: 1, chunkCount: 10, tokenCount: 2000, batchSize: 4 }], embedding);
const partlyStored = run([{ type: 'StoreEmbeddingBatch', run: 1, batch: 0, model: 'local', dimensions: 8 }], chunked);
const allStored = run(
  [
    { type: 'StoreEmbeddingBatch', run: 1, batch: 1, model: 'local', dimensions: 8 },
    { type: 'StoreEmbeddingBatch', run: 1, batch: 2, model: 'local', dimensions: 8 },
  ],
  partlyStored,
);
const ready = run([{ type: 'MarkReady', run: 1 }], allStored);
const failed = run([{ type: 'Fail', run: 1, stage: 'parse', code: 'UNPARSEABLE', message: 'not a pdf' }], parsing);
const deleted = run([{ type: 'Delete', reason: null }], uploaded);

describe('happy path', () => {
  test('Upload -> StartParse -> CompleteParse -> StartEmbedding -> RecordChunks -> batches -> MarkReady', () => {
    let state = initialState;
    const expectStep = (command: DocumentCommand, events: NewEvent[], expected: DocumentState) => {
      const result = step(state, command);
      assert.deepEqual(result.events, events, `events of ${command.type}`);
      assert.deepEqual(result.state, expected, `state after ${command.type}`);
      state = result.state;
    };

    const { type: _t, ...uploadedData } = UPLOAD;
    const afterUpload: DocumentState = {
      ...initialState,
      version: 1,
      status: 'uploaded',
      ownerId: 'user-1',
      storageKey: 'documents/d1/original',
      mediaType: 'application/pdf',
      fileName: 'report.pdf',
      size: 4096,
      run: 1,
    };
    expectStep(UPLOAD, [{ type: 'DocumentUploaded', data: uploadedData }], afterUpload);

    const afterParseStart: DocumentState = {
      ...afterUpload,
      version: 2,
      status: 'parsing',
      parseAttempts: 1,
      openAttempt: { stage: 'parse', attempt: 1, batchesDone: 0, chunked: false },
    };
    expectStep({ type: 'StartParse', run: 1, parser: 'local' }, [{ type: 'ParseStarted', data: { run: 1, attempt: 1, parser: 'local' } }], afterParseStart);

    const afterParsed: DocumentState = {
      ...afterParseStart,
      version: 3,
      status: 'parsed',
      parsedKey: 'documents/d1/runs/1/parsed.md',
      parsedCharacters: 1200,
      openAttempt: null,
    };
    expectStep(
      PARSED(1),
      [{ type: 'ParseSucceeded', data: { run: 1, parsedKey: 'documents/d1/runs/1/parsed.md', pages: 3, characters: 1200, sha256: 'b'.repeat(64) } }],
      afterParsed,
    );

    const afterEmbedStart: DocumentState = {
      ...afterParsed,
      version: 4,
      status: 'embedding',
      embedAttempts: 1,
      openAttempt: { stage: 'embed', attempt: 1, batchesDone: 0, chunked: false },
    };
    expectStep({ type: 'StartEmbedding', run: 1 }, [{ type: 'EmbeddingStarted', data: { run: 1, attempt: 1 } }], afterEmbedStart);

    const afterChunked: DocumentState = { ...afterEmbedStart, version: 5, chunkCount: 10, batchSize: 4, batches: 3, batchesDone: 0 };
    expectStep(
      { type: 'RecordChunks', run: 1, chunkCount: 10, tokenCount: 2000, batchSize: 4 },
      [{ type: 'DocumentChunked', data: { run: 1, chunkCount: 10, tokenCount: 2000, batchSize: 4, batches: 3 } }],
      afterChunked,
    );

    const ranges: [number, number][] = [[0, 3], [4, 7], [8, 9]];
    ranges.forEach(([fromChunk, toChunk], batch) => {
      expectStep(
        { type: 'StoreEmbeddingBatch', run: 1, batch, model: 'local', dimensions: 8 },
        [{ type: 'EmbeddingBatchStored', data: { run: 1, batch, fromChunk, toChunk, model: 'local', dimensions: 8 } }],
        { ...afterChunked, version: 6 + batch, batchesDone: batch + 1 },
      );
    });

    expectStep(
      { type: 'MarkReady', run: 1 },
      [{ type: 'DocumentReady', data: { run: 1, chunkCount: 10 } }],
      { ...afterChunked, version: 9, status: 'ready', batchesDone: 3, openAttempt: null },
    );
    assert.deepEqual(state, ready);
  });

  test('a chunk count that is a multiple of the batch size has no partial batch', () => {
    const s = run([{ type: 'RecordChunks', run: 1, chunkCount: 8, tokenCount: 100, batchSize: 4 }], embedding);
    assert.equal(s.batches, 2);
    const { events } = step(run([{ type: 'StoreEmbeddingBatch', run: 1, batch: 0, model: 'm', dimensions: 8 }], s), {
      type: 'StoreEmbeddingBatch', run: 1, batch: 1, model: 'm', dimensions: 8,
    });
    assert.deepEqual(events, [{ type: 'EmbeddingBatchStored', data: { run: 1, batch: 1, fromChunk: 4, toChunk: 7, model: 'm', dimensions: 8 } }]);
  });

  test('evolve counts versions from the state it is given', () => {
    const s = evolve({ ...uploaded }, { type: 'DocumentDeleted', data: { reason: 'x' } });
    assert.equal(s.version, uploaded.version + 1);
    assert.equal(s.status, 'deleted');
  });
});

describe('retries', () => {
  test('StartParse after a recorded failed attempt: attempt 2', () => {
    const failedOnce = run([{ type: 'RecordAttemptFailure', run: 1, stage: 'parse', code: 'TIMEOUT', message: 't' }], parsing);
    const { events, state } = step(failedOnce, { type: 'StartParse', run: 1, parser: 'local' });
    assert.deepEqual(events, [{ type: 'ParseStarted', data: { run: 1, attempt: 2, parser: 'local' } }]);
    assert.equal(state.status, 'parsing');
    assert.equal(state.parseAttempts, 2);
    assert.equal(state.version, failedOnce.version + 1);
  });

  test('StartEmbedding after a crash mid-embedding: the lost attempt is recorded and embedding resumes at batchesDone', () => {
    const { events, state } = step(partlyStored, { type: 'StartEmbedding', run: 1 });
    assert.equal(events.length, 2);
    assert.equal(events[0]!.type, 'StageAttemptFailed');
    assert.deepEqual({ ...events[0]!.data, message: undefined }, { run: 1, stage: 'embed', attempt: 1, code: 'WORKER_CRASHED', message: undefined });
    assert.match((events[0]!.data as { message: string }).message, /worker process died.*resumes after the last stored batch/);
    assert.deepEqual(events[1], { type: 'EmbeddingStarted', data: { run: 1, attempt: 2 } });
    assert.equal(state.status, 'embedding');
    assert.equal(state.embedAttempts, 2);
    assert.equal(state.batchesDone, 1);
    assert.equal(state.chunkCount, 10);
    assertDomainError(() => decide({ type: 'StoreEmbeddingBatch', run: 1, batch: 0, model: 'local', dimensions: 8 }, state), 'ILLEGAL_TRANSITION');
    assert.equal(step(state, { type: 'StoreEmbeddingBatch', run: 1, batch: 1, model: 'local', dimensions: 8 }).state.batchesDone, 2);
  });

  test('RecordAttemptFailure sets lastAttemptError; the next success clears it', () => {
    const { events, state } = step(parsing, { type: 'RecordAttemptFailure', run: 1, stage: 'parse', code: 'TIMEOUT', message: 'parser timed out' });
    assert.deepEqual(events, [{ type: 'StageAttemptFailed', data: { run: 1, stage: 'parse', attempt: 1, code: 'TIMEOUT', message: 'parser timed out' } }]);
    assert.deepEqual(state, {
      ...parsing,
      version: parsing.version + 1,
      lastAttemptError: { stage: 'parse', code: 'TIMEOUT', message: 'parser timed out' },
      openAttempt: null,
    });
    assert.equal(state.status, 'parsing', 'a failed attempt does not change the status');

    const retried = run([{ type: 'StartParse', run: 1, parser: 'local' }], state);
    assert.equal(retried.parseAttempts, 2);
    assert.deepEqual(retried.lastAttemptError, { stage: 'parse', code: 'TIMEOUT', message: 'parser timed out' });
    assert.equal(run([PARSED(1)], retried).lastAttemptError, null);
  });

  test('an embed attempt failure carries the embed attempt number; MarkReady clears it', () => {
    const { events, state } = step(partlyStored, { type: 'RecordAttemptFailure', run: 1, stage: 'embed', code: 'RATE_LIMITED', message: '429' });
    assert.deepEqual(events, [{ type: 'StageAttemptFailed', data: { run: 1, stage: 'embed', attempt: 1, code: 'RATE_LIMITED', message: '429' } }]);
    assert.deepEqual(state.lastAttemptError, { stage: 'embed', code: 'RATE_LIMITED', message: '429' });
    const done = run(
      [
        { type: 'StartEmbedding', run: 1 },
        { type: 'StoreEmbeddingBatch', run: 1, batch: 1, model: 'local', dimensions: 8 },
        { type: 'StoreEmbeddingBatch', run: 1, batch: 2, model: 'local', dimensions: 8 },
        { type: 'MarkReady', run: 1 },
      ],
      state,
    );
    assert.equal(done.status, 'ready');
    assert.equal(done.lastAttemptError, null);
  });
});

describe('an attempt whose worker died (no outcome recorded) is not handed out blindly again', () => {
  test('parse: the next StartParse records the lost attempt and fails the document with WORKER_CRASHED', () => {
    const { events, state } = step(parsing, { type: 'StartParse', run: 1, parser: 'local' });
    assert.deepEqual(events.map((e) => e.type), ['StageAttemptFailed', 'DocumentFailed']);
    assert.equal((events[0]!.data as { code: string }).code, 'WORKER_CRASHED');
    assert.equal((events[0]!.data as { attempt: number }).attempt, 1);
    assert.equal(state.status, 'failed');
    assert.equal(state.error?.code, 'WORKER_CRASHED');
    assert.match(state.error!.message, /worker process died while parsing this document \(attempt 1\).*Reprocess/);
    assert.equal(state.parseAttempts, 1, 'no new attempt was started');
    assert.equal(state.openAttempt, null);
  });

  test('embed without progress (nothing chunked or stored since it started): fails with WORKER_CRASHED', () => {
    const { events, state } = step(embedding, { type: 'StartEmbedding', run: 1 });
    assert.deepEqual(events.map((e) => e.type), ['StageAttemptFailed', 'DocumentFailed']);
    assert.equal(state.error?.code, 'WORKER_CRASHED');
    // Chunked by an earlier attempt, and this attempt stored nothing: no progress either.
    const resumedChunked = run([{ type: 'RecordAttemptFailure', run: 1, stage: 'embed', code: 'X', message: 'x' }, { type: 'StartEmbedding', run: 1 }], chunked);
    assert.deepEqual(decide({ type: 'StartEmbedding', run: 1 }, resumedChunked).map((e) => e.type), ['StageAttemptFailed', 'DocumentFailed']);
  });

  test('embed with progress (chunks recorded or a batch stored during the attempt): resumes', () => {
    assert.deepEqual(decide({ type: 'StartEmbedding', run: 1 }, chunked).map((e) => e.type), ['StageAttemptFailed', 'EmbeddingStarted']);
    assert.deepEqual(decide({ type: 'StartEmbedding', run: 1 }, partlyStored).map((e) => e.type), ['StageAttemptFailed', 'EmbeddingStarted']);
  });

  test('an attempt with an outcome is closed: failure recorded, parse submitted or succeeded, reprocess', () => {
    assert.equal(run([{ type: 'RecordAttemptFailure', run: 1, stage: 'parse', code: 'X', message: 'x' }], parsing).openAttempt, null);
    assert.equal(parsed.openAttempt, null);
    const submitted = run([{ type: 'SubmitParse', run: 1, parser: 'llamaparse', providerJobId: 'j', webhook: true, pollAfterSeconds: 60, deadline: new Date(0).toISOString() }], parsing);
    assert.equal(submitted.openAttempt, null);
    assert.equal(ready.openAttempt, null);
    assert.equal(run([{ type: 'Reprocess', reason: null }], failed).openAttempt, null);
  });
});

describe('failure', () => {
  const active: [string, DocumentState][] = [
    ['uploaded', uploaded],
    ['parsing', parsing],
    ['parsed', parsed],
    ['embedding', embedding],
    ['embedding (chunked, batches stored)', partlyStored],
  ];
  for (const [name, state] of active) {
    test(`Fail from ${name}`, () => {
      const stage = state.status === 'embedding' || state.status === 'parsed' ? 'embed' : 'parse';
      const { events, state: next } = step(state, { type: 'Fail', run: 1, stage, code: 'DEAD_LETTERED', message: 'retries exhausted' });
      assert.deepEqual(events, [{ type: 'DocumentFailed', data: { run: 1, stage, code: 'DEAD_LETTERED', message: 'retries exhausted' } }]);
      assert.deepEqual(next, { ...state, version: state.version + 1, status: 'failed', error: { code: 'DEAD_LETTERED', message: 'retries exhausted' }, openAttempt: null });
    });
  }

  test('Fail with no stage', () => {
    const { events } = step(uploaded, { type: 'Fail', run: 1, stage: null, code: 'UNSUPPORTED', message: 'no' });
    assert.deepEqual(events, [{ type: 'DocumentFailed', data: { run: 1, stage: null, code: 'UNSUPPORTED', message: 'no' } }]);
  });

  for (const [name, state] of [['ready', ready], ['failed', failed]] as const) {
    test(`Fail from ${name} is an illegal transition`, () => {
      assertDomainError(() => decide({ type: 'Fail', run: 1, stage: null, code: 'X', message: 'x' }, state), 'ILLEGAL_TRANSITION', name);
    });
  }
});

describe('reprocess', () => {
  const reset = (from: DocumentState, nextRun: number): DocumentState => ({
    ...initialState,
    version: from.version + 1,
    status: 'uploaded',
    ownerId: 'user-1',
    storageKey: 'documents/d1/original',
    mediaType: 'application/pdf',
    fileName: 'report.pdf',
    size: 4096,
    run: nextRun,
  });

  test('from failed: run 2, state reset', () => {
    const { events, state } = step(failed, { type: 'Reprocess', reason: 'try again' });
    assert.deepEqual(events, [{ type: 'ReprocessRequested', data: { run: 2, reason: 'try again' } }]);
    assert.deepEqual(state, reset(failed, 2));
    assert.equal(state.error, null);
  });

  test('from ready: run 2, chunks, batches and attempts reset; twice: run 3', () => {
    const { events, state } = step(ready, { type: 'Reprocess', reason: null });
    assert.deepEqual(events, [{ type: 'ReprocessRequested', data: { run: 2, reason: null } }]);
    assert.deepEqual(state, reset(ready, 2));

    // The whole path again in run 2, with attempts counted from 1.
    const again = run(
      [
        { type: 'StartParse', run: 2, parser: 'local' },
        PARSED(2),
        { type: 'StartEmbedding', run: 2 },
        { type: 'RecordChunks', run: 2, chunkCount: 1, tokenCount: 5, batchSize: 4 },
        { type: 'StoreEmbeddingBatch', run: 2, batch: 0, model: 'local', dimensions: 8 },
        { type: 'MarkReady', run: 2 },
      ],
      state,
    );
    assert.equal(again.status, 'ready');
    assert.equal(again.parseAttempts, 1);
    assert.equal(again.embedAttempts, 1);
    assert.equal(again.chunkCount, 1);
    assert.equal(again.parsedKey, 'documents/d1/runs/2/parsed.md');

    const third = step(again, { type: 'Reprocess', reason: null });
    assert.deepEqual(third.events, [{ type: 'ReprocessRequested', data: { run: 3, reason: null } }]);
    assert.equal(third.state.run, 3);
  });

  test('commands of the previous run are stale after a reprocess', () => {
    const reprocessed = run([{ type: 'Reprocess', reason: null }], failed);
    assertDomainError(() => decide({ type: 'StartParse', run: 1, parser: 'local' }, reprocessed), 'STALE_RUN', 'uploaded');
    assert.equal(step(reprocessed, { type: 'StartParse', run: 2, parser: 'local' }).state.parseAttempts, 1);
  });

  const others: [string, DocumentState][] = [
    ['uploaded', uploaded], ['parsing', parsing], ['parsed', parsed], ['embedding', embedding], ['embedding (all batches stored)', allStored],
  ];
  for (const [name, state] of others) {
    test(`rejected while ${name}`, () => {
      assertDomainError(() => decide({ type: 'Reprocess', reason: null }, state), 'ILLEGAL_TRANSITION', state.status);
    });
  }
  test('rejected for an absent or deleted document', () => {
    assertDomainError(() => decide({ type: 'Reprocess', reason: null }, initialState), 'DOCUMENT_NOT_FOUND', 'absent');
    assertDomainError(() => decide({ type: 'Reprocess', reason: null }, deleted), 'DOCUMENT_NOT_FOUND', 'deleted');
  });
});

describe('delete', () => {
  const deletable: [string, DocumentState][] = [
    ['uploaded', uploaded], ['parsing', parsing], ['parsed', parsed], ['embedding', partlyStored], ['ready', ready], ['failed', failed],
  ];
  for (const [name, state] of deletable) {
    test(`from ${name}`, () => {
      const { events, state: next } = step(state, { type: 'Delete', reason: 'user request' });
      assert.deepEqual(events, [{ type: 'DocumentDeleted', data: { reason: 'user request' } }]);
      assert.deepEqual(next, { ...state, version: state.version + 1, status: 'deleted' });
    });
  }
  test('not from deleted or absent', () => {
    assertDomainError(() => decide({ type: 'Delete', reason: null }, deleted), 'DOCUMENT_NOT_FOUND', 'deleted');
    assertDomainError(() => decide({ type: 'Delete', reason: null }, initialState), 'DOCUMENT_NOT_FOUND', 'absent');
  });
});

describe('illegal commands', () => {
  test('CompleteParse while uploaded', () => {
    assertDomainError(() => decide(PARSED(1), uploaded), 'ILLEGAL_TRANSITION', 'uploaded');
  });
  test('MarkReady before all batches are stored', () => {
    assertDomainError(() => decide({ type: 'MarkReady', run: 1 }, embedding), 'ILLEGAL_TRANSITION');
    assertDomainError(() => decide({ type: 'MarkReady', run: 1 }, chunked), 'ILLEGAL_TRANSITION');
    assertDomainError(() => decide({ type: 'MarkReady', run: 1 }, partlyStored), 'ILLEGAL_TRANSITION');
  });
  test('StoreEmbeddingBatch before chunking, out of order, or twice', () => {
    const batch = (n: number) => ({ type: 'StoreEmbeddingBatch', run: 1, batch: n, model: 'local', dimensions: 8 }) as const;
    assertDomainError(() => decide(batch(0), embedding), 'ILLEGAL_TRANSITION');
    assertDomainError(() => decide(batch(1), chunked), 'ILLEGAL_TRANSITION');
    assertDomainError(() => decide(batch(2), partlyStored), 'ILLEGAL_TRANSITION');
    assertDomainError(() => decide(batch(0), partlyStored), 'ILLEGAL_TRANSITION');
    assertDomainError(() => decide(batch(-1), chunked), 'ILLEGAL_TRANSITION');
  });
  test(
    'StoreEmbeddingBatch past the last batch',
    () => {
      const s = allStored;
      assert.equal(s.batches, 3);
      assertDomainError(() => decide({ type: 'StoreEmbeddingBatch', run: 1, batch: 3, model: 'local', dimensions: 8 }, s), 'ILLEGAL_TRANSITION');
    },
  );
  test('RecordChunks twice in one run', () => {
    assertDomainError(() => decide({ type: 'RecordChunks', run: 1, chunkCount: 10, tokenCount: 1, batchSize: 4 }, chunked), 'ILLEGAL_TRANSITION');
  });
  test('RecordChunks with no chunks or a zero batch size is an invalid command', () => {
    assertDomainError(() => decide({ type: 'RecordChunks', run: 1, chunkCount: 0, tokenCount: 0, batchSize: 4 }, embedding), 'INVALID_COMMAND');
    assertDomainError(() => decide({ type: 'RecordChunks', run: 1, chunkCount: 3, tokenCount: 9, batchSize: 0 }, embedding), 'INVALID_COMMAND');
  });
  test('a second Upload of the same document', () => {
    assertDomainError(() => decide(UPLOAD, uploaded), 'DOCUMENT_EXISTS', 'uploaded');
    assertDomainError(() => decide(UPLOAD, deleted), 'DOCUMENT_EXISTS', 'deleted');
  });
  test('STALE_RUN for every run-carrying command in a state that allows it', () => {
    const cases: [DocumentCommand, DocumentState][] = [
      [{ type: 'StartParse', run: 2, parser: 'local' }, uploaded],
      [PARSED(2), parsing],
      [{ type: 'StartEmbedding', run: 2 }, parsed],
      [{ type: 'RecordChunks', run: 2, chunkCount: 1, tokenCount: 1, batchSize: 1 }, embedding],
      [{ type: 'StoreEmbeddingBatch', run: 0, batch: 0, model: 'local', dimensions: 8 }, chunked],
      [{ type: 'MarkReady', run: 2 }, allStored],
      [{ type: 'RecordAttemptFailure', run: 2, stage: 'parse', code: 'X', message: 'x' }, parsing],
      [{ type: 'Fail', run: 2, stage: 'parse', code: 'X', message: 'x' }, parsing],
    ];
    for (const [command, state] of cases) assertDomainError(() => decide(command, state), 'STALE_RUN', state.status);
  });
});

describe('transition table: every (state, command) pair', () => {
  const states: Record<string, DocumentState> = {
    absent: initialState,
    uploaded,
    parsing,
    parsed,
    'embedding (not chunked)': embedding,
    'embedding (chunked)': chunked,
    'embedding (all stored)': allStored,
    ready,
    failed,
    deleted,
  };
  const commands: Record<string, DocumentCommand> = {
    Upload: UPLOAD,
    StartParse: { type: 'StartParse', run: 1, parser: 'local' },
    CompleteParse: PARSED(1),
    StartEmbedding: { type: 'StartEmbedding', run: 1 },
    RecordChunks: { type: 'RecordChunks', run: 1, chunkCount: 5, tokenCount: 50, batchSize: 2 },
    StoreEmbeddingBatch: { type: 'StoreEmbeddingBatch', run: 1, batch: 0, model: 'local', dimensions: 8 },
    MarkReady: { type: 'MarkReady', run: 1 },
    RecordAttemptFailure: { type: 'RecordAttemptFailure', run: 1, stage: 'parse', code: 'X', message: 'x' },
    Fail: { type: 'Fail', run: 1, stage: 'parse', code: 'X', message: 'x' },
    Reprocess: { type: 'Reprocess', reason: null },
    Delete: { type: 'Delete', reason: null },
  };
  const NF = 'DOCUMENT_NOT_FOUND';
  const IL = 'ILLEGAL_TRANSITION';
  const EX = 'DOCUMENT_EXISTS';
  // Columns: absent, uploaded, parsing, parsed, embedding (not chunked), embedding (chunked),
  // embedding (all stored), ready, failed, deleted. A cell is the event type or the error code.
  const table: Record<string, string[]> = {
    Upload: ['DocumentUploaded', EX, EX, EX, EX, EX, EX, EX, EX, EX],
    // An attempt still open when the next one starts died with its worker (see the describe above).
    StartParse: [NF, 'ParseStarted', 'StageAttemptFailed+DocumentFailed', IL, IL, IL, IL, IL, IL, NF],
    CompleteParse: [NF, IL, 'ParseSucceeded', IL, IL, IL, IL, IL, IL, NF],
    StartEmbedding: [NF, IL, IL, 'EmbeddingStarted', 'StageAttemptFailed+DocumentFailed', 'StageAttemptFailed+EmbeddingStarted', 'StageAttemptFailed+EmbeddingStarted', IL, IL, NF],
    RecordChunks: [NF, IL, IL, IL, 'DocumentChunked', IL, IL, IL, IL, NF],
    StoreEmbeddingBatch: [NF, IL, IL, IL, IL, 'EmbeddingBatchStored', IL, IL, IL, NF],
    MarkReady: [NF, IL, IL, IL, IL, IL, 'DocumentReady', IL, IL, NF],
    RecordAttemptFailure: [NF, 'StageAttemptFailed', 'StageAttemptFailed', 'StageAttemptFailed', 'StageAttemptFailed', 'StageAttemptFailed', 'StageAttemptFailed', IL, IL, NF],
    Fail: [NF, 'DocumentFailed', 'DocumentFailed', 'DocumentFailed', 'DocumentFailed', 'DocumentFailed', 'DocumentFailed', IL, IL, NF],
    Reprocess: [NF, IL, IL, IL, IL, IL, IL, 'ReprocessRequested', 'ReprocessRequested', NF],
    Delete: [NF, 'DocumentDeleted', 'DocumentDeleted', 'DocumentDeleted', 'DocumentDeleted', 'DocumentDeleted', 'DocumentDeleted', 'DocumentDeleted', 'DocumentDeleted', NF],
  };
  const stateNames = Object.keys(states);

  test('the table covers every command and state', () => {
    assert.deepEqual(Object.keys(table).sort(), Object.keys(commands).sort());
    for (const row of Object.values(table)) assert.equal(row.length, stateNames.length);
  });

  for (const [commandName, command] of Object.entries(commands)) {
    for (const [i, stateName] of stateNames.entries()) {
      const expected = table[commandName]![i]!;
      const state = states[stateName]!;
      test(`${commandName} while ${stateName} -> ${expected}`, () => {
        if (/^[A-Z_]+$/.test(expected)) {
          assertDomainError(() => decide(command, state), expected as DomainErrorCode, state.status);
        } else {
          const { events, state: next } = step(state, command);
          assert.deepEqual(events.map((e) => e.type), expected.split('+'));
          assert.equal(next.version, state.version + events.length);
        }
      });
    }
  }
});
