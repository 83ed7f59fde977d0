// The webhook service over real HTTP and a real Postgres: authentication (per-document
// credential, LC-Signature), both payload encodings (object and JSON string), de-duplication by
// event id in the append's transaction, unknown documents, stale jobs, and what each answer
// leaves in the event log.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { execute } from '../../src/documents/commands.ts';
import { registry } from '../../src/observability/metrics.ts';
import { lcSignature, WEBHOOK_TOKEN_HEADER, webhookCredential } from '../../src/security/webhook-auth.ts';
import { buildWebhookApp } from '../../src/services/webhook/app.ts';
import { startStack, type TestStack } from '../helpers/stack.ts';

const SECRET = 'webhook-secret-webhook-secret-0123456789';
const SIGNING = 'lc-signing-secret-of-at-least-32-chars';
const meta = { correlationId: randomUUID(), causationId: null, actor: 'test', requestId: null };

const stack: TestStack = await startStack({ worker: false, env: { WEBHOOK_SECRET: SECRET, WEBHOOK_PUBLIC_URL: 'http://127.0.0.1:9' } });
// A second webhook service over the same database, configured with LlamaCloud's signing secret.
const signedApp = await buildWebhookApp({
  ctx: stack.runtime.ctx,
  config: { webhook: { publicUrl: undefined, secret: SECRET, llamaparseSigningSecret: SIGNING, deliveryRetentionDays: 7 } },
  logger: stack.runtime.logger,
});
const signedUrl = await signedApp.listen({ host: '127.0.0.1', port: 0 });
after(() => signedApp.close());

/** A document that LlamaParse is working on: uploaded, parse started, submitted as `jobId`. */
async function parsingDocument(jobId = randomUUID()): Promise<{ id: string; jobId: string }> {
  const id = randomUUID();
  const ctx = stack.runtime.ctx;
  await execute(ctx, id, { type: 'Upload', ownerId: 'user-a', fileName: 'a.pdf', mediaType: 'application/pdf', size: 10, sha256: 'ab'.repeat(32), storageKey: `documents/${id}/original`, idempotencyKey: null }, meta);
  await execute(ctx, id, { type: 'StartParse', run: 1, parser: 'llamaparse' }, meta);
  await execute(ctx, id, { type: 'SubmitParse', run: 1, parser: 'llamaparse', providerJobId: jobId, webhook: true, pollAfterSeconds: 3600, deadline: new Date(Date.now() + 3600_000).toISOString() }, meta);
  return { id, jobId };
}

const eventBody = (jobId: string, eventType = 'parse.success', eventId = randomUUID()) => ({
  event_id: eventId,
  event_type: eventType,
  timestamp: Date.now() / 1000,
  data: { id: jobId, job_id: jobId },
});

interface SendOptions {
  token?: string | null;
  headers?: Record<string, string>;
  raw?: string;
  base?: string;
  query?: string;
}

async function send(documentId: string, body: unknown, options: SendOptions = {}): Promise<{ status: number; json: any }> {
  const raw = options.raw ?? JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'llamaindex-webhook-service/1.0', ...options.headers };
  const token = options.token === undefined ? webhookCredential(SECRET, 'llamaparse', documentId, 1) : options.token;
  if (token !== null) headers[WEBHOOK_TOKEN_HEADER] = token;
  const res = await fetch(`${options.base ?? stack.webhookUrl}/v1/webhooks/llamaparse/${documentId}${options.query ?? ''}`, { method: 'POST', headers, body: raw });
  return { status: res.status, json: await res.json() };
}

async function eventTypes(id: string): Promise<string[]> {
  const rows = await stack.db.sql<{ type: string }[]>`select type from docpipe.events where stream_id = ${id} order by stream_version`;
  return rows.map((r) => r.type);
}

async function resultJobs(id: string): Promise<{ data: any; start_after: Date }[]> {
  return stack.db.sql`select data, start_after from pgboss.job where name = 'docpipe-parse-result' and data->>'documentId' = ${id}`;
}

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const found = (await registry.getSingleMetric(name)?.get())?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return found?.value ?? 0;
}

describe('POST /v1/webhooks/llamaparse/:documentId', () => {
  test('a parse.success event appends ParserCallbackReceived and enqueues the result job at once', async () => {
    const { id, jobId } = await parsingDocument();
    const body = eventBody(jobId);
    const res = await send(id, body, { headers: { 'x-webhook-event-id': body.event_id, 'x-webhook-event-type': 'parse.success' } });
    assert.equal(res.status, 200);
    assert.equal(res.json.outcome, 'appended');
    assert.deepEqual(await eventTypes(id), ['DocumentUploaded', 'ParseStarted', 'ParseSubmitted', 'ParserCallbackReceived']);
    const jobs = await resultJobs(id);
    // One from the webhook (runs now) and the polling backstop scheduled by ParseSubmitted.
    assert.equal(jobs.length, 2);
    const fromWebhook = jobs.find((j) => j.data.poll === null)!;
    assert.equal(fromWebhook.data.providerJobId, jobId);
    assert.ok(fromWebhook.start_after.getTime() <= Date.now() + 1000);
    const [event] = await stack.db.sql<{ data: any; metadata: any }[]>`select data, metadata from docpipe.events where stream_id = ${id} and type = 'ParserCallbackReceived'`;
    assert.equal(event!.data.eventId, body.event_id);
    assert.equal(event!.metadata.actor, 'webhook:llamaparse');
  });

  test('a redelivery with the same event id answers 200 and appends nothing', async () => {
    const { id, jobId } = await parsingDocument();
    const body = eventBody(jobId);
    assert.equal((await send(id, body)).json.outcome, 'appended');
    const again = await send(id, body);
    assert.equal(again.status, 200);
    assert.equal(again.json.outcome, 'duplicate');
    // The header's event id wins over the body's, as LlamaCloud sends both.
    const viaHeader = await send(id, { ...body, event_id: undefined }, { headers: { 'x-webhook-event-id': body.event_id } });
    assert.equal(viaHeader.json.outcome, 'duplicate');
    assert.equal((await eventTypes(id)).filter((t) => t === 'ParserCallbackReceived').length, 1);
  });

  test('concurrent duplicates: exactly one delivery appends', async () => {
    const { id, jobId } = await parsingDocument();
    const body = eventBody(jobId);
    const answers = await Promise.all(Array.from({ length: 10 }, () => send(id, body)));
    assert.ok(answers.every((a) => a.status === 200), JSON.stringify(answers.map((a) => a.status)));
    assert.equal(answers.filter((a) => a.json.outcome === 'appended').length, 1);
    assert.equal((await eventTypes(id)).filter((t) => t === 'ParserCallbackReceived').length, 1);
  });

  test('a burst of mixed deliveries (batched together) gets one right answer each', async () => {
    const docs = await Promise.all(Array.from({ length: 12 }, () => parsingDocument()));
    const early = randomUUID();
    const ctx = stack.runtime.ctx;
    await execute(ctx, early, { type: 'Upload', ownerId: 'user-a', fileName: 'a.pdf', mediaType: 'application/pdf', size: 10, sha256: 'ab'.repeat(32), storageKey: `documents/${early}/original`, idempotencyKey: null }, meta);
    await execute(ctx, early, { type: 'StartParse', run: 1, parser: 'llamaparse' }, meta);
    const unknown = randomUUID();
    const sameDoc = docs[0]!;
    const dup = eventBody(docs[1]!.jobId);
    const sends = [
      ...docs.map((d) => send(d.id, eventBody(d.jobId)).then((r) => ['fresh', r] as const)),
      send(sameDoc.id, eventBody(sameDoc.jobId, 'parse.error')).then((r) => ['second terminal', r] as const),
      send(docs[1]!.id, dup).then((r) => ['dup a', r] as const),
      send(docs[1]!.id, dup).then((r) => ['dup b', r] as const),
      send(unknown, eventBody(randomUUID())).then((r) => ['unknown', r] as const),
      send(early, eventBody(randomUUID())).then((r) => ['early', r] as const),
      send(docs[2]!.id, eventBody(randomUUID())).then((r) => ['stale job', r] as const),
    ];
    const answers = await Promise.all(sends);
    const of = (label: string) => answers.filter(([l]) => l === label).map(([, r]) => r);
    assert.equal(of('unknown')[0]!.status, 404);
    assert.equal(of('early')[0]!.status, 409);
    assert.equal(of('stale job')[0]!.json.outcome, 'ignored');
    // The two copies of one event id: exactly one is a duplicate (the other appended, or was
    // ignored because the document's fresh delivery came first).
    const copies = [...of('dup a'), ...of('dup b')].map((r) => r.json.outcome);
    assert.equal(copies.filter((o) => o === 'duplicate').length, 1, JSON.stringify(copies));
    assert.ok(answers.every(([, r]) => [200, 404, 409].includes(r.status)), JSON.stringify(answers.map(([l, r]) => [l, r.status])));
    for (const d of docs) assert.equal((await eventTypes(d.id)).filter((t) => t === 'ParserCallbackReceived').length, 1, d.id);
    assert.equal((await eventTypes(early)).length, 2);
    assert.equal((await stack.db.sql`select 1 from docpipe.webhook_deliveries where document_id in (${unknown}, ${early})`).length, 0);
  });

  test('out of order: a second terminal event or a late parse.running appends nothing', async () => {
    const { id, jobId } = await parsingDocument();
    assert.equal((await send(id, eventBody(jobId, 'parse.success'))).json.outcome, 'appended');
    const second = await send(id, eventBody(jobId, 'parse.error'));
    assert.deepEqual([second.status, second.json.outcome], [200, 'ignored']);
    const running = await send(id, eventBody(jobId, 'parse.running'));
    assert.deepEqual([running.status, running.json.outcome], [200, 'ignored']);
    assert.equal((await eventTypes(id)).length, 4);
  });

  test('the payload JSON-encoded as a string (webhook_output_format "string") is accepted', async () => {
    const { id, jobId } = await parsingDocument();
    const res = await send(id, JSON.stringify(eventBody(jobId)));
    assert.deepEqual([res.status, res.json.outcome], [200, 'appended']);
  });

  test('the v1 result payload and a ?token= credential are refused: v2 sends neither', async () => {
    const { id, jobId } = await parsingDocument();
    const legacy = { txt: 'hello', md: '# hello', json: [{ page: 1, text: 'hello', md: '# hello' }], images: [] };
    const token = webhookCredential(SECRET, 'llamaparse', id, 1);
    const asV1 = await send(id, legacy);
    assert.deepEqual([asV1.status, asV1.json.error.code], [400, 'INVALID_WEBHOOK_PAYLOAD']);
    const inQuery = await send(id, eventBody(jobId), { token: null, query: `?token=${token}` });
    assert.deepEqual([inQuery.status, inQuery.json.error.code], [401, 'WEBHOOK_UNAUTHORIZED']);
    assert.equal((await eventTypes(id)).length, 3, 'nothing appended');
  });

  test("a delivery that beats the worker's ParseSubmitted answers 409, and its redelivery appends", async () => {
    // The provider finished (a cache hit) before the worker recorded the job id it was given.
    const id = randomUUID();
    const jobId = randomUUID();
    const ctx = stack.runtime.ctx;
    await execute(ctx, id, { type: 'Upload', ownerId: 'user-a', fileName: 'a.pdf', mediaType: 'application/pdf', size: 10, sha256: 'ab'.repeat(32), storageKey: `documents/${id}/original`, idempotencyKey: null }, meta);
    await execute(ctx, id, { type: 'StartParse', run: 1, parser: 'llamaparse' }, meta);
    const body = eventBody(jobId);
    const early = await send(id, body);
    assert.deepEqual([early.status, early.json.error.code], [409, 'PROVIDER_JOB_NOT_RECORDED']);
    assert.equal((await stack.db.sql`select 1 from docpipe.webhook_deliveries where event_id = ${body.event_id}`).length, 0, 'not remembered as seen');
    await execute(ctx, id, { type: 'SubmitParse', run: 1, parser: 'llamaparse', providerJobId: jobId, webhook: true, pollAfterSeconds: 3600, deadline: new Date(Date.now() + 3600_000).toISOString() }, meta);
    const redelivered = await send(id, body);
    assert.deepEqual([redelivered.status, redelivered.json.outcome], [200, 'appended']);
  });

  test('an event for a job that is no longer current answers 200 and is ignored', async () => {
    const { id } = await parsingDocument();
    const res = await send(id, eventBody(randomUUID()));
    assert.deepEqual([res.status, res.json.outcome], [200, 'ignored']);
    assert.equal((await eventTypes(id)).length, 3);
    const [row] = await stack.db.sql<{ outcome: string }[]>`select outcome from docpipe.webhook_deliveries where document_id = ${id}`;
    assert.equal(row!.outcome, 'ignored');
  });

  test('a credential of an earlier run is ignored, not appended', async () => {
    const { id, jobId } = await parsingDocument();
    const res = await send(id, eventBody(jobId), { token: webhookCredential(SECRET, 'llamaparse', id, 2) });
    assert.deepEqual([res.status, res.json.outcome], [200, 'ignored']);
  });

  test('forged deliveries answer 401, are counted, and append nothing', async () => {
    const { id, jobId } = await parsingDocument();
    const other = await parsingDocument();
    const before = await metric('docpipe_webhook_auth_failures_total', { provider: 'llamaparse' });
    const cases: SendOptions[] = [
      { token: null },
      { token: 'v1.1.' + 'A'.repeat(43) },
      { token: webhookCredential(SECRET, 'llamaparse', other.id, 1) },
      { token: webhookCredential('another-secret-another-secret-0123456789', 'llamaparse', id, 1) },
      { token: 'garbage' },
      { token: null, query: '?token=nope' },
    ];
    for (const options of cases) {
      const res = await send(id, eventBody(jobId), options);
      assert.equal(res.status, 401, JSON.stringify(options));
      assert.equal(res.json.error.code, 'WEBHOOK_UNAUTHORIZED');
    }
    assert.equal((await metric('docpipe_webhook_auth_failures_total', { provider: 'llamaparse', reason: 'missing' })) > 0, true);
    const after = await metric('docpipe_webhook_auth_failures_total', { provider: 'llamaparse' });
    assert.ok(after >= before + 1);
    assert.equal((await eventTypes(id)).length, 3);
    const deliveries = await stack.db.sql`select 1 from docpipe.webhook_deliveries where document_id = ${id}`;
    assert.equal(deliveries.length, 0);
  });

  test('an unknown document answers 404 and keeps no delivery row', async () => {
    const id = randomUUID();
    const body = eventBody(randomUUID());
    const res = await send(id, body);
    assert.equal(res.status, 404);
    const rows = await stack.db.sql`select 1 from docpipe.webhook_deliveries where event_id = ${body.event_id}`;
    assert.equal(rows.length, 0);
    // Not a UUID at all: still no 500.
    const bad = await send('not-a-uuid', body, { token: webhookCredential(SECRET, 'llamaparse', 'not-a-uuid', 1) });
    assert.equal(bad.status, 401);
  });

  test('bad payloads answer 400 or 415 with a stable code', async () => {
    const { id } = await parsingDocument();
    assert.equal((await send(id, { foo: 1 })).json.error.code, 'INVALID_WEBHOOK_PAYLOAD');
    assert.equal((await send(id, null, { raw: '{not json' })).json.error.code, 'INVALID_JSON');
    assert.equal((await send(id, '"not an object"')).json.error.code, 'INVALID_WEBHOOK_PAYLOAD');
    const token = webhookCredential(SECRET, 'llamaparse', id, 1);
    const res = await fetch(`${stack.webhookUrl}/v1/webhooks/llamaparse/${id}`, { method: 'POST', headers: { 'content-type': 'text/plain', [WEBHOOK_TOKEN_HEADER]: token }, body: 'x' });
    assert.equal(res.status, 415);
  });

  test('without a credential the body is not even read: 401 before any parsing', async () => {
    const { id } = await parsingDocument();
    const res = await send(id, null, { raw: '{not json', token: null });
    assert.deepEqual([res.status, res.json.error.code], [401, 'WEBHOOK_UNAUTHORIZED']);
    const big = await fetch(`${stack.webhookUrl}/v1/webhooks/llamaparse/${id}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ padding: 'x'.repeat(9 * 1024 * 1024) }),
    });
    assert.equal(big.status, 401);
  });

  describe('with LLAMAPARSE_WEBHOOK_SIGNING_SECRET', () => {
    test('a valid LC-Signature authenticates on its own', async () => {
      const { id, jobId } = await parsingDocument();
      const raw = JSON.stringify(eventBody(jobId));
      const res = await send(id, null, { raw, base: signedUrl, token: null, headers: { 'lc-signature': lcSignature(SIGNING, raw) } });
      assert.deepEqual([res.status, res.json.outcome], [200, 'appended']);
    });

    test('a missing or wrong signature is refused even with a valid credential', async () => {
      const { id, jobId } = await parsingDocument();
      const raw = JSON.stringify(eventBody(jobId));
      const missing = await send(id, null, { raw, base: signedUrl });
      assert.equal(missing.status, 401);
      const wrong = await send(id, null, { raw, base: signedUrl, headers: { 'lc-signature': lcSignature('other', raw) } });
      assert.equal(wrong.status, 401);
      // Signed over different bytes than were sent (a replayed signature on an edited body).
      const tampered = await send(id, null, { raw: raw.replace('parse.success', 'parse.error'), base: signedUrl, headers: { 'lc-signature': lcSignature(SIGNING, raw) } });
      assert.equal(tampered.status, 401);
      assert.equal((await eventTypes(id)).length, 3);
      assert.ok((await metric('docpipe_webhook_auth_failures_total', { provider: 'llamaparse', reason: 'bad_signature' })) >= 2);
    });
  });
});
