// The fake LlamaCloud v2 parse API on the wire, without the SDK: raw requests as any client
// would send them, the shapes it answers, its webhook fault modes and its admin API. The SDK's
// view of the same fake is test/contract/llamaparse-v2.test.ts.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FakeLlamaParse } from '../fakes/llamaparse.ts';
import { fakeLlamaParsePerTest } from '../helpers/fake-llamaparse.ts';

const TEXT = Buffer.from('Plain text about the Bell Rock lighthouse.\n');

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

const fakeWith = fakeLlamaParsePerTest();

async function waitUntil<T>(check: () => T | undefined | false, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver on 127.0.0.1 answering `status()` (200 unless changed). */
async function receiver(status: () => number = () => 200): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(status()).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => (server.closeAllConnections(), server.close(() => resolve()))));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, received };
}

const auth = (fake: FakeLlamaParse) => ({ authorization: `Bearer ${fake.apiKey}` });

/** POST /api/v2/parse/upload with `configuration` (an object is JSON-encoded) and extra form fields. */
async function post(fake: FakeLlamaParse, configuration: unknown, options: { file?: Buffer; fileName?: string; extra?: Record<string, string> } = {}): Promise<Response> {
  const form = new FormData();
  form.append('file', new Blob([options.file ?? TEXT], { type: 'text/plain' }), options.fileName ?? 'bell-rock.txt');
  if (configuration !== undefined) form.append('configuration', typeof configuration === 'string' ? configuration : JSON.stringify(configuration));
  for (const [name, value] of Object.entries(options.extra ?? {})) form.append(name, value);
  return fetch(`${fake.url}/api/v2/parse/upload`, { method: 'POST', headers: auth(fake), body: form });
}

async function upload(fake: FakeLlamaParse, configuration: Record<string, unknown> = {}): Promise<string> {
  const response = await post(fake, { tier: 'cost_effective', version: 'latest', ...configuration });
  assert.equal(response.status, 200, await response.clone().text());
  return ((await response.json()) as { id: string }).id;
}

const hooks = (url: string, extra: Record<string, unknown> = {}) => ({
  webhook_configurations: [{ webhook_url: url, webhook_events: ['parse.success', 'parse.error'], ...extra }],
});

describe('fake llamaparse v2: the wire', () => {
  test('the create answer is the flat job; GET without expand is {job}; a failure has error_message and no error_code', async () => {
    const fake = await fakeWith();
    const response = await post(fake, { tier: 'fast', version: 'latest' });
    const job = (await response.json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(job).sort(), ['created_at', 'error_message', 'id', 'name', 'project_id', 'status', 'tier', 'updated_at', 'usage', 'user_metadata']);
    assert.match(job.id as string, /^pjb-[0-9a-f]{24}$/);
    assert.equal(job.status, 'PENDING');
    assert.deepEqual(job.usage, { credits: null });

    fake.setOutcome(() => ({ status: 'FAILED', errorMessage: 'PDF_IS_PROTECTED: the PDF is password protected' }));
    const failedId = await upload(fake);
    await waitUntil(() => fake.jobs.get(failedId)!.status === 'FAILED', 5000, 'the job to fail');
    const got = (await (await fetch(`${fake.url}/api/v2/parse/${failedId}`, { headers: auth(fake) })).json()) as { job: Record<string, unknown> };
    assert.deepEqual(Object.keys(got), ['job']);
    assert.equal(got.job.status, 'FAILED');
    assert.equal(got.job.error_message, 'PDF_IS_PROTECTED: the PDF is password protected');
    assert.ok(!('error_code' in got.job));
  });

  test('expand also works comma-separated; a status moves PENDING -> RUNNING -> COMPLETED', async () => {
    const fake = await fakeWith({ processingMs: 300 });
    const id = await upload(fake);
    assert.equal(fake.jobs.get(id)!.status, 'PENDING');
    await waitUntil(() => fake.jobs.get(id)!.status === 'RUNNING', 5000, 'RUNNING');
    await waitUntil(() => fake.jobs.get(id)!.status === 'COMPLETED', 5000, 'COMPLETED');
    const got = (await (await fetch(`${fake.url}/api/v2/parse/${id}?expand=markdown,text_full`, { headers: auth(fake) })).json()) as Record<string, any>;
    assert.equal(got.markdown.pages[0].success, true);
    assert.match(got.text_full, /Bell Rock/);
    assert.equal(fake.calls.at(-1)!.route, 'result');
  });

  test('auth: a missing or wrong key is 401 {"detail":"Invalid API Key"}', async () => {
    const fake = await fakeWith();
    for (const headers of [{}, { authorization: 'Bearer llx-wrong' }]) {
      const response = await fetch(`${fake.url}/api/v2/parse/pjb-x`, { headers });
      assert.equal(response.status, 401);
      assert.deepEqual(await response.json(), { detail: 'Invalid API Key' });
    }
  });

  test('422s in the FastAPI shape: no file or configuration, configuration not JSON, bad webhook format, both file_id and source_url missing', async () => {
    const fake = await fakeWith();
    const form = new FormData();
    form.append('configuration', JSON.stringify({ tier: 'fast', version: 'latest' }));
    const noFile = await fetch(`${fake.url}/api/v2/parse/upload`, { method: 'POST', headers: auth(fake), body: form });
    assert.equal(noFile.status, 422);
    assert.deepEqual(await noFile.json(), { detail: [{ type: 'missing', loc: ['body', 'file'], msg: 'Field required', input: null }] });

    const noConfig = await post(fake, undefined);
    assert.equal(noConfig.status, 422);
    assert.deepEqual(((await noConfig.json()) as { detail: Array<{ loc: unknown[] }> }).detail.map((d) => d.loc), [['body', 'configuration']]);

    const notJson = await post(fake, '{tier: fast');
    assert.equal(notJson.status, 422);
    assert.equal(((await notJson.json()) as { detail: Array<{ type: string }> }).detail[0]!.type, 'json_invalid');

    const badFormat = await post(fake, { tier: 'fast', version: 'latest', webhook_configurations: [{ webhook_url: 'https://x.example', webhook_output_format: 'xml' }] });
    assert.equal(badFormat.status, 422);
    const detail = ((await badFormat.json()) as { detail: Array<{ type: string; loc: unknown[]; msg: string; input: unknown }> }).detail;
    assert.deepEqual(detail.map((d) => [d.type, d.loc, d.input]), [['literal_error', ['body', 'configuration', 'webhook_configurations', 0, 'webhook_output_format'], 'xml']]);

    const neither = await fetch(`${fake.url}/api/v2/parse`, {
      method: 'POST',
      headers: { ...auth(fake), 'content-type': 'application/json' },
      body: JSON.stringify({ tier: 'fast', version: 'latest' }),
    });
    assert.equal(neither.status, 422);
    assert.equal(fake.jobs.size, 0);
  });

  test('the v1 routes are gone; a v1-style extra form field is ignored but recorded', async () => {
    const fake = await fakeWith();
    const v1 = await fetch(`${fake.url}/api/v1/parsing/job/x`, { headers: auth(fake) });
    assert.equal(v1.status, 404);
    const response = await post(fake, { tier: 'fast', version: 'latest' }, { extra: { parse_mode: 'parse_page_with_llm', webhook_url: 'https://x.example' } });
    assert.equal(response.status, 200);
    const { id } = (await response.json()) as { id: string };
    assert.deepEqual(fake.jobs.get(id)!.extraFields, ['parse_mode', 'webhook_url']);
  });
});

describe('fake llamaparse v2: webhooks', () => {
  test('the default output format delivers a JSON-encoded string naming only the job', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    const jobId = await upload(fake, hooks(hook.url));
    await waitUntil(() => hook.received.length === 1, 5000, 'one delivery');
    await fake.settled();
    const raw = JSON.parse(hook.received[0]!.body) as unknown;
    assert.equal(typeof raw, 'string', 'the body is a JSON string');
    const event = JSON.parse(raw as string) as { event_id: string; event_type: string; timestamp: number; data: unknown };
    assert.deepEqual(Object.keys(event), ['event_id', 'event_type', 'timestamp', 'data']);
    assert.equal(event.event_type, 'parse.success');
    assert.deepEqual(event.data, { id: jobId, job_id: jobId });
    assert.equal(typeof event.timestamp, 'number');
    assert.match(event.event_id, /^[0-9a-f-]{36}$/);
    assert.equal(hook.received.length, 1, 'parse.pending / parse.running were not subscribed');
  });

  test('json format, the standard and custom headers, only subscribed events, unsigned without a secret', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    fake.setOutcome(() => ({ status: 'FAILED', errorMessage: 'X: y' }));
    const jobId = await upload(fake, hooks(hook.url, { webhook_output_format: 'json', webhook_headers: { 'X-Docpipe-Token': 't0k' } }));
    await waitUntil(() => hook.received.length === 1, 5000, 'one delivery');
    const [delivery] = hook.received;
    const event = JSON.parse(delivery!.body) as { event_id: string; event_type: string; data: { job_id: string } };
    assert.equal(event.event_type, 'parse.error');
    assert.equal(event.data.job_id, jobId);
    assert.equal(delivery!.headers['content-type'], 'application/json');
    assert.equal(delivery!.headers['user-agent'], 'llamaindex-webhook-service/1.0');
    assert.equal(delivery!.headers['x-webhook-event-id'], event.event_id);
    assert.equal(delivery!.headers['x-webhook-event-type'], 'parse.error');
    assert.equal(delivery!.headers['x-docpipe-token'], 't0k');
    assert.equal(delivery!.headers['lc-signature'], undefined, 'unsigned without a signing secret');
  });

  test('without webhook_events every event is sent, pending and running included', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    await upload(fake, { webhook_configurations: [{ webhook_url: hook.url, webhook_output_format: 'json' }] });
    await waitUntil(() => hook.received.length === 3, 5000, 'three deliveries');
    assert.deepEqual(
      hook.received.map((r) => r.headers['x-webhook-event-type']),
      ['parse.pending', 'parse.running', 'parse.success'],
    );
  });

  test('LC-Signature is the HMAC-SHA256 of the raw body with the configuration`s webhook_signing_secret', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    await upload(fake, hooks(hook.url, { webhook_signing_secret: 'whsec-test' }));
    await waitUntil(() => hook.received.length === 1, 5000, 'one delivery');
    const { headers, body } = hook.received[0]!;
    assert.equal(headers['lc-signature'], `sha256=${createHmac('sha256', 'whsec-test').update(body).digest('hex')}`);
  });

  test('a receiver answering 500 gets 3 attempts with the configured delays', async () => {
    const fake = await fakeWith({ webhookRetryDelaysMs: [50, 100] });
    const hook = await receiver(() => 500);
    const jobId = await upload(fake, hooks(hook.url));
    await waitUntil(() => fake.jobs.get(jobId)!.status === 'COMPLETED', 5000, 'job end');
    await fake.settled();
    assert.equal(hook.received.length, 3);
    const attempts = fake.deliveries.filter((d) => d.jobId === jobId);
    assert.deepEqual(attempts.map((d) => [d.attempt, d.status, d.configIndex]), [[1, 500, 0], [2, 500, 0], [3, 500, 0]]);
    assert.equal(new Set(attempts.map((d) => d.eventId)).size, 1, 'a retry is the same event');
    const gap1 = attempts[1]!.at.getTime() - attempts[0]!.at.getTime();
    const gap2 = attempts[2]!.at.getTime() - attempts[1]!.at.getTime();
    assert.ok(gap1 >= 45 && gap2 >= 95, `gaps ${gap1} ms, ${gap2} ms`);
  });

  test('a receiver that fails once gets the delivery on the second attempt', async () => {
    const fake = await fakeWith({ webhookRetryDelaysMs: [20, 20] });
    let calls = 0;
    const hook = await receiver(() => (++calls === 1 ? 503 : 204));
    await upload(fake, hooks(hook.url));
    await waitUntil(() => hook.received.length === 2, 5000, 'two attempts');
    await fake.settled();
    assert.deepEqual(fake.deliveries.map((d) => d.status), [503, 204]);
  });

  test('drop sends nothing', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    fake.setWebhookMode('drop');
    const jobId = await upload(fake, hooks(hook.url));
    await waitUntil(() => fake.jobs.get(jobId)!.status === 'COMPLETED', 5000, 'job end');
    await fake.settled();
    await sleep(50);
    assert.equal(hook.received.length, 0);
    assert.equal(fake.deliveries.length, 0);
  });

  test('duplicate sends the same event_id twice', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    fake.setWebhookMode('duplicate');
    await upload(fake, hooks(hook.url, { webhook_output_format: 'json' }));
    await waitUntil(() => hook.received.length === 2, 5000, 'two deliveries');
    const ids = hook.received.map((r) => (JSON.parse(r.body) as { event_id: string }).event_id);
    assert.equal(ids[0], ids[1]);
    assert.equal(hook.received[0]!.body, hook.received[1]!.body);
  });

  test('outOfOrder sends a stale parse.running after the terminal event', async () => {
    const fake = await fakeWith();
    const hook = await receiver();
    fake.setWebhookMode('outOfOrder');
    await upload(fake, hooks(hook.url, { webhook_output_format: 'json' }));
    await waitUntil(() => hook.received.length === 2, 5000, 'two deliveries');
    assert.deepEqual(hook.received.map((r) => r.headers['x-webhook-event-type']), ['parse.success', 'parse.running']);
  });

  test('finishJob ends a job by hand when processing never ends on its own', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const hook = await receiver();
    const jobId = await upload(fake, hooks(hook.url, { webhook_output_format: 'json' }));
    await sleep(50);
    assert.equal(fake.jobs.get(jobId)!.status, 'PENDING');
    await fake.finishJob(jobId, { status: 'CANCELLED' });
    await fake.settled();
    assert.equal(hook.received.length, 0, 'parse.cancelled was not subscribed');
    assert.equal(fake.jobs.get(jobId)!.status, 'CANCELLED');
    await assert.rejects(fake.finishJob(jobId), /already CANCELLED/);
  });

  test('webhook_url: https anywhere, plain http only to loopback', async () => {
    const fake = await fakeWith();
    for (const [url, status] of [
      ['https://hooks.example.com/x', 200],
      ['http://127.0.0.1:9/x', 200],
      ['http://localhost:9/x', 200],
      ['http://hooks.example.com/x', 422],
      ['ftp://127.0.0.1/x', 422],
    ] as const) {
      const response = await post(fake, { tier: 'fast', version: 'latest', webhook_configurations: [{ webhook_url: url }] });
      assert.equal(response.status, status, url);
    }
  });
});

describe('fake llamaparse v2: the admin API', () => {
  test('the admin API drives the same controls', async () => {
    const fake = await fakeWith({ processingMs: Number.POSITIVE_INFINITY });
    const admin = (path: string, body: unknown) =>
      fetch(`${fake.url}/_fake/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal((await admin('fail-next', { route: 'upload', status: 500 })).status, 200);
    const first = await post(fake, { tier: 'fast', version: 'latest' });
    assert.equal(first.status, 500);
    const jobId = await upload(fake);
    const finished = (await (await admin(`jobs/${jobId}/finish`, { status: 'FAILED', errorMessage: 'TIMEOUT: m' })).json()) as { status: string; errorMessage: string };
    assert.deepEqual([finished.status, finished.errorMessage], ['FAILED', 'TIMEOUT: m']);

    assert.equal((await admin('outcome', { outcome: { failedPages: [1] }, fileName: 'bell-rock.txt' })).status, 200);
    assert.equal((await admin('processing-ms', { ms: 10 })).status, 200);
    const partial = await upload(fake);
    await waitUntil(() => fake.jobs.get(partial)!.status === 'FAILED', 5000, 'one page of one failed: past the ratio');
    assert.equal((await admin('clear-cache', {})).status, 200);
    assert.equal((await admin('reset', {})).status, 200);

    const state = (await (await fetch(`${fake.url}/_fake/state`)).json()) as { requests: Record<string, number>; jobs: Array<{ id: string; pages: unknown[] }> };
    assert.equal(state.requests.upload, 3);
    assert.deepEqual(state.jobs.find((j) => j.id === partial)!.pages, [{ pageNumber: 1, success: false, error: 'PAGE_PARSING_FAILED: the page could not be parsed' }]);
  });
});
