// The remote-parse stages against a real Postgres and pg-boss, with a scripted AsyncParser
// standing in for the provider (the pipeline is under test here; the LlamaParse adapter has its
// own suites against the fake): polling backoff with stable job ids, a deadline that grows with
// the document's pages, status-route outages, permanent provider errors, partial results, stale
// jobs, and no second submission on a retried job.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { execute } from '../../src/documents/commands.ts';
import { runParseResult, runParseStage, type PipelineDeps } from '../../src/documents/pipeline.ts';
import { createByteBudget } from '../../src/util/byte-budget.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import { createPageCounter } from '../../src/providers/parser/pages.ts';
import { countPdfPages } from '../../src/providers/parser/pdf.ts';
import { DEFAULT_PARSER_LIMITS, ProviderError, type AsyncParser, type MediaType, type ParsedDocument, type ProviderJob } from '../../src/providers/types.ts';
import { stableJobId } from '../../src/queue/jobs.ts';
import { startStack, type TestStack } from '../helpers/stack.ts';

const stack: TestStack = await startStack({ worker: false });
const log = createLogger('silent');
const meta = { correlationId: randomUUID(), causationId: null, actor: 'test', requestId: null };

interface Script {
  status: () => ProviderJob | Promise<ProviderJob>;
  submits: number;
  result?: ParsedDocument;
  /** The page counts the pipeline asked a time limit for. */
  pages?: number[];
}

function scriptedParser(script: Script): AsyncParser {
  return {
    kind: 'llamaparse',
    mode: 'async',
    async submit() {
      script.submits++;
      return { jobId: randomUUID() };
    },
    async status() {
      return script.status();
    },
    async result() {
      return script.result ?? { markdown: '# done\n\nParsed remotely.', pages: 1 };
    },
    timeLimitSeconds(pages: number) {
      script.pages?.push(pages);
      return 1800 + 60 * pages;
    },
  };
}

function depsWith(parser: AsyncParser): PipelineDeps {
  return {
    ctx: stack.runtime.ctx,
    storage: stack.runtime.providers.storage,
    parser,
    chunker: stack.runtime.providers.chunker,
    pages: stack.runtime.providers.pages,
    embedder: createLocalEmbedder({ dimensions: 16 }),
    chunking: { maxTokens: 64, overlapTokens: 8 },
    embedBatchSize: 4,
    memory: createByteBudget(64 * 1024 * 1024),
    remoteParse: { webhookBaseUrl: undefined, webhookSecret: undefined, pollAfterSeconds: 1 },
  };
}

/** An uploaded document (bytes in storage), parse started and submitted as `jobId`. */
async function submitted(jobId: string, deadline = new Date(Date.now() + 3600_000)): Promise<string> {
  const id = randomUUID();
  const ctx = stack.runtime.ctx;
  const key = `documents/${id}/original`;
  const stored = await stack.runtime.providers.storage.put(key, Readable.from([Buffer.from('hello remote parser')]));
  await execute(ctx, id, { type: 'Upload', ownerId: 'user-a', fileName: 'a.txt', mediaType: 'text/plain', size: stored.size, sha256: stored.sha256, storageKey: key, idempotencyKey: null }, meta);
  await execute(ctx, id, { type: 'StartParse', run: 1, parser: 'llamaparse' }, meta);
  await execute(ctx, id, { type: 'SubmitParse', run: 1, parser: 'llamaparse', providerJobId: jobId, webhook: false, pollAfterSeconds: 1, deadline: deadline.toISOString() }, meta);
  return id;
}

const job = (documentId: string, providerJobId: string, poll: number | null) => ({
  documentId, run: 1, correlationId: meta.correlationId, causationId: randomUUID(), requestId: null, providerJobId, poll,
});

async function statusOf(id: string) {
  const [row] = await stack.db.sql<{ status: string; error_code: string | null; error_message: string | null }[]>`
    select status, error_code, error_message from docpipe.document_status where id = ${id}`;
  return row!;
}

async function pollJobs(id: string) {
  return stack.db.sql<{ id: string; data: any; delay: number }[]>`
    select id, data, extract(epoch from start_after - created_on)::float as delay
    from pgboss.job where name = 'docpipe-parse-result' and data->>'documentId' = ${id} order by created_on`;
}

const pending = (id: string): ProviderJob => ({ id, status: 'PENDING', errorCode: null, errorMessage: null });

describe('runParseResult', () => {
  test('still PENDING: the next poll is scheduled once, with backoff, under a stable id', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    const deps = depsWith(scriptedParser({ status: () => pending(providerJobId), submits: 0 }));
    assert.equal(await runParseResult(deps, job(id, providerJobId, 3), { log }), 'pending');
    // The same check run twice (a retried job) schedules nothing new.
    assert.equal(await runParseResult(deps, job(id, providerJobId, 3), { log }), 'pending');
    const next = (await pollJobs(id)).filter((j) => j.data.poll === 4);
    assert.equal(next.length, 1);
    assert.equal(next[0]!.id, stableJobId(id, 1, providerJobId, 'poll', 4));
    assert.ok(Math.abs(next[0]!.delay - 8) < 1.5, `delay ${next[0]!.delay} s, expected 2^3`);
    // Far along the chain the delay is capped at 60 s.
    await runParseResult(deps, job(id, providerJobId, 12), { log });
    const capped = (await pollJobs(id)).find((j) => j.data.poll === 13)!;
    assert.ok(Math.abs(capped.delay - 60) < 1.5, `delay ${capped.delay} s, expected 60`);
    assert.equal((await statusOf(id)).status, 'parsing');
  });

  test('a webhook-sent check that finds the job running leaves it to the polling chain', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    const before = (await pollJobs(id)).length;
    const deps = depsWith(scriptedParser({ status: () => pending(providerJobId), submits: 0 }));
    assert.equal(await runParseResult(deps, job(id, providerJobId, null), { log }), 'pending');
    assert.equal((await pollJobs(id)).length, before);
  });

  test('past the deadline: the document fails with PARSE_TIMEOUT and the provider job is cancelled', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId, new Date(Date.now() - 1000));
    const cancelled: string[] = [];
    const deps = depsWith({ ...scriptedParser({ status: () => pending(providerJobId), submits: 0 }), cancel: async (jobId: string) => void cancelled.push(jobId) });
    assert.equal(await runParseResult(deps, job(id, providerJobId, 20), { log }), 'failed');
    const row = await statusOf(id);
    assert.equal(row.status, 'failed');
    assert.equal(row.error_code, 'PARSE_TIMEOUT');
    assert.match(row.error_message!, /did not finish by its deadline/);
    assert.deepEqual(cancelled, [providerJobId], 'the job given up on is cancelled at the provider');
  });

  test('a status-route outage while polling: poll again later, the document does not fail', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    const deps = depsWith(scriptedParser({ status: () => { throw new ProviderError('PARSER_UNAVAILABLE', 'HTTP 503', false, { status: 503 }); }, submits: 0 }));
    assert.equal(await runParseResult(deps, job(id, providerJobId, 0), { log }), 'pending');
    assert.equal((await statusOf(id)).status, 'parsing');
    assert.ok((await pollJobs(id)).some((j) => j.data.poll === 1));
    const events = await stack.db.sql`select 1 from docpipe.events where stream_id = ${id} and type = 'StageAttemptFailed'`;
    assert.equal(events.length, 0);
  });

  test('a permanent provider error fails the document with its code', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    const deps = depsWith(scriptedParser({ status: () => { throw new ProviderError('PARSER_AUTH_FAILED', 'LlamaParse rejected the API key (HTTP 401): check LLAMAPARSE_API_KEY', true, { status: 401 }); }, submits: 0 }));
    assert.equal(await runParseResult(deps, job(id, providerJobId, 0), { log }), 'failed');
    assert.equal((await statusOf(id)).error_code, 'PARSER_AUTH_FAILED');
  });

  test('a check for a job that is not the current one is skipped', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    let asked = 0;
    const deps = depsWith(scriptedParser({ status: () => (asked++, pending(providerJobId)), submits: 0 }));
    assert.equal(await runParseResult(deps, job(id, randomUUID(), 0), { log }), 'skipped');
    assert.equal(asked, 0, 'the provider was not even asked');
  });

  test('SUCCESS: the result is stored and ParseSucceeded appended, once', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    const deps = depsWith(scriptedParser({ status: () => ({ id: providerJobId, status: 'SUCCESS', errorCode: null, errorMessage: null }), submits: 0 }));
    assert.equal(await runParseResult(deps, job(id, providerJobId, null), { log }), 'done');
    assert.equal(await runParseResult(deps, job(id, providerJobId, 0), { log }), 'skipped');
    assert.equal((await statusOf(id)).status, 'parsed');
  });

  test('SUCCESS with pages the provider could not read: parsed, with the PARTIAL_SUCCESS warning', async () => {
    const providerJobId = randomUUID();
    const id = await submitted(providerJobId);
    const warning = { code: 'PARTIAL_SUCCESS', message: '1 of 3 pages could not be parsed: page 2: OCR failed' };
    const deps = depsWith(scriptedParser({ status: () => ({ id: providerJobId, status: 'SUCCESS', errorCode: null, errorMessage: null }), submits: 0, result: { markdown: 'page one\n\npage three', pages: 3, warning } }));
    assert.equal(await runParseResult(deps, job(id, providerJobId, 0), { log }), 'done');
    const [row] = await stack.db.sql<{ status: string; parse_warning_code: string; parse_warning_message: string }[]>`
      select status, parse_warning_code, parse_warning_message from docpipe.document_status where id = ${id}`;
    assert.deepEqual({ ...row }, { status: 'parsed', parse_warning_code: warning.code, parse_warning_message: warning.message });
  });

  test('ERROR: the document fails with the reason code found in the message, or PARSE_ERROR', async () => {
    for (const [message, code] of [['PDF_IS_PROTECTED: the file needs a password', 'PDF_IS_PROTECTED'], ['something went wrong', 'PARSE_ERROR']] as const) {
      const providerJobId = randomUUID();
      const id = await submitted(providerJobId);
      const deps = depsWith(scriptedParser({ status: () => ({ id: providerJobId, status: 'ERROR', errorCode: code === 'PARSE_ERROR' ? null : code, errorMessage: message }), submits: 0 }));
      assert.equal(await runParseResult(deps, job(id, providerJobId, 0), { log }), 'failed');
      assert.deepEqual({ ...(await statusOf(id)) }, { status: 'failed', error_code: code, error_message: message });
    }
  });
});

/** Uploads `bytes` and runs the parse stage with `deps`; returns the document id. */
async function submitDocument(deps: PipelineDeps, bytes: Buffer, mediaType: MediaType, fileName: string): Promise<string> {
  const id = randomUUID();
  const key = `documents/${id}/original`;
  const stored = await stack.runtime.providers.storage.put(key, Readable.from([bytes]));
  await execute(stack.runtime.ctx, id, { type: 'Upload', ownerId: 'user-a', fileName, mediaType, size: stored.size, sha256: stored.sha256, storageKey: key, idempotencyKey: null }, meta);
  await runParseStage(deps, { documentId: id, run: 1, correlationId: meta.correlationId, causationId: randomUUID(), requestId: null }, { log });
  return id;
}

describe('the deadline of a remote parse grows with the document', () => {
  test("a PDF's pages are counted from its page tree (in the sandbox); other formats are estimated high", async () => {
    const script: Script = { status: () => pending('x'), submits: 0, pages: [] };
    const deps = depsWith(scriptedParser(script));
    const pdf = await submitDocument(deps, await readFile(new URL('../fixtures/sample.pdf', import.meta.url)), 'application/pdf', 'sample.pdf');
    const text = await submitDocument(deps, Buffer.from('x'.repeat(25_000)), 'text/plain', 'long.txt');
    assert.deepEqual(script.pages, [2, 25]);
    for (const [id, pages] of [[pdf, 2], [text, 25]] as const) {
      const [row] = await stack.db.sql<{ data: any; at: Date }[]>`select data, created_at as at from docpipe.events where stream_id = ${id} and type = 'ParseSubmitted'`;
      const seconds = (Date.parse(row!.data.deadline) - row!.at.getTime()) / 1000;
      assert.ok(Math.abs(seconds - (1800 + 60 * pages)) < 5, `deadline ${seconds} s after submission for ${pages} pages`);
    }
  });

  test('a PDF over PDF_MAX_PAGES fails before it is sent (the provider would bill every page); an unreadable one is estimated and sent', async () => {
    const script: Script = { status: () => pending('x'), submits: 0, pages: [] };
    const limits = { ...DEFAULT_PARSER_LIMITS, pdfMaxPages: 1 };
    const deps: PipelineDeps = { ...depsWith(scriptedParser(script)), pages: createPageCounter((bytes) => countPdfPages(bytes, limits)) };
    const tooLong = await submitDocument(deps, await readFile(new URL('../fixtures/sample.pdf', import.meta.url)), 'application/pdf', 'sample.pdf');
    assert.equal(script.submits, 0);
    const failed = await statusOf(tooLong);
    assert.deepEqual([failed.status, failed.error_code], ['failed', 'DOCUMENT_LIMIT_EXCEEDED']);
    assert.match(failed.error_message!, /PDF has 2 pages; the limit is 1 pages? \(PDF_MAX_PAGES raises it\)/);
    await submitDocument(deps, Buffer.from('%PDF-1.7 not really a pdf'), 'application/pdf', 'broken.pdf');
    assert.equal(script.submits, 1, 'a PDF the local reader cannot open still goes to the provider');
    assert.deepEqual(script.pages, [1]);
  });
});

describe('runParseStage with a remote parser', () => {
  test('a text original goes to the parser from a file on disk (a file-backed Blob), byte for byte, and the file is removed after', async () => {
    const bytes = Buffer.from('line of a long text document\n'.repeat(100_000)); // 2.9 MB
    const seen: { blob: boolean; sha256: string; spoolDirs: string[] }[] = [];
    const before = new Set((await readdir(tmpdir())).filter((d) => d.startsWith('docpipe-spool-')));
    const parser: AsyncParser = {
      ...scriptedParser({ status: () => pending('x'), submits: 0 }),
      async submit(input) {
        const body = input.bytes;
        const content = Buffer.from(await (body as Blob).arrayBuffer());
        const spoolDirs = (await readdir(tmpdir())).filter((d) => d.startsWith('docpipe-spool-') && !before.has(d));
        seen.push({ blob: body instanceof Blob && !Buffer.isBuffer(body), sha256: createHash('sha256').update(content).digest('hex'), spoolDirs });
        return { jobId: randomUUID() };
      },
    };
    const id = await submitDocument(depsWith(parser), bytes, 'text/plain', 'long.txt');
    assert.equal((await statusOf(id)).status, 'parsing');
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.blob, true, 'a Blob, not a Buffer of the whole document');
    assert.equal(seen[0]!.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.ok(seen[0]!.spoolDirs.length >= 1, 'the original was spooled to a temporary directory');
    for (const dir of seen[0]!.spoolDirs) await assert.rejects(stat(path.join(tmpdir(), dir)), { code: 'ENOENT' });
  });

  test('a submission that answers SUCCESS at once (a cache hit) is checked at once, not after the webhook grace', async () => {
    const parser = scriptedParser({ status: () => pending('x'), submits: 0 });
    const deps: PipelineDeps = { ...depsWith({ ...parser, submit: async () => ({ jobId: randomUUID(), status: 'SUCCESS' as const }) }), remoteParse: { webhookBaseUrl: 'https://hooks.example.com', webhookSecret: 'w'.repeat(32), pollAfterSeconds: 600 } };
    const id = randomUUID();
    const key = `documents/${id}/original`;
    const stored = await stack.runtime.providers.storage.put(key, Readable.from([Buffer.from('hello')]));
    await execute(stack.runtime.ctx, id, { type: 'Upload', ownerId: 'user-a', fileName: 'a.txt', mediaType: 'text/plain', size: stored.size, sha256: stored.sha256, storageKey: key, idempotencyKey: null }, meta);
    assert.equal(await runParseStage(deps, { documentId: id, run: 1, correlationId: meta.correlationId, causationId: randomUUID(), requestId: null }, { log }), 'pending');
    const [poll] = await pollJobs(id);
    assert.ok(poll!.delay < 1, `first check after ${poll!.delay} s`);
  });

  test('a retried parse job never submits the same run twice', async () => {
    const script: Script = { status: () => pending('x'), submits: 0 };
    const deps = depsWith(scriptedParser(script));
    const id = randomUUID();
    const key = `documents/${id}/original`;
    const stored = await stack.runtime.providers.storage.put(key, Readable.from([Buffer.from('hello')]));
    await execute(stack.runtime.ctx, id, { type: 'Upload', ownerId: 'user-a', fileName: 'a.txt', mediaType: 'text/plain', size: stored.size, sha256: stored.sha256, storageKey: key, idempotencyKey: null }, meta);
    const parseJob = { documentId: id, run: 1, correlationId: meta.correlationId, causationId: randomUUID(), requestId: null };
    assert.equal(await runParseStage(deps, parseJob, { log }), 'pending');
    assert.equal(await runParseStage(deps, parseJob, { log }), 'skipped');
    assert.equal(script.submits, 1);
    const polls = await pollJobs(id);
    assert.equal(polls.length, 1, 'ParseSubmitted scheduled the polling backstop');
    assert.equal(polls[0]!.data.poll, 0);
  });
});
