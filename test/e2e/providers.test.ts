// End to end with the real provider adapters against the fakes, over real HTTP: Supabase
// Storage, LlamaParse (upload, webhook, status, result) and OpenAI embeddings. Every path a
// production deployment takes, with the faults the real services produce.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { startFakeLlamaParse } from '../fakes/llamaparse.ts';
import { startFakeOpenAI } from '../fakes/openai.ts';
import { startFakeSupabaseStorage } from '../fakes/supabase-storage.ts';
import { api, spawnCli, startStack, upload, waitForStatus, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

const llama = await startFakeLlamaParse({ webhookRetryDelaysMs: [200, 400], cache: false });
const openai = await startFakeOpenAI();
const supabase = await startFakeSupabaseStorage({ buckets: [] });
after(async () => {
  await llama.close();
  await openai.close();
  await supabase.close();
});

const SIGNING_SECRET = 'e2e-lc-signing-secret-32-characters';

const stack: TestStack = await startStack({
  webhooks: true,
  env: {
    DOCPIPE_STORAGE: 'supabase',
    SUPABASE_URL: supabase.url,
    SUPABASE_SERVICE_ROLE_KEY: supabase.serviceKey,
    SUPABASE_STORAGE_BUCKET: 'docpipe-e2e',
    DOCPIPE_PARSER: 'llamaparse',
    LLAMAPARSE_API_KEY: llama.apiKey,
    LLAMAPARSE_BASE_URL: llama.url,
    // Webhooks normally win; a dropped one is covered by polling after this grace.
    LLAMAPARSE_POLL_AFTER_SECONDS: '3',
    // docpipe sends it with each job; the webhook service then requires LC-Signature.
    LLAMAPARSE_WEBHOOK_SIGNING_SECRET: SIGNING_SECRET,
    LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO: '0.5',
    DOCPIPE_EMBEDDER: 'openai',
    OPENAI_API_KEY: openai.apiKey,
    OPENAI_BASE_URL: openai.url,
    EMBEDDING_DIMENSIONS: '256',
    CHUNK_MAX_TOKENS: '64',
    CHUNK_OVERLAP_TOKENS: '8',
    EMBED_BATCH_SIZE: '4',
    QUEUE_POLLING_INTERVAL_SECONDS: '1',
  },
});

const fixture = (name: string) => readFile(path.join('test/fixtures', name));

async function uploadFixture(name: string): Promise<string> {
  const res = await upload(stack, await fixture(name), name);
  assert.equal(res.status, 202, await res.clone().text());
  return ((await res.json()) as Json).id;
}

async function eventsOf(id: string): Promise<string[]> {
  const rows = await stack.db.sql<{ type: string }[]>`select type from docpipe.events where stream_id = ${id} order by stream_version`;
  return rows.map((r) => r.type);
}

const count = (list: string[], type: string) => list.filter((t) => t === type).length;

async function chunksOf(id: string): Promise<{ content: string; dims: number | null }[]> {
  return stack.db.sql`select content, array_length(embedding, 1) as dims from docpipe.document_chunks where document_id = ${id} order by chunk_index`;
}

describe('storage set-up', () => {
  test('/readyz names the missing bucket; `docpipe setup-storage` creates it', async () => {
    const before = await fetch(new URL('/readyz', stack.apiUrl));
    assert.equal(before.status, 503);
    const body = (await before.json()) as Json;
    const storage = body.checks.find((c: Json) => c.name === 'storage');
    assert.match(storage.error, /docpipe-e2e.*missing, or SUPABASE_SERVICE_ROLE_KEY has no access/);

    const child = spawnCli('setup-storage', stack.env);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0);
    assert.equal((await fetch(new URL('/readyz', stack.apiUrl))).status, 200);
    // Idempotent.
    const again = spawnCli('setup-storage', stack.env);
    assert.equal(await new Promise<number | null>((resolve) => again.once('exit', resolve)), 0);
  });
});

describe('a PDF through Supabase Storage, LlamaParse and OpenAI', () => {
  test('upload -> LlamaParse -> webhook -> result -> embed -> ready', async () => {
    const embeddedBefore = openai.embeddedInputs;
    const id = await uploadFixture('sample.pdf');
    const doc = await waitForStatus(stack, id, ['ready', 'failed']);
    assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
    assert.ok(doc.parser.jobId, 'the LlamaParse job id is shown');
    assert.equal(doc.parser.warning, null);

    const events = await eventsOf(id);
    assert.deepEqual(events.slice(0, 6), ['DocumentUploaded', 'ParseStarted', 'ParseSubmitted', 'ParserCallbackReceived', 'ParseSucceeded', 'EmbeddingStarted']);
    assert.equal(events.at(-1), 'DocumentReady');

    // The webhook carried the per-document credential and was accepted once. (A delivery that
    // beats the worker's ParseSubmitted commit gets a 409 and comes again.)
    const deliveries = llama.deliveries.filter((d) => d.jobId === doc.parser.jobId);
    assert.equal(deliveries.filter((d) => d.status === 200).length, 1, JSON.stringify(deliveries.map((d) => d.status)));
    assert.ok(deliveries.every((d) => d.status === 200 || d.status === 409));
    assert.match(deliveries[0]!.headers['x-docpipe-webhook-token'] ?? '', /^v1\.1\./);
    // Signed by LlamaCloud with the secret docpipe sent in webhook_signing_secret, and verified.
    const job = llama.jobs.get(doc.parser.jobId)!;
    assert.deepEqual([job.tier, job.version, job.webhookConfigs.map((c) => c.webhook_signing_secret)], ['cost_effective', 'latest', [SIGNING_SECRET]]);
    const accepted = deliveries.find((d) => d.status === 200)!;
    assert.equal(accepted.headers['LC-Signature'], `sha256=${createHmac('sha256', SIGNING_SECRET).update(accepted.body).digest('hex')}`);

    // Original and parsed markdown are in the bucket; chunks carry the phrase and 256-d vectors.
    const keys = [...supabase.objects.keys()].filter((k) => k.includes(id));
    assert.ok(keys.some((k) => k.endsWith(`documents/${id}/original`)), JSON.stringify(keys));
    assert.ok(keys.some((k) => k.endsWith(`documents/${id}/runs/1/parsed.md`)), JSON.stringify(keys));
    const chunks = await chunksOf(id);
    assert.equal(chunks.length, doc.chunkCount);
    assert.ok(chunks.every((c) => c.dims === 256));
    assert.ok(chunks.some((c) => c.content.includes('Eddystone')));
    assert.equal(openai.embeddedInputs - embeddedBefore, chunks.length, 'each chunk embedded exactly once');
  });

  test('with webhooks dropped, polling still finishes it', async () => {
    llama.setWebhookMode('drop');
    try {
      const id = await uploadFixture('sample.docx');
      const doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 60_000 });
      assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
      const events = await eventsOf(id);
      assert.equal(count(events, 'ParserCallbackReceived'), 0, 'no webhook arrived');
      assert.equal(count(events, 'ParseSucceeded'), 1);
      assert.ok(llama.calls.some((c) => c.route === 'status' && c.url.includes(doc.parser.jobId)), 'the job status was polled');
    } finally {
      llama.reset();
    }
  });

  test('duplicate and out-of-order webhooks append nothing twice', async () => {
    for (const mode of ['duplicate', 'outOfOrder'] as const) {
      llama.setWebhookMode(mode);
      try {
        const id = await uploadFixture('sample.html');
        const doc = await waitForStatus(stack, id, ['ready', 'failed']);
        assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
        await llama.settled(5000);
        const sent = llama.deliveries.filter((d) => d.jobId === doc.parser.jobId);
        assert.ok(sent.length >= 2, `${mode}: the fake sent ${sent.length} deliveries`);
        const events = await eventsOf(id);
        assert.equal(count(events, 'ParserCallbackReceived'), 1, mode);
        assert.equal(count(events, 'ParseSucceeded'), 1, mode);
        assert.equal(count(events, 'DocumentReady'), 1, mode);
        const rows = await stack.db.sql<{ outcome: string }[]>`select outcome from docpipe.webhook_deliveries where document_id = ${id}`;
        assert.equal(rows.filter((r) => r.outcome === 'appended').length, 1, mode);
      } finally {
        llama.reset();
      }
    }
  });

  test('forged webhooks are rejected and change nothing', async () => {
    llama.setProcessingMs(60_000);
    try {
      const id = await uploadFixture('sample.txt');
      const parsing = await waitForStatus(stack, id, ['parsing']);
      const deadline = Date.now() + 10_000;
      let jobId: string | null = parsing.parser.jobId;
      while (!jobId && Date.now() < deadline) jobId = ((await (await api(stack)(`/v1/documents/${id}`)).json()) as Json).parser.jobId;
      assert.ok(jobId);
      const body = JSON.stringify({ event_id: 'forged-1', event_type: 'parse.error', data: { id: jobId, job_id: jobId } });
      for (const token of [undefined, 'v1.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']) {
        const res = await fetch(`${stack.webhookUrl}/v1/webhooks/llamaparse/${id}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { 'x-docpipe-webhook-token': token } : {}) },
          body,
        });
        assert.equal(res.status, 401);
      }
      assert.equal(count(await eventsOf(id), 'ParserCallbackReceived'), 0);
      // The genuine completion still goes through.
      await llama.finishJob(jobId);
      const doc = await waitForStatus(stack, id, ['ready', 'failed']);
      assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
    } finally {
      llama.reset();
      llama.setProcessingMs(30);
    }
  });

  test('a LlamaParse ERROR ends failed with the provider code and message', async () => {
    llama.setOutcome(() => ({ status: 'FAILED', errorMessage: 'NO_DATA_FOUND_IN_FILE: No data found in the file' }));
    try {
      const id = await uploadFixture('sample.md');
      const doc = await waitForStatus(stack, id, ['ready', 'failed']);
      assert.equal(doc.status, 'failed');
      assert.deepEqual(doc.error, { code: 'NO_DATA_FOUND_IN_FILE', message: 'NO_DATA_FOUND_IN_FILE: No data found in the file' });
      assert.equal(count(await eventsOf(id), 'StageAttemptFailed'), 0, 'a provider verdict is not retried');
    } finally {
      llama.reset();
    }
  });

  test('a page LlamaCloud could not read (within the allowed ratio) ends ready with a PARTIAL_SUCCESS warning naming it', async () => {
    // v2 has no partial status: the job is COMPLETED with page 2 `success: false`.
    llama.setOutcome(() => ({ failedPages: [2], pageError: 'OCR failed' }));
    try {
      const id = await uploadFixture('sample.pdf');
      const doc = await waitForStatus(stack, id, ['ready', 'failed']);
      assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
      assert.deepEqual(doc.parser.warning, { code: 'PARTIAL_SUCCESS', message: '1 of 2 pages could not be parsed: page 2: OCR failed' });
      const chunks = await chunksOf(id);
      assert.ok(chunks.every((c) => !c.content.includes('James Douglass')), 'the failed page contributes nothing');
    } finally {
      llama.reset();
    }
  });

  test('a LlamaParse 401 fails the document at once with a clear reason (no retry storm)', async () => {
    const before = llama.requests.upload;
    llama.failNext('upload', 401, 50);
    try {
      const id = await uploadFixture('sample.txt');
      const doc = await waitForStatus(stack, id, ['ready', 'failed']);
      assert.equal(doc.status, 'failed');
      assert.equal(doc.error.code, 'PARSER_AUTH_FAILED');
      assert.match(doc.error.message, /LLAMAPARSE_API_KEY/);
      assert.equal(llama.requests.upload - before, 1);
    } finally {
      llama.reset();
    }
  });

  test('a 429 storm from OpenAI still ends ready, every chunk embedded exactly once', async () => {
    // The first two answers are 429 for certain (a one-batch document could otherwise pass the
    // storm untouched, 40 % of the time), then 60 % of them.
    openai.failNext(429, 2, { retryAfterMs: '30' });
    openai.rateLimitStorm({ probability: 0.6, retryAfterMs: 30 });
    try {
      const requestsBefore = openai.requests.length;
      const id = await uploadFixture('sample.docx');
      const doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 90_000 });
      assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
      const seen = openai.requests.slice(requestsBefore);
      assert.ok(seen.some((r) => r.status === 429), 'the storm produced 429s');
      const chunks = await chunksOf(id);
      assert.ok(chunks.every((c) => c.dims === 256));
      const ok = seen.filter((r) => r.status === 200).flatMap((r) => r.inputs);
      assert.equal(ok.length, chunks.length, 'successful embeddings = chunks');
      assert.deepEqual([...ok].sort(), chunks.map((c) => c.content).sort());
      const events = await eventsOf(id);
      assert.equal(count(events, 'EmbeddingBatchStored'), doc.embeddingBatches.total);
      assert.equal(count(events, 'StageAttemptFailed'), 0, '429s are waited out, not failed attempts');
    } finally {
      openai.reset();
    }
  });
});

describe('embedding progress is saved per batch', () => {
  test('an OpenAI outage mid-document: the retried job resumes after the last stored batch', async () => {
    // ~40 distinct sentences of ~12 tokens: several 64-token chunks, batches of 4.
    const text = Array.from({ length: 120 }, (_, i) => `Sentence ${i} tells of lighthouse keeper number ${i * 7} and the lamp ${i % 13}.`).join(' ');
    const requestsBefore = openai.requests.length;
    // Two batches succeed, then four 500s in a row: more than the embedder's in-call retries.
    openai.failNext(500, 4, { afterSuccesses: 2 });
    try {
      const res = await upload(stack, Buffer.from(text), 'keepers.txt');
      assert.equal(res.status, 202);
      const { id } = (await res.json()) as Json;
      const doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 60_000 });
      assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
      assert.ok(doc.embeddingBatches.total >= 4, `batches: ${doc.embeddingBatches.total}`);
      const events = await eventsOf(id);
      assert.equal(count(events, 'EmbeddingStarted'), 2, 'one retry of the embed stage');
      assert.equal(count(events, 'StageAttemptFailed'), 1);
      assert.equal(count(events, 'EmbeddingBatchStored'), doc.embeddingBatches.total, 'each batch stored once');
      const seen = openai.requests.slice(requestsBefore);
      assert.equal(seen.filter((r) => r.status === 500).length, 4);
      const ok = seen.filter((r) => r.status === 200).flatMap((r) => r.inputs);
      const chunks = await chunksOf(id);
      assert.deepEqual([...ok].sort(), chunks.map((c) => c.content).sort(), 'no chunk was embedded twice');
      const [failure] = await stack.db.sql<{ data: Json }[]>`select data from docpipe.events where stream_id = ${id} and type = 'StageAttemptFailed'`;
      assert.equal(failure!.data.code, 'EMBEDDER_UNAVAILABLE');
    } finally {
      openai.reset();
    }
  });
});

describe('direct upload to Supabase Storage', () => {
  test('POST /v1/uploads, PUT to the signed URL, register, ready', async () => {
    const bytes = await fixture('sample.pdf');
    const call = api(stack);
    const reserved = await call('/v1/uploads', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ fileName: 'big.pdf', size: bytes.length, contentType: 'application/pdf' }),
    });
    assert.equal(reserved.status, 201, await reserved.clone().text());
    const r = (await reserved.json()) as Json;
    assert.ok(r.upload.url.startsWith(`${supabase.url}/storage/v1/object/upload/sign/`), r.upload.url);
    const put = await fetch(r.upload.url, { method: 'PUT', headers: r.upload.headers, body: bytes });
    assert.equal(put.status, 200, await put.clone().text());
    const registered = await call('/v1/documents', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ path: r.path }) });
    assert.equal(registered.status, 202, await registered.clone().text());
    const doc = await waitForStatus(stack, r.uploadId, ['ready', 'failed']);
    assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
    assert.equal(doc.mediaType, 'application/pdf');
    assert.equal(doc.size, bytes.length);
  });
});
