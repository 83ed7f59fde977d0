// Limits at the edge, before any route runs (services/http.ts): the number and size of request
// headers, the X-Request-Id and Idempotency-Key a client sends, the nesting and size of a JSON
// body. Each refusal is a 4xx with a stable code, nothing is stored, and the service answers the
// next request as before.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { sep } from 'node:path';
import { after, test } from 'node:test';
import { MAX_HEADERS, MAX_JSON_DEPTH } from '../../src/services/http.ts';
import { startStack } from '../helpers/stack.ts';

const stack = await startStack({ worker: false });
after(() => stack.close());
const auth = { authorization: `Bearer ${stack.token('user-edge')}` };

async function expectError(res: Response, status: number, code: string): Promise<void> {
  const body = (await res.json()) as { error?: { code?: string; requestId?: string } };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error?.code, code);
  assert.ok(body.error?.requestId);
}

/** Rows of the event log and upload reservations, and files in storage (outside its temp area). */
async function stored(): Promise<{ rows: number; files: number }> {
  const rows = (await stack.runtime.sql`select (select count(*) from docpipe.events)::int + (select count(*) from docpipe.pending_uploads)::int as n`)[0]!.n as number;
  const dir = stack.config.storage.kind === 'fs' ? stack.config.storage.dir : null;
  // The temp area is not storage: readiness checks write and remove a probe file there at any moment.
  const files = dir
    ? (await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])).filter((e) => e.isFile() && !e.parentPath.split(sep).includes('.tmp')).length
    : 0;
  return { rows, files };
}

async function nothingStored<T>(fn: () => Promise<T>): Promise<T> {
  const before = await stored();
  const result = await fn();
  assert.deepEqual(await stored(), before, 'nothing stored in the database or in storage');
  const after = await fetch(`${stack.apiUrl}/v1/documents`, { headers: auth });
  assert.equal(after.status, 200, 'the service still answers');
  return result;
}

/** A raw request over a socket: the head as written, the status line back. */
function raw(head: string): Promise<string> {
  const { hostname, port } = new URL(stack.apiUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(head));
    let answer = '';
    socket.on('data', (c) => (answer += c));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
    setTimeout(() => socket.destroy(), 5000).unref();
  });
}

test('too many headers: 431 TOO_MANY_HEADERS; at the limit, answered', async () => {
  await nothingStored(async () => {
    const many = Object.fromEntries(Array.from({ length: MAX_HEADERS + 1 }, (_, i) => [`x-filler-${i}`, 'x']));
    await expectError(await fetch(`${stack.apiUrl}/v1/documents`, { method: 'POST', headers: { ...auth, ...many }, body: '{}' }), 431, 'TOO_MANY_HEADERS');
    // fetch adds a few of its own (host, connection, accept, ...): leave room for them.
    const fewer = Object.fromEntries(Array.from({ length: MAX_HEADERS - 10 }, (_, i) => [`x-filler-${i}`, 'x']));
    assert.equal((await fetch(`${stack.apiUrl}/v1/documents`, { headers: { ...auth, ...fewer } })).status, 200);
  });
});

test('a head over 16 KB: 431 HEADERS_TOO_LARGE in the error shape, before routing', async () => {
  const answer = await raw(`GET /v1/documents HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
  assert.match(answer, /^HTTP\/1\.1 431 /);
  assert.match(answer, /"code":"HEADERS_TOO_LARGE"/);
});

test('X-Request-Id: a plain one is echoed; too long, or with spaces, controls or non-ASCII: 400 INVALID_REQUEST_ID', async () => {
  const ok = await fetch(`${stack.apiUrl}/v1/documents`, { headers: { ...auth, 'x-request-id': 'trace-01:abc.DEF_9' } });
  assert.equal(ok.headers.get('x-request-id'), 'trace-01:abc.DEF_9');
  await nothingStored(async () => {
    for (const bad of ['r'.repeat(129), 'has space', 'tab\there', 'ümlaut', 'a;b', '{"json":1}']) {
      const res = await fetch(`${stack.apiUrl}/v1/documents`, { method: 'POST', headers: { ...auth, 'x-request-id': bad }, body: new FormData() });
      assert.notEqual(res.headers.get('x-request-id'), bad, 'never echoed');
      await expectError(res, 400, 'INVALID_REQUEST_ID');
    }
  });
  // A newline cannot even be sent: the HTTP parser refuses the head (400), never a log line.
  const answer = await raw(`GET /v1/documents HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\nforged: log\r\n\r\n`);
  assert.match(answer, /^HTTP\/1\.1 400 /);
});

test('Idempotency-Key: over 255 characters or not printable ASCII: 400 INVALID_IDEMPOTENCY_KEY', async () => {
  await nothingStored(async () => {
    for (const bad of ['k'.repeat(256), 'key with space', 'cl\u00e9']) {
      const form = new FormData();
      form.append('file', new Blob(['text']), 'a.txt');
      await expectError(await fetch(`${stack.apiUrl}/v1/documents`, { method: 'POST', headers: { ...auth, 'idempotency-key': bad }, body: form }), 400, 'INVALID_IDEMPOTENCY_KEY');
    }
  });
});

test(`JSON nested past ${MAX_JSON_DEPTH} levels: 400 JSON_TOO_DEEP; over the body limit: 413`, async () => {
  await nothingStored(async () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    await expectError(await fetch(`${stack.apiUrl}/v1/uploads`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: deep }), 400, 'JSON_TOO_DEEP');
    const nested = JSON.stringify({ fileName: 'a.txt', size: 10, contentType: 'text/plain', extra: JSON.parse('{"a":'.repeat(40) + '1' + '}'.repeat(40)) });
    await expectError(await fetch(`${stack.apiUrl}/v1/uploads`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: nested }), 400, 'JSON_TOO_DEEP');
    const huge = JSON.stringify({ fileName: 'a.txt', size: 10, contentType: 'text/plain', pad: 'p'.repeat(2 * 1024 * 1024) });
    await expectError(await fetch(`${stack.apiUrl}/v1/uploads`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: huge }), 413, 'BODY_TOO_LARGE');
    await expectError(await fetch(`${stack.apiUrl}/v1/uploads`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"__proto__":{"admin":true}}' }), 400, 'INVALID_JSON');
  });
});
