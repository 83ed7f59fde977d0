// The hostile table's text and shape rows, against `docpipe all`: strings Postgres cannot store
// (NUL, unpaired surrogates) and multipart or JSON bodies of the wrong shape. Today they answer
// 500 INTERNAL_ERROR, or are silently accepted, dropped or stripped; here each answers a 4xx with
// a stable code (or is cleaned, for file names), nothing is stored, and no error is logged.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { createSigner } from 'fast-jwt';
import { TEST_JWT_SECRET } from '../helpers/stack.ts';
import { accepted, finalState, startAll, type AllProcess } from './harness.ts';

type Json = Record<string, any>;

const all = await startAll();
const TEXT = Buffer.from('The Bell Rock lighthouse stands on a reef in the North Sea.\n');

async function expectError(res: Response, status: number, code: string): Promise<Json> {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${text}`);
  const body = JSON.parse(text) as Json;
  assert.equal(body.error?.code, code, text);
  assert.equal(typeof body.error.message, 'string');
  assert.equal(body.error.requestId, res.headers.get('x-request-id'));
  return body;
}

const auth = (sub = 'input-user') => ({ authorization: `Bearer ${all.token(sub)}` });

async function documentCount(): Promise<number> {
  const [row] = await all.db.sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_status`;
  return row!.n;
}

async function storedDirectories(): Promise<number> {
  return (await readdir(path.join(all.storageDir, 'documents')).catch(() => [])).length;
}

/** Runs `request` and asserts it left no document row and no file, and logged no error. */
async function nothingStored(all: AllProcess, request: () => Promise<void>): Promise<void> {
  const [docs, dirs, errors] = [await documentCount(), await storedDirectories(), all.logs().filter((l) => l.level >= 50).length];
  await request();
  assert.equal(await documentCount(), docs, 'no document row');
  assert.equal(await storedDirectories(), dirs, 'no stored file');
  assert.equal(all.logs().filter((l) => l.level >= 50).length, errors, 'no error logged');
}

test('a reprocess reason with a NUL or a lone surrogate: 400 INVALID_TEXT, not 500', async () => {
  const id = await accepted(all, TEXT, 'reason.txt', 'input-user');
  assert.equal((await finalState(all, id, 60_000, 'input-user')).status, 'ready');
  for (const reason of ['before\u0000after', 'lone \ud800 surrogate', 'trailing \udfff']) {
    const res = await fetch(`${all.apiUrl}/v1/documents/${id}/reprocess`, {
      method: 'POST',
      headers: { ...auth(), 'content-type': 'application/json' },
      body: JSON.stringify({ reason }),
    });
    await expectError(res, 400, 'INVALID_TEXT');
  }
  const doc = (await (await fetch(`${all.apiUrl}/v1/documents/${id}`, { headers: auth() })).json()) as Json;
  assert.equal(doc.run, 1, 'no reprocess happened');
});

test('a file name of 2,500 emoji: accepted, cut to 255 code points without splitting a pair', async () => {
  const name = `${'😀'.repeat(2_500)}.txt`;
  const id = await accepted(all, TEXT, name, 'input-user');
  const doc = (await (await fetch(`${all.apiUrl}/v1/documents/${id}`, { headers: auth() })).json()) as Json;
  assert.equal([...doc.fileName].length, 255);
  assert.ok((doc.fileName as string).isWellFormed());
  assert.ok([...doc.fileName].every((c: string) => c === '😀'));
});

test('a file name with NUL, bidi controls and zero-width characters is cleaned, not refused', async () => {
  const id = await accepted(all, TEXT, 'in\u0000voice\u202Egpj.exe\u200B.txt', 'input-user');
  const doc = (await (await fetch(`${all.apiUrl}/v1/documents/${id}`, { headers: auth() })).json()) as Json;
  assert.equal(doc.fileName, 'invoicegpj.exe.txt');
});

test('a signed token whose sub holds a NUL or a lone surrogate: 401 AUTH_INVALID_TOKEN', async () => {
  const sign = createSigner({ key: TEST_JWT_SECRET, algorithm: 'HS256', aud: 'authenticated', expiresIn: 60_000 });
  for (const sub of ['user\u0000x', 'user\ud800']) {
    await nothingStored(all, async () => {
      const res = await fetch(`${all.apiUrl}/v1/documents`, { headers: { authorization: `Bearer ${sign({ sub })}` } });
      await expectError(res, 401, 'AUTH_INVALID_TOKEN');
    });
  }
});

function multipart(parts: { name: string; fileName?: string; body: string }[]): { body: string; headers: Record<string, string> } {
  const boundary = '----hostile';
  let body = '';
  for (const part of parts) {
    body += `--${boundary}\r\ncontent-disposition: form-data; name="${part.name}"${part.fileName ? `; filename="${part.fileName}"` : ''}\r\n`;
    if (part.fileName) body += 'content-type: text/plain\r\n';
    body += `\r\n${part.body}\r\n`;
  }
  body += `--${boundary}--\r\n`;
  return { body, headers: { ...auth(), 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

async function postMultipart(parts: { name: string; fileName?: string; body: string }[]): Promise<Response> {
  const { body, headers } = multipart(parts);
  return fetch(`${all.apiUrl}/v1/documents`, { method: 'POST', body, headers });
}

test('two file parts: 400 TOO_MANY_FILES, neither stored', async () => {
  await nothingStored(all, async () => {
    await expectError(await postMultipart([{ name: 'file', fileName: 'a.txt', body: 'first file' }, { name: 'file', fileName: 'b.txt', body: 'second file' }]), 400, 'TOO_MANY_FILES');
  });
});

test('a file under another field name: 400 UNEXPECTED_FIELD naming it', async () => {
  await nothingStored(all, async () => {
    const body = await expectError(await postMultipart([{ name: 'document', fileName: 'a.txt', body: 'a file' }]), 400, 'UNEXPECTED_FIELD');
    assert.match(body.error.message, /document/);
  });
});

test('a 1 MB field name: 400 INVALID_MULTIPART, not a misleading MISSING_FILE', async () => {
  await nothingStored(all, async () => {
    await expectError(await postMultipart([{ name: 'f'.repeat(1024 * 1024), fileName: 'a.txt', body: 'a file' }]), 400, 'INVALID_MULTIPART');
  });
});

test('a JSON property the schema does not allow: 400 VALIDATION_ERROR, not stripped', async () => {
  const id = await accepted(all, TEXT, 'extra.txt', 'input-user');
  assert.equal((await finalState(all, id, 60_000, 'input-user')).status, 'ready');
  const res = await fetch(`${all.apiUrl}/v1/documents/${id}/reprocess`, {
    method: 'POST',
    headers: { ...auth(), 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'x', run: 99 }),
  });
  await expectError(res, 400, 'VALIDATION_ERROR');
  const doc = (await (await fetch(`${all.apiUrl}/v1/documents/${id}`, { headers: auth() })).json()) as Json;
  assert.equal(doc.run, 1);
});
