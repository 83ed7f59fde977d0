// Everything a client can get wrong answers a precise 4xx in the one error shape
// {"error":{"code","message","requestId"}}, never a 500, and leaves nothing behind: no
// document row, no file. Another user's document is indistinguishable from a missing one.
// A document that cannot be parsed fails at once with a recorded reason, without retries.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { createSigner } from 'fast-jwt';
import { api, startStack, upload, waitForStatus, TEST_JWT_SECRET, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

const MAX_UPLOAD_BYTES = 1024;
// One stack for the file, with a small upload limit (every other upload here is smaller).
const stack = await startStack({ env: { MAX_UPLOAD_BYTES: String(MAX_UPLOAD_BYTES) } });

/** Asserts status, error code and the error shape (with the request id echoed in the header). */
async function expectError(res: Response, status: number, code: string | RegExp): Promise<Json> {
  const text = await res.text();
  let body: Json;
  try {
    body = JSON.parse(text) as Json;
  } catch {
    assert.fail(`expected a JSON error body for ${status}, got ${res.status}: ${text}`);
  }
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(typeof body.error, 'object', text);
  if (typeof code === 'string') assert.equal(body.error.code, code, text);
  else assert.match(body.error.code, code, text);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  assert.equal(typeof body.error.requestId, 'string');
  assert.ok(body.error.requestId.length > 0, 'error.requestId is present');
  assert.equal(body.error.requestId, res.headers.get('x-request-id'), 'error.requestId matches the x-request-id header');
  return body;
}

const url = (route: string) => new URL(route, stack.apiUrl);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
const nowSeconds = () => Math.floor(Date.now() / 1000);

function form(bytes: Buffer | Uint8Array, fileName: string): FormData {
  const f = new FormData();
  f.append('file', new Blob([bytes]), fileName);
  return f;
}

/**
 * What a request could leave behind under the storage root: the document directories
 * (`documents/<id>`) and any file in the temp area. Compared as directories, not files, because
 * the worker keeps writing parsed output into the directories of earlier, accepted uploads.
 */
async function storedState(): Promise<{ documents: string[]; tmpFiles: string[] }> {
  const list = async (dir: string) => {
    try {
      return await readdir(path.join((stack.config.storage as { dir: string }).dir, dir), { recursive: dir === '.tmp' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  };
  return { documents: (await list('documents')).sort(), tmpFiles: await list('.tmp') };
}

async function documentCount(): Promise<number> {
  const [row] = await stack.db.sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_status`;
  return row!.n;
}

/**
 * Runs `request` and asserts it stored nothing: no new document row, no new file (an empty .tmp
 * is fine). The worker writes through .tmp too: a test that uploads a document first waits for
 * it to finish before calling this.
 */
async function storesNothing(request: () => Promise<void>): Promise<void> {
  const docsBefore = await documentCount();
  const before = await storedState();
  await request();
  assert.equal(await documentCount(), docsBefore, 'no document_status row was written');
  const after = await storedState();
  assert.deepEqual(after.documents, before.documents, 'no document directory was left under the storage root');
  assert.deepEqual(after.tmpFiles, [], 'nothing left in .tmp');
  const [owned] = await stack.db.sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_status where id::text = any(${after.documents})`;
  assert.equal(owned!.n, after.documents.length, 'every document directory belongs to a document');
}

async function uploadOk(bytes: Buffer, fileName: string, sub = 'user-a'): Promise<string> {
  const res = await upload(stack, bytes, fileName, { sub });
  const body = (await res.json()) as Json;
  assert.equal(res.status, 202, JSON.stringify(body));
  return body.id as string;
}

const SMALL_TEXT = Buffer.from('The Bell Rock lighthouse stands on a reef in the North Sea, covered by the tide twice a day.\n');

test('authentication: every /v1 route requires a valid bearer token', async (t) => {
  const sign = (options: { key: string; aud: string; expiresIn?: number }) => createSigner({ algorithm: 'HS256', ...options });

  await t.test('no Authorization header -> 401 AUTH_MISSING_TOKEN', async () => {
    const res = await fetch(url('/v1/documents'));
    await expectError(res, 401, 'AUTH_MISSING_TOKEN');
    assert.equal(res.headers.get('www-authenticate'), 'Bearer');
    await expectError(await fetch(url(`/v1/documents/${randomUUID()}`)), 401, 'AUTH_MISSING_TOKEN');
    await expectError(await fetch(url('/v1/documents'), { method: 'POST', body: form(SMALL_TEXT, 'a.txt') }), 401, 'AUTH_MISSING_TOKEN');
  });

  await t.test('another scheme -> 401 AUTH_MISSING_TOKEN', async () => {
    await expectError(await fetch(url('/v1/documents'), { headers: { authorization: 'Basic dXNlcjpwYXNz' } }), 401, 'AUTH_MISSING_TOKEN');
  });

  await t.test('a token signed with another secret -> 401 AUTH_INVALID_TOKEN', async () => {
    const token = sign({ key: 'another-secret-another-secret-another-secret', aud: stack.jwt.audience, expiresIn: 60_000 })({ sub: 'user-a' });
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(token) }), 401, 'AUTH_INVALID_TOKEN');
  });

  await t.test('an expired token -> 401 AUTH_TOKEN_EXPIRED', async () => {
    const token = stack.token('user-a', { expiresInSeconds: -60 });
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(token) }), 401, 'AUTH_TOKEN_EXPIRED');
  });

  await t.test('an alg:none token -> 401', async () => {
    const unsigned = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'user-a', aud: stack.jwt.audience, exp: nowSeconds() + 600, iat: nowSeconds() })}.`;
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(unsigned) }), 401, 'AUTH_INVALID_TOKEN');
  });

  await t.test('a token whose header claims another algorithm -> 401', async () => {
    const payload = b64url({ sub: 'user-a', aud: stack.jwt.audience, exp: nowSeconds() + 600 });
    const forged = `${b64url({ alg: 'HS512', typ: 'JWT' })}.${payload}.${randomBytes(64).toString('base64url')}`;
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(forged) }), 401, 'AUTH_INVALID_TOKEN');
  });

  await t.test('a token for another audience -> 401', async () => {
    const token = sign({ key: TEST_JWT_SECRET, aud: 'some-other-service', expiresIn: 60_000 })({ sub: 'user-a' });
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(token) }), 401, 'AUTH_INVALID_TOKEN');
  });

  await t.test('a token without sub or without exp -> 401', async () => {
    const noSub = sign({ key: TEST_JWT_SECRET, aud: stack.jwt.audience, expiresIn: 60_000 })({ role: 'authenticated' });
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(noSub) }), 401, 'AUTH_INVALID_TOKEN');
    const noExp = sign({ key: TEST_JWT_SECRET, aud: stack.jwt.audience })({ sub: 'user-a' });
    await expectError(await fetch(url('/v1/documents'), { headers: bearer(noExp) }), 401, 'AUTH_INVALID_TOKEN');
  });

  await t.test('garbage in place of a token -> 401 AUTH_INVALID_TOKEN', async () => {
    await expectError(await fetch(url('/v1/documents'), { headers: bearer('not.a.jwt') }), 401, 'AUTH_INVALID_TOKEN');
  });

  await t.test('a valid token passes', async () => {
    const res = await api(stack)('/v1/documents');
    assert.equal(res.status, 200);
  });
});

test('another user\'s document answers 404 NOT_FOUND everywhere; the owner still sees it', async () => {
  const id = await uploadOk(SMALL_TEXT, 'mine.txt', 'owner-1');
  const intruder = api(stack, 'intruder-1');
  await expectError(await intruder(`/v1/documents/${id}`), 404, 'NOT_FOUND');
  await expectError(await intruder(`/v1/documents/${id}?wait=1`), 404, 'NOT_FOUND');
  await expectError(await intruder(`/v1/documents/${id}/events`), 404, 'NOT_FOUND');
  await expectError(await intruder(`/v1/documents/${id}`, { method: 'DELETE' }), 404, 'NOT_FOUND');
  await expectError(await intruder(`/v1/documents/${id}/reprocess`, { method: 'POST' }), 404, 'NOT_FOUND');
  const listed = (await (await intruder('/v1/documents')).json()) as Json;
  assert.deepEqual(listed.documents, []);

  // Indistinguishable from a document that does not exist.
  const missing = await intruder(`/v1/documents/${randomUUID()}`);
  const a = (await missing.json()) as Json;
  const b = (await (await intruder(`/v1/documents/${id}`)).json()) as Json;
  assert.equal(a.error.message, b.error.message);

  const doc = await waitForStatus(stack, id, ['ready', 'failed'], { sub: 'owner-1', timeoutMs: 30_000 });
  assert.equal(doc.status, 'ready', 'the intruder\'s DELETE and reprocess did nothing');
  assert.equal(doc.run, 1);
  assert.equal((await api(stack, 'owner-1')(`/v1/documents/${id}/events`)).status, 200);
});

test('uploads: size, type, emptiness and multipart shape are checked, and a refused upload stores nothing', async (t) => {
  const post = (body: NonNullable<RequestInit['body']>, headers: Record<string, string> = {}) =>
    fetch(url('/v1/documents'), { method: 'POST', body, headers: { ...bearer(stack.token('user-a')), ...headers } });

  await t.test('oversize -> 413 FILE_TOO_LARGE', async () => {
    await storesNothing(async () => {
      await expectError(await post(form(Buffer.alloc(5 * 1024, 'lighthouse '), 'big.txt')), 413, 'FILE_TOO_LARGE');
    });
    // One byte over the limit is too large; exactly the limit is fine.
    await storesNothing(async () => {
      await expectError(await post(form(Buffer.alloc(MAX_UPLOAD_BYTES + 1, 'a'), 'big.txt')), 413, 'FILE_TOO_LARGE');
    });
    const res = await post(form(Buffer.alloc(MAX_UPLOAD_BYTES, 'lighthouse '), 'limit.txt'));
    assert.equal(res.status, 202, await res.clone().text());
    // The worker parses it meanwhile, writing through .tmp: let it finish, or the next
    // subtest's "nothing left in .tmp" would see its temp file.
    await waitForStatus(stack, ((await res.json()) as { id: string }).id, ['ready', 'failed']);
  });

  await t.test('a PNG -> 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    const png = await readFile('test/fixtures/not-supported.png');
    await storesNothing(async () => {
      await expectError(await post(form(png, 'not-supported.png')), 415, 'UNSUPPORTED_MEDIA_TYPE');
    });
    // The name does not matter: the bytes decide.
    await storesNothing(async () => {
      await expectError(await post(form(png, 'looks-fine.txt')), 415, 'UNSUPPORTED_MEDIA_TYPE');
    });
  });

  await t.test('random binary bytes -> 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    await storesNothing(async () => {
      await expectError(await post(form(randomBytes(700), 'data.pdf')), 415, 'UNSUPPORTED_MEDIA_TYPE');
    });
  });

  await t.test('an empty file -> 400 EMPTY_FILE', async () => {
    await storesNothing(async () => {
      await expectError(await post(form(Buffer.alloc(0), 'empty.txt')), 400, 'EMPTY_FILE');
    });
  });

  await t.test('a JSON body that is not a direct-upload registration -> 400 INVALID_REGISTRATION', async () => {
    await storesNothing(async () => {
      await expectError(await post(JSON.stringify({ file: 'hello' }), { 'content-type': 'application/json' }), 400, 'INVALID_REGISTRATION');
    });
  });

  await t.test('a text/plain body -> 415', async () => {
    await storesNothing(async () => {
      await expectError(await post('just some text', { 'content-type': 'text/plain' }), 415, 'NOT_MULTIPART');
    });
  });

  await t.test('multipart with a body that is not multipart -> 400 INVALID_MULTIPART', async () => {
    await storesNothing(async () => {
      await expectError(await post('this is not a multipart body at all', { 'content-type': 'multipart/form-data; boundary=----docpipe-boundary' }), 400, 'INVALID_MULTIPART');
    });
  });

  await t.test('multipart without a boundary -> 400 INVALID_MULTIPART', async () => {
    await storesNothing(async () => {
      await expectError(await post('--x\r\ncontent-disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello\r\n--x--\r\n', { 'content-type': 'multipart/form-data' }), 400, 'INVALID_MULTIPART');
    });
  });

  await t.test('multipart cut off in the middle of the file part -> 400 INVALID_MULTIPART', async () => {
    const truncated =
      '------b\r\ncontent-disposition: form-data; name="file"; filename="a.txt"\r\ncontent-type: text/plain\r\n\r\n' +
      'The Bell Rock lighthouse stands on a reef in the North Sea';
    await storesNothing(async () => {
      await expectError(await post(truncated, { 'content-type': 'multipart/form-data; boundary=----b' }), 400, 'INVALID_MULTIPART');
    });
  });

  await t.test('multipart whose only part has no usable header -> 400 INVALID_MULTIPART', async () => {
    // A header line without a colon: the part has no Content-Disposition, so it is no form part at all.
    const broken = '------b\r\nthis header has no colon\r\n\r\nhello\r\n------b--\r\n';
    await storesNothing(async () => {
      await expectError(await post(broken, { 'content-type': 'multipart/form-data; boundary=----b' }), 400, 'INVALID_MULTIPART');
    });
  });

  await t.test('multipart with no part at all -> 400 MISSING_FILE', async () => {
    // (A form field instead of the file is UNEXPECTED_FIELD: test/e2e/strict-input.test.ts.)
    await storesNothing(async () => {
      await expectError(await post(new FormData()), 400, 'MISSING_FILE');
    });
  });

  await t.test('an invalid Idempotency-Key -> 400 INVALID_IDEMPOTENCY_KEY', async () => {
    await storesNothing(async () => {
      await expectError(await post(form(SMALL_TEXT, 'a.txt'), { 'idempotency-key': 'has spaces in it' }), 400, 'INVALID_IDEMPOTENCY_KEY');
    });
    await storesNothing(async () => {
      await expectError(await post(form(SMALL_TEXT, 'a.txt'), { 'idempotency-key': 'k'.repeat(256) }), 400, 'INVALID_IDEMPOTENCY_KEY');
    });
  });

  await t.test('an Idempotency-Key reused with another file -> 409 IDEMPOTENCY_KEY_REUSED', async () => {
    const key = `bad-input-${randomUUID()}`;
    const first = await upload(stack, SMALL_TEXT, 'a.txt', { idempotencyKey: key });
    assert.equal(first.status, 202);
    // Parsed and embedded first: the worker's writes go through .tmp (see storesNothing).
    await waitForStatus(stack, ((await first.json()) as { id: string }).id, ['ready', 'failed']);
    await storesNothing(async () => {
      const other = Buffer.concat([SMALL_TEXT, Buffer.from('And a second sentence.\n')]);
      await expectError(await upload(stack, other, 'a.txt', { idempotencyKey: key }), 409, 'IDEMPOTENCY_KEY_REUSED');
    });
  });
});

test('ids, query strings and routes are validated', async (t) => {
  const call = api(stack);
  const id = await uploadOk(SMALL_TEXT, 'valid.txt');

  await t.test('an unknown uuid -> 404 NOT_FOUND', async () => {
    const unknown = randomUUID();
    await expectError(await call(`/v1/documents/${unknown}`), 404, 'NOT_FOUND');
    await expectError(await call(`/v1/documents/${unknown}/events`), 404, 'NOT_FOUND');
    await expectError(await call(`/v1/documents/${unknown}`, { method: 'DELETE' }), 404, 'NOT_FOUND');
    await expectError(await call(`/v1/documents/${unknown}/reprocess`, { method: 'POST' }), 404, 'NOT_FOUND');
  });

  await t.test('an id that is not a uuid -> 400 VALIDATION_ERROR', async () => {
    await expectError(await call('/v1/documents/not-a-uuid'), 400, 'VALIDATION_ERROR');
    await expectError(await call('/v1/documents/1234/events'), 400, 'VALIDATION_ERROR');
    await expectError(await call(`/v1/documents/${id}x`, { method: 'DELETE' }), 400, 'VALIDATION_ERROR');
    await expectError(await call("/v1/documents/'%20or%201=1--/reprocess", { method: 'POST' }), 400, 'VALIDATION_ERROR');
  });

  await t.test('?wait out of range or not a number -> 400 VALIDATION_ERROR', async () => {
    await expectError(await call(`/v1/documents/${id}?wait=999`), 400, 'VALIDATION_ERROR');
    await expectError(await call(`/v1/documents/${id}?wait=-1`), 400, 'VALIDATION_ERROR');
    await expectError(await call(`/v1/documents/${id}?wait=soon`), 400, 'VALIDATION_ERROR');
  });

  await t.test('list: bad limit or status -> 400 VALIDATION_ERROR', async () => {
    await expectError(await call('/v1/documents?limit=0'), 400, 'VALIDATION_ERROR');
    await expectError(await call('/v1/documents?limit=101'), 400, 'VALIDATION_ERROR');
    await expectError(await call('/v1/documents?status=deleted'), 400, 'VALIDATION_ERROR');
    await expectError(await call('/v1/documents?status=bogus'), 400, 'VALIDATION_ERROR');
  });

  await t.test('a cursor this API did not issue -> 400 INVALID_CURSOR', async () => {
    await expectError(await call(`/v1/documents?cursor=${Buffer.from('not-json').toString('base64url')}`), 400, 'INVALID_CURSOR');
    await expectError(await call(`/v1/documents?cursor=${b64url({ t: 'yesterday', i: randomUUID() })}`), 400, 'INVALID_CURSOR');
    await expectError(await call(`/v1/documents?cursor=${b64url({ t: new Date().toISOString(), i: 'not-a-uuid' })}`), 400, 'INVALID_CURSOR');
    // Date.parse accepts '1' (and much else Postgres does not): still a 400, never a 500.
    await expectError(await call(`/v1/documents?cursor=${b64url({ t: '1', i: randomUUID() })}`), 400, 'INVALID_CURSOR');
    await expectError(await call(`/v1/documents?cursor=${b64url({ t: 'March 7, 2024', i: randomUUID() })}`), 400, 'INVALID_CURSOR');
    for (const t of ['2024-02-30T00:00:00.000000Z', '2024-04-01T24:00:00Z', '0000-01-01T00:00:00Z', '2024-04-01T00:00:00+02:00']) {
      await expectError(await call(`/v1/documents?cursor=${b64url({ t, i: randomUUID() })}`), 400, 'INVALID_CURSOR');
    }
    // A well-formed cursor for a position past every document is fine: an empty page.
    const far = (await (await call(`/v1/documents?cursor=${b64url({ t: '1990-01-01T00:00:00.000001Z', i: randomUUID() })}`)).json()) as Json;
    assert.deepEqual(far, { documents: [], nextCursor: null });
    await expectError(await call(`/v1/documents?cursor=${b64url([1, 2])}`), 400, 'INVALID_CURSOR');
    await expectError(await call(`/v1/documents?cursor=${b64url(null)}`), 400, 'INVALID_CURSOR');
    // Not even base64url: refused by the schema.
    await expectError(await call('/v1/documents?cursor=%24%24%24'), 400, /^(VALIDATION_ERROR|INVALID_CURSOR)$/);
  });

  await t.test('reprocess with an invalid body -> 400 VALIDATION_ERROR', async () => {
    const res = await call(`/v1/documents/${id}/reprocess`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'x'.repeat(501) }),
    });
    await expectError(res, 400, 'VALIDATION_ERROR');
    await expectError(
      await call(`/v1/documents/${id}/reprocess`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"reason":' }),
      400,
      'INVALID_JSON',
    );
  });

  await t.test('an unknown route -> 404 ROUTE_NOT_FOUND', async () => {
    await expectError(await call('/v1/nothing-here'), 404, 'ROUTE_NOT_FOUND');
    await expectError(await fetch(url('/nothing-here')), 404, 'ROUTE_NOT_FOUND');
    await expectError(await call('/v1/documents', { method: 'PUT' }), 404, 'ROUTE_NOT_FOUND');
  });
});

test('/healthz and /readyz answer 200 without a token; /readyz lists its checks', async () => {
  const health = await fetch(url('/healthz'));
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: 'ok' });

  const ready = await fetch(url('/readyz'));
  assert.equal(ready.status, 200);
  const body = (await ready.json()) as Json;
  assert.equal(body.status, 'ready');
  assert.ok(Array.isArray(body.checks));
  const names = body.checks.map((c: Json) => c.name).sort();
  assert.deepEqual(names, ['database', 'migrations', 'queue', 'storage']);
  for (const c of body.checks) assert.equal(c.ok, true, `${c.name}: ${c.error ?? ''}`);
});

test('a file that sniffs as PDF but is corrupt fails at once with UNPARSEABLE_DOCUMENT, without retries', async () => {
  const corrupt = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.from('garbage that is not a PDF object table\n'.repeat(8)), randomBytes(64)]);
  const started = performance.now();
  const id = await uploadOk(corrupt, 'broken.pdf');
  const doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 30_000 });
  const elapsed = performance.now() - started;
  assert.equal(doc.status, 'failed');
  assert.equal(doc.mediaType, 'application/pdf');
  assert.equal(doc.error?.code, 'UNPARSEABLE_DOCUMENT');
  assert.ok(typeof doc.error?.message === 'string' && doc.error.message.length > 0, 'the failure has a message');
  assert.equal(doc.attempts.parse, 1, 'no retries for a permanent failure');
  assert.equal(doc.attempts.embed, 0);
  assert.equal(doc.stage, 'parse');
  assert.ok(doc.timestamps.failedAt);
  assert.equal(doc.timestamps.readyAt, null);
  assert.ok(elapsed < 5_000, `failed in ${elapsed.toFixed(0)} ms (no retry backoff)`);

  const events = ((await (await api(stack)(`/v1/documents/${id}/events`)).json()) as Json).events as Json[];
  assert.deepEqual(events.map((e) => e.type), ['DocumentUploaded', 'ParseStarted', 'DocumentFailed']);
  assert.equal(events[2]!.data.code, 'UNPARSEABLE_DOCUMENT');
  const [chunks] = await stack.db.sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_chunks where document_id = ${id}`;
  assert.equal(chunks!.n, 0);

  // A failed document can be reprocessed (and fails the same way again).
  const again = await api(stack)(`/v1/documents/${id}/reprocess`, { method: 'POST' });
  assert.equal(again.status, 202);
  const second = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 30_000 });
  assert.equal(second.status, 'failed');
  assert.equal(second.run, 2);
  assert.equal(second.error?.code, 'UNPARSEABLE_DOCUMENT');
});
