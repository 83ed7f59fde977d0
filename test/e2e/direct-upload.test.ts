// Direct uploads with the fs storage: POST /v1/uploads returns a signed URL on the API's own
// PUT /v1/storage/upload route; POST /v1/documents {"uploadId"} registers the file. Every bad
// input answers a stable code and leaves nothing half-written.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { api, startStack, waitForStatus, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

const stack: TestStack = await startStack({ env: { DIRECT_UPLOAD_MAX_BYTES: String(1024 * 1024) } });
const root = (stack.config.storage as { dir: string }).dir;
const call = api(stack);
const json = (body: unknown, sub?: string) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(sub ? { authorization: `Bearer ${stack.token(sub)}` } : {}) },
  body: JSON.stringify(body),
});

async function reserve(body: Json, sub?: string): Promise<{ status: number; body: Json }> {
  const res = await call('/v1/uploads', json(body, sub));
  return { status: res.status, body: (await res.json()) as Json };
}

async function register(body: Json, sub?: string): Promise<{ status: number; body: Json }> {
  const res = await call('/v1/documents', json(body, sub));
  return { status: res.status, body: (await res.json()) as Json };
}

async function put(r: Json, bytes: Buffer | string): Promise<Response> {
  return fetch(r.upload.url, { method: 'PUT', headers: r.upload.headers, body: bytes });
}

describe('direct upload through the fs storage', () => {
  test('reserve, PUT, register: the document goes to ready', async () => {
    const bytes = await readFile('test/fixtures/sample.pdf');
    const r = await reserve({ fileName: 'dir/../lighthouse.pdf', size: bytes.length, contentType: 'application/pdf' });
    assert.equal(r.status, 201);
    assert.ok(r.body.upload.url.startsWith(`${stack.apiUrl}/v1/storage/upload?token=`), r.body.upload.url);
    assert.equal(r.body.path, `documents/${r.body.uploadId}/original`);
    // No JWT on the PUT: the signed token is the credential.
    const uploaded = await put(r.body, bytes);
    assert.equal(uploaded.status, 200, await uploaded.clone().text());
    const done = await register({ uploadId: r.body.uploadId });
    assert.equal(done.status, 202);
    assert.equal(done.body.id, r.body.uploadId);
    const doc = await waitForStatus(stack, r.body.uploadId, ['ready', 'failed']);
    assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
    assert.equal(doc.fileName, 'lighthouse.pdf');
    assert.equal(doc.size, bytes.length);
    // Registering again is a replay, not a second document.
    const again = await register({ path: r.body.path });
    assert.deepEqual([again.status, again.body.id], [200, r.body.uploadId]);
  });

  test('reservation refusals', async () => {
    assert.equal((await reserve({ fileName: 'a.pdf', size: 2 * 1024 * 1024, contentType: 'application/pdf' })).body.error.code, 'FILE_TOO_LARGE');
    assert.equal((await reserve({ fileName: 'a.png', size: 10, contentType: 'image/png' })).body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
    for (const bad of [{}, { fileName: 'a.pdf', size: 0, contentType: 'application/pdf' }, { fileName: '', size: 1, contentType: 'text/plain' }, { fileName: 'a', size: 1.5, contentType: 'text/plain' }, { fileName: 'a', size: -1, contentType: 'text/plain' }]) {
      const r = await reserve(bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal(r.body.error.code, 'VALIDATION_ERROR');
    }
    const anonymous = await fetch(new URL('/v1/uploads', stack.apiUrl), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(anonymous.status, 401);
  });

  test('registration refusals leave no document and no file', async () => {
    // Nothing uploaded yet.
    const r = await reserve({ fileName: 'a.txt', size: 12, contentType: 'text/plain' });
    assert.equal((await register({ uploadId: r.body.uploadId })).body.error.code, 'UPLOAD_NOT_RECEIVED');
    // Another user cannot register it, nor learn that it exists.
    assert.equal((await register({ uploadId: r.body.uploadId }, 'user-b')).body.error.code, 'UPLOAD_NOT_FOUND');
    // Malformed bodies.
    assert.equal((await register({ uploadId: 'nope' })).body.error.code, 'INVALID_REGISTRATION');
    assert.equal((await register({ path: '../../etc/passwd' })).body.error.code, 'INVALID_REGISTRATION');
    // More bytes than declared: the signed URL refuses them.
    const tooMany = await put(r.body, 'x'.repeat(13));
    assert.equal(tooMany.status, 413);
    // Fewer bytes than declared: registration refuses, and removes the object.
    const short = await put(r.body, 'hello');
    assert.equal(short.status, 200);
    const mismatch = await register({ uploadId: r.body.uploadId });
    assert.deepEqual([mismatch.status, mismatch.body.error.code], [422, 'UPLOAD_SIZE_MISMATCH']);
    assert.equal(existsSync(path.join(root, 'documents', r.body.uploadId)), false);
    assert.equal((await call(`/v1/documents/${r.body.uploadId}`)).status, 404);

    // A declared PDF whose bytes are an image: 415, nothing kept.
    const png = await readFile('test/fixtures/not-supported.png');
    const p = await reserve({ fileName: 'x.pdf', size: png.length, contentType: 'application/pdf' });
    assert.equal((await put(p.body, png)).status, 200);
    const sniffed = await register({ uploadId: p.body.uploadId });
    assert.deepEqual([sniffed.status, sniffed.body.error.code], [415, 'UNSUPPORTED_MEDIA_TYPE']);
    assert.equal(existsSync(path.join(root, 'documents', p.body.uploadId)), false);
    const rows = await stack.db.sql`select 1 from docpipe.events where stream_id in (${r.body.uploadId}, ${p.body.uploadId})`;
    assert.equal(rows.length, 0);
  });

  test('a reservation registered after it expired answers 410 and keeps nothing', async () => {
    const r = await reserve({ fileName: 'a.txt', size: 5, contentType: 'text/plain' });
    assert.equal((await put(r.body, 'hello')).status, 200);
    await stack.db.sql`update docpipe.pending_uploads set expires_at = now() - interval '1 second' where document_id = ${r.body.uploadId}`;
    const late = await register({ uploadId: r.body.uploadId });
    assert.deepEqual([late.status, late.body.error.code], [410, 'UPLOAD_EXPIRED']);
    assert.equal(existsSync(path.join(root, 'documents', r.body.uploadId)), false);
    assert.equal((await register({ uploadId: r.body.uploadId })).body.error.code, 'UPLOAD_NOT_FOUND');
  });

  test('a tampered or reused signed URL is refused', async () => {
    const r = await reserve({ fileName: 'a.txt', size: 5, contentType: 'text/plain' });
    const url = new URL(r.body.upload.url);
    const token = url.searchParams.get('token')!;
    url.searchParams.set('token', token.slice(0, -2) + (token.endsWith('A') ? 'BB' : 'AA'));
    assert.equal((await fetch(url, { method: 'PUT', headers: r.body.upload.headers, body: 'hello' })).status, 401);
    assert.equal((await put(r.body, 'hello')).status, 200);
    assert.equal((await put(r.body, 'hello')).status, 409);
  });
});
