// No secret reaches the logs. The real CLI (`docpipe all`, a child process) runs at
// LOG_LEVEL=debug with distinctive secret values, against the fakes of LlamaParse, OpenAI and
// Supabase Storage, and then with fs storage (whose signed upload URLs point at the api itself);
// traffic that carries secrets goes through it: bearer tokens (valid, invalid, expired), uploads
// to ready, signed direct-upload URLs, webhook deliveries with their credentials and forged ones,
// `?token=` queries. Then everything the process printed, stdout and stderr, is searched for
// every secret and token used, and every stdout line must be a JSON log line with the fields
// docs/OPERATIONS.md lists.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { QUEUES } from '../../src/queue/jobs.ts';
import { lcSignature, webhookCredential } from '../../src/security/webhook-auth.ts';
import { signUserToken, type JwtSettings } from '../../src/security/tokens.ts';
import { freePort } from '../../src/util/free-port.ts';
import { startFakeLlamaParse } from '../fakes/llamaparse.ts';
import { startFakeOpenAI } from '../fakes/openai.ts';
import { startFakeSupabaseStorage } from '../fakes/supabase-storage.ts';
import { createDatabase } from '../helpers/db.ts';
import { spawnCli, stackEnv, upload, waitForStatus, type ApiTarget } from '../helpers/stack.ts';

type Json = Record<string, any>;

const hex = (bytes = 12) => randomBytes(bytes).toString('hex');

/** The secrets of the deployment: each distinctive, so that any appearance in the output is a leak. */
const SECRETS = {
  JWT_SECRET: `jwt-secret-logcheck-${hex()}`,
  WEBHOOK_SECRET: `webhook-secret-logcheck-${hex()}`,
  LLAMAPARSE_WEBHOOK_SIGNING_SECRET: `lc-signing-secret-logcheck-${hex()}`,
  LLAMAPARSE_API_KEY: `llx-logcheck-${hex()}`,
  OPENAI_API_KEY: `sk-logcheck-${hex()}`,
};

const [llama, openai, supabase] = await Promise.all([
  startFakeLlamaParse({ apiKey: SECRETS.LLAMAPARSE_API_KEY, webhookRetryDelaysMs: [200, 400], cache: false }),
  startFakeOpenAI({ apiKey: SECRETS.OPENAI_API_KEY }),
  startFakeSupabaseStorage({ buckets: ['docpipe-logcheck'] }),
]);
const dataDirs: string[] = [];
after(async () => {
  await Promise.all([llama.close(), openai.close(), supabase.close()]);
  for (const dir of dataDirs) await rm(dir, { recursive: true, force: true });
});

/** Every credential that went over the wire, by what it is: none may appear in the output. */
const used = new Map<string, string>(Object.entries({ ...SECRETS, SUPABASE_SERVICE_ROLE_KEY: supabase.serviceKey }));
function remember(what: string, value: string): string {
  used.set(`${what} #${used.size}`, value);
  return value;
}

const jwt: JwtSettings = { secret: SECRETS.JWT_SECRET, audience: 'authenticated', issuer: undefined };

interface Running {
  target: ApiTarget;
  webhookUrl: string;
  stop(): Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** `docpipe all` as a child process (spawnCli) on a database of its own, at LOG_LEVEL=debug, JSON lines. */
async function startAll(env: Record<string, string>): Promise<Running> {
  const db = await createDatabase();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-logcheck-'));
  dataDirs.push(dataDir);
  const apiPort = await freePort();
  const webhookPort = await freePort();
  const child: ChildProcess = spawnCli(
    'all',
    stackEnv({
      databaseUrl: db.url,
      dataDir,
      apiPort,
      webhookPort,
      webhooks: true,
      env: { ...SECRETS, LOG_LEVEL: 'debug', LOG_FORMAT: 'json', QUEUE_POLLING_INTERVAL_SECONDS: '1', ...env },
    }),
  );
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c));
  child.stderr!.on('data', (c: Buffer) => (stderr += c));
  for (const deadline = Date.now() + 120_000; !stdout.includes('"docpipe started"'); await sleep(100)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`docpipe all did not start:\n${stdout}\n${stderr}`);
  }
  const target: ApiTarget = {
    apiUrl: `http://127.0.0.1:${apiPort}`,
    token: (sub = 'user-a', options = {}) => remember('a valid bearer token', signUserToken(jwt, sub, options)),
  };
  return {
    target,
    webhookUrl: `http://127.0.0.1:${webhookPort}`,
    async stop() {
      const exited = child.exitCode !== null ? Promise.resolve() : once(child, 'exit');
      child.kill('SIGTERM');
      await exited;
      return { code: child.exitCode, stdout, stderr };
    },
  };
}

/** `fetch` with a bearer token, remembered as used. */
function call(target: ApiTarget, route: string, token: string, init: RequestInit = {}): Promise<Response> {
  remember('a bearer token', token);
  return fetch(new URL(route, target.apiUrl), { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) } });
}

/** POST /v1/uploads, PUT to the signed URL, register: the document's id, once ready. */
async function directUpload(target: ApiTarget, body: Buffer, fileName: string): Promise<string> {
  const token = target.token();
  const reserved = await call(target, '/v1/uploads', token, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ fileName, size: body.length, contentType: 'text/plain' }) });
  assert.equal(reserved.status, 201, await reserved.clone().text());
  const r = (await reserved.json()) as Json;
  const signed = new URL(r.upload.url as string);
  const urlToken = signed.searchParams.get('token');
  assert.ok(urlToken, `a signed URL carries a token: ${signed.origin}${signed.pathname}`);
  remember('a signed upload URL token', urlToken);
  const put = await fetch(signed, { method: 'PUT', headers: r.upload.headers as Record<string, string>, body });
  assert.ok(put.ok, `PUT to the signed URL: ${put.status} ${await put.text()}`);
  const registered = await call(target, '/v1/documents', token, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ uploadId: r.uploadId }) });
  assert.equal(registered.status, 202, await registered.clone().text());
  const doc = await waitForStatus(target, r.uploadId as string, ['ready', 'failed']);
  assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
  return r.uploadId as string;
}

/** Requests that must fail authentication, each with a token of its own. */
async function badBearers(target: ApiTarget): Promise<void> {
  const tokens = {
    garbage: `not-a-jwt-${hex()}`,
    'wrong key': signUserToken({ ...jwt, secret: `another-secret-logcheck-${hex()}` }, 'user-a'),
    expired: signUserToken(jwt, 'user-a', { expiresInSeconds: -120 }),
  };
  for (const [what, token] of Object.entries(tokens)) {
    const res = await call(target, '/v1/documents', token);
    assert.equal(res.status, 401, `${what}: ${await res.text()}`);
  }
}

/** `?token=` on api routes: answered however the route answers, never logged. */
async function tokenQueries(target: ApiTarget, documentId: string): Promise<void> {
  const valid = target.token();
  for (const route of [`/v1/documents/${documentId}`, '/healthz', '/v1/storage/upload', '/v1/no-such-route']) {
    const query = remember('a ?token= query', `query-token-logcheck-${hex()}`);
    const res = await call(target, `${route}?token=${query}&wait=1`, valid, route === '/v1/storage/upload' ? { method: 'PUT', body: 'x' } : {});
    assert.ok(res.status < 500, `${route}: ${res.status}`);
    await res.arrayBuffer();
  }
}

/** Every line of stdout is a JSON log line with the fields every line carries. */
function logLines(stdout: string): Json[] {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  assert.ok(lines.length > 20, `only ${lines.length} lines`);
  return lines.map((line, i) => {
    let parsed: Json;
    try {
      parsed = JSON.parse(line) as Json;
    } catch {
      assert.fail(`stdout line ${i + 1} is not JSON: ${line.slice(0, 300)}`);
    }
    for (const field of ['level', 'time', 'service', 'msg']) assert.ok(parsed[field] !== undefined && parsed[field] !== '', `line ${i + 1} has no ${field}: ${line.slice(0, 300)}`);
    assert.equal(typeof parsed.level, 'number');
    assert.ok(!Number.isNaN(Date.parse(parsed.time)), `line ${i + 1}: time ${parsed.time}`);
    return parsed;
  });
}

/** None of the credentials used, nor the signature part of one (a JWT's, a webhook credential's). */
function assertNoSecrets(output: string): void {
  const leaks: string[] = [];
  for (const [what, value] of used) {
    const signature = value.split('.').at(-1)!;
    const parts = signature !== value && signature.length >= 16 ? [value, signature] : [value];
    for (const part of parts) {
      const at = output.indexOf(part);
      if (at >= 0) leaks.push(`${what}${part === value ? '' : ' (a part of it)'}: ...${output.slice(Math.max(0, at - 200), at + part.length + 50)}...`);
    }
  }
  assert.deepEqual(leaks, []);
  // Whatever the field: a token= in the output has its value replaced.
  assert.deepEqual([...output.matchAll(/token=(?!\[redacted\])[^&"\s\\]+/gi)].map((m) => m[0]), []);
}

test('nothing secret is logged, at debug, by docpipe all under traffic that carries secrets', { timeout: 300_000 }, async (t) => {
  // 1. Supabase Storage, LlamaParse and OpenAI (the fakes), with webhooks and their signatures.
  const remote = await startAll({
    DOCPIPE_STORAGE: 'supabase',
    SUPABASE_URL: supabase.url,
    SUPABASE_SERVICE_ROLE_KEY: supabase.serviceKey,
    SUPABASE_STORAGE_BUCKET: 'docpipe-logcheck',
    DOCPIPE_PARSER: 'llamaparse',
    LLAMAPARSE_BASE_URL: llama.url,
    LLAMAPARSE_POLL_AFTER_SECONDS: '3',
    DOCPIPE_EMBEDDER: 'openai',
    OPENAI_BASE_URL: openai.url,
    EMBEDDING_DIMENSIONS: '256',
  });
  const target = remote.target;
  const res = await upload(target, await readFile('test/fixtures/sample.pdf'), 'sample.pdf');
  assert.equal(res.status, 202, await res.clone().text());
  const { id } = (await res.json()) as { id: string };
  const doc = await waitForStatus(target, id, ['ready', 'failed']);
  assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
  await directUpload(target, Buffer.from('The keeper logged the weather at every watch.\n'.repeat(40)), 'direct.txt');
  await badBearers(target);
  await tokenQueries(target, id);
  const search = await call(target, '/v1/search', target.token(), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'lighthouse keeper' }) });
  assert.equal(search.status, 200, await search.text());

  // Webhooks: LlamaCloud's deliveries carried their credentials and signatures; then forged ones.
  await llama.settled(5_000);
  const delivered = llama.deliveries.filter((d) => d.status === 200);
  assert.ok(delivered.length >= 1, JSON.stringify(llama.deliveries.map((d) => d.status)));
  for (const d of llama.deliveries) {
    for (const [name, value] of Object.entries(d.headers)) if (/token|signature/i.test(name)) remember(`webhook header ${name}`, value);
  }
  const hook = `${remote.webhookUrl}/v1/webhooks/llamaparse/${id}`;
  const body = JSON.stringify({ event_id: `evt-${hex(4)}`, event_type: 'parse.success', data: { job_id: doc.parser.jobId } });
  const forged = [
    { 'x-docpipe-webhook-token': remember('a forged credential', `v1.1.${randomBytes(32).toString('base64url')}`) },
    { 'x-docpipe-webhook-token': remember('a credential of another run', webhookCredential(SECRETS.WEBHOOK_SECRET, 'llamaparse', id, 7)), 'lc-signature': remember('a forged signature', `sha256=${hex(32)}`) },
    { 'lc-signature': remember('a signature with the wrong secret', lcSignature(`wrong-${hex()}`, body)) },
  ];
  for (const headers of forged) {
    const answer = await fetch(hook, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    assert.equal(answer.status, 401, await answer.text());
  }
  // A replay of the accepted delivery, with its real credential and signature: answered, not appended twice.
  const replay = delivered[0]!;
  const again = await fetch(`${remote.webhookUrl}${new URL(replay.url).pathname}`, { method: 'POST', headers: replay.headers, body: replay.body });
  assert.equal(again.status, 200, `replay: ${await again.text()}`);
  const first = await remote.stop();

  // 2. fs storage: its signed upload URLs point at the api itself (PUT /v1/storage/upload?token=).
  const local = await startAll({});
  await directUpload(local.target, Buffer.from('The relief crew arrived at low water.\n'.repeat(40)), 'local.txt');
  const forgedUpload = await fetch(new URL(`/v1/storage/upload?token=${remember('a forged upload token', `forged-upload-token-${hex()}`)}`, local.target.apiUrl), { method: 'PUT', body: 'x' });
  assert.equal(forgedUpload.status, 401, await forgedUpload.text());
  await badBearers(local.target);
  const second = await local.stop();

  t.diagnostic(`checked ${used.size} credentials against ${first.stdout.length + second.stdout.length} bytes of stdout, ${first.stderr.length + second.stderr.length} of stderr`);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(second.code, 0, second.stderr);
  for (const run of [first, second]) assertNoSecrets(run.stdout + '\n' + run.stderr);

  const lines = [...logLines(first.stdout), ...logLines(second.stdout)];
  const services = new Set(lines.map((l) => l.service));
  for (const service of ['all', 'api', 'webhook', 'worker']) assert.ok(services.has(service), `lines of ${service}: ${[...services].join(', ')}`);
  assert.ok(lines.some((l) => l.msg === 'webhook rejected: authentication failed' && l.service === 'webhook'), 'the forged deliveries were logged, without their credentials');

  // The access line: one per request, the route's pattern, never the URL.
  const access = lines.filter((l) => l.msg === 'request completed');
  assert.ok(access.length >= 20, `request completed lines: ${access.length}`);
  for (const line of access) {
    assert.ok(['api', 'webhook'].includes(line.service), JSON.stringify(line));
    assert.equal(typeof line.requestId, 'string', JSON.stringify(line));
    assert.equal(typeof line.method, 'string', JSON.stringify(line));
    assert.match(line.route, /^(?:\/[^?]*|unmatched)$/, JSON.stringify(line));
    assert.equal(typeof line.statusCode, 'number', JSON.stringify(line));
    assert.equal(typeof line.durationMs, 'number', JSON.stringify(line));
  }
  assert.ok(access.some((l) => l.statusCode === 401 && l.route === '/v1/documents'), 'the refused bearers have access lines');
  for (const line of access.filter((l) => l.service === 'api' && l.route.startsWith('/v1/'))) assert.equal(line.clientAddress, '127.0.0.1', `the api's lines say who sent the request: ${JSON.stringify(line)}`);

  // The worker's job lines: what a document's story is followed by (docs/OPERATIONS.md).
  const finished = lines.filter((l) => l.msg === 'job finished');
  assert.ok(finished.length >= 4, `job finished lines: ${finished.length}`);
  for (const line of finished) {
    assert.equal(typeof line.stage, 'string', JSON.stringify(line));
    assert.equal(typeof line.durationMs, 'number', JSON.stringify(line));
    if (line.queue === QUEUES.maintenance) continue;
    assert.equal(typeof line.documentId, 'string', JSON.stringify(line));
    assert.equal(typeof line.correlationId, 'string', JSON.stringify(line));
  }
  assert.ok(finished.some((l) => l.documentId === id), 'the uploaded document has job lines');
});
