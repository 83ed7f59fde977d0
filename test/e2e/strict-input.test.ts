// What a client can hold and send, end to end over real HTTP: per-user and global upload caps
// (429, 503) answered before the body is read, a minimum transfer rate (408), client aborts
// logged once at info, text Postgres cannot store refused (400 INVALID_TEXT) or, for file
// names, cleaned, exactly one multipart part (a file named "file"), and JSON properties no
// schema allows refused instead of stripped. Every refusal has the one error shape and leaves
// nothing stored. Slow and aborting clients are raw sockets, so the test decides each byte.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSigner } from 'fast-jwt';
import { pino } from 'pino';
import { WEBHOOK_TOKEN_HEADER, webhookCredential } from '../../src/security/webhook-auth.ts';
import { api, startStack, upload, TEST_JWT_SECRET, TEST_WEBHOOK_SECRET } from '../helpers/stack.ts';

type Json = Record<string, any>;

// Every log line of the stack, parsed, to assert what an aborted upload logs.
const logLines: Json[] = [];
const logSink = new Writable({
  write(chunk: Buffer, _encoding, callback) {
    for (const line of chunk.toString('utf8').split('\n')) if (line) logLines.push(JSON.parse(line) as Json);
    callback();
  },
});

const PER_USER = 2;
const MAX = 3;
const MIN_RATE = 1024;
const MAX_CONNECTIONS = 16;
const stack = await startStack({
  worker: false,
  webhooks: true,
  logger: pino({ level: 'info' }, logSink),
  env: {
    MAX_UPLOAD_BYTES: String(64 * 1024),
    UPLOAD_CONCURRENCY_PER_USER: String(PER_USER),
    UPLOAD_CONCURRENCY_MAX: String(MAX),
    UPLOAD_MIN_BYTES_PER_SECOND: String(MIN_RATE),
    MAX_CONNECTIONS: String(MAX_CONNECTIONS),
  },
});
const root = (stack.config.storage as { dir: string }).dir;
const apiPort = Number(new URL(stack.apiUrl).port);
const url = (route: string) => new URL(route, stack.apiUrl);
const bearer = (sub = 'user-a') => ({ authorization: `Bearer ${stack.token(sub)}` });

/** Asserts status, code and the one error shape, with the request id echoed in the header. */
function assertError(status: number, headers: Record<string, string | null>, text: string, expected: number, code: string): Json {
  let body: Json;
  try {
    body = JSON.parse(text) as Json;
  } catch {
    assert.fail(`expected a JSON error body for ${expected}, got ${status}: ${text}`);
  }
  assert.equal(status, expected, `expected ${expected}, got ${status}: ${text}`);
  assert.deepEqual(Object.keys(body), ['error'], text);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'requestId'], text);
  assert.equal(body.error.code, code, text);
  assert.ok(typeof body.error.message === 'string' && body.error.message.length > 0, text);
  assert.equal(body.error.requestId, headers['x-request-id'], 'error.requestId matches the x-request-id header');
  return body;
}

async function expectError(res: Response, status: number, code: string): Promise<Json> {
  return assertError(res.status, Object.fromEntries(res.headers), await res.text(), status, code);
}

async function listDir(dir: string, recursive = false): Promise<string[]> {
  try {
    return (await readdir(path.join(root, dir), { recursive })).map(String).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

const tmpFiles = () => listDir('.tmp', true);

async function counts(): Promise<{ documents: number; events: number; pending: number; deliveries: number }> {
  const [row] = await stack.db.sql<{ documents: number; events: number; pending: number; deliveries: number }[]>`
    select (select count(*)::int from docpipe.document_status) as documents,
           (select count(*)::int from docpipe.events) as events,
           (select count(*)::int from docpipe.pending_uploads) as pending,
           (select count(*)::int from docpipe.webhook_deliveries) as deliveries`;
  return row!;
}

/** Runs `request` and asserts it stored nothing: no row, no event, no file, no new temp file. */
async function storesNothing(request: () => Promise<void>): Promise<void> {
  const before = await counts();
  const documentsBefore = await listDir('documents');
  const tmpBefore = await tmpFiles();
  await request();
  assert.deepEqual(await counts(), before, 'no row or event was written');
  assert.deepEqual(await listDir('documents'), documentsBefore, 'no document directory was left');
  assert.deepEqual(await tmpFiles(), tmpBefore, 'no temp file left in .tmp');
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const post = (body: NonNullable<RequestInit['body']>, headers: Record<string, string> = {}, sub = 'user-a') =>
  fetch(url('/v1/documents'), { method: 'POST', body, headers: { ...bearer(sub), ...headers } });

/** A multipart body written by hand (busboy-level details such as header lines and odd names). */
function multipart(parts: { headers: string[]; body: string | Buffer }[], boundary = 'strict-boundary'): { body: Buffer; headers: Record<string, string> } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\n${p.headers.join('\r\n')}\r\n\r\n`, 'utf8'), Buffer.from(p.body), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

const TEXT = 'The Bell Rock lighthouse stands on a reef in the North Sea.\n';

/** A FormData with TEXT as the file `name`, like `curl -F name=@a.txt`. */
function fileForm(name = 'file'): FormData {
  const form = new FormData();
  form.append(name, new Blob([TEXT]), 'a.txt');
  return form;
}
const filePart = (name = 'file', fileName = 'a.txt', body: string | Buffer = TEXT) => ({
  headers: [`content-disposition: form-data; name="${name}"; filename="${fileName}"`, 'content-type: text/plain'],
  body,
});

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * An HTTP/1.1 request written on a raw socket: the test sends each byte when it chooses, and
 * sees whether the server answered and whether it closed the connection.
 */
class RawRequest {
  readonly socket: net.Socket;
  readonly response: Promise<RawResponse | null>;
  readonly closed: Promise<void>;

  constructor(head: string) {
    this.socket = net.connect(apiPort, '127.0.0.1');
    this.socket.on('error', () => {});
    this.socket.write(head);
    let buffer = Buffer.alloc(0);
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.response = new Promise((resolve) => {
      const parse = () => {
        const end = buffer.indexOf('\r\n\r\n');
        if (end === -1) return;
        const [statusLine, ...lines] = buffer.subarray(0, end).toString('latin1').split('\r\n');
        const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
        const length = Number(headers['content-length'] ?? 0);
        if (buffer.length < end + 4 + length) return;
        resolve({ status: Number(statusLine!.split(' ')[1]), headers, body: buffer.subarray(end + 4, end + 4 + length).toString('utf8') });
      };
      this.socket.on('data', (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        parse();
      });
      this.socket.once('close', () => resolve(null));
    });
  }

  write(bytes: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

const SLOW_BOUNDARY = 'slow-boundary';
const SLOW_PART_HEAD = `--${SLOW_BOUNDARY}\r\ncontent-disposition: form-data; name="file"; filename="slow.txt"\r\ncontent-type: text/plain\r\n\r\n`;

/** A multipart upload of `fileBytes` whose headers and first file byte are sent; the rest is up to the test. */
function slowUpload(sub: string, requestId: string, fileBytes = 4096): RawRequest {
  const length = SLOW_PART_HEAD.length + fileBytes + `\r\n--${SLOW_BOUNDARY}--\r\n`.length;
  return new RawRequest(
    `POST /v1/documents HTTP/1.1\r\nhost: 127.0.0.1:${apiPort}\r\nauthorization: Bearer ${stack.token(sub)}\r\nx-request-id: ${requestId}\r\n` +
      `content-type: multipart/form-data; boundary=${SLOW_BOUNDARY}\r\ncontent-length: ${length}\r\n\r\n${SLOW_PART_HEAD}a`,
  );
}

const PUT_SIZE = 4096;

/** Reserves a direct upload (POST /v1/uploads), for a PUT to its signed URL. */
async function reserve(sub = 'putter', size = PUT_SIZE): Promise<Json> {
  const res = await fetch(url('/v1/uploads'), {
    method: 'POST',
    headers: { ...bearer(sub), 'content-type': 'application/json' },
    body: JSON.stringify({ fileName: 'slow.txt', size, contentType: 'text/plain' }),
  });
  const reserved = (await res.json()) as Json;
  assert.equal(res.status, 201, JSON.stringify(reserved));
  return reserved;
}

/** Starts the PUT of a reserved upload with its first byte; the rest is up to the test. */
function slowPut(reserved: Json, requestId: string): RawRequest {
  const target = new URL(reserved.upload.url as string);
  return new RawRequest(
    `PUT ${target.pathname}${target.search} HTTP/1.1\r\nhost: 127.0.0.1:${apiPort}\r\nx-request-id: ${requestId}\r\n` +
      `content-type: text/plain\r\ncontent-length: ${PUT_SIZE}\r\n\r\na`,
  );
}

/** Waits until `n` uploads have a temp file: admitted, and their first file byte written. */
const admitted = (n: number) => until(`${n} uploads in progress`, async () => (await tmpFiles()).length === n);

test('upload caps: the N+1th upload of a user gets 429 at once, other users pass until the process is full (503)', async (t) => {
  const held: RawRequest[] = [];
  const documentsBefore = (await counts()).documents;
  try {
    for (let i = 0; i < PER_USER; i++) held.push(slowUpload('cap-a', `cap-a-${i}`));
    await admitted(PER_USER);

    await t.test('the same user: 429 TOO_MANY_UPLOADS with Retry-After, before the body is read, connection closed', async () => {
      await storesNothing(async () => {
        const started = performance.now();
        const res = await post(fileForm(), {}, 'cap-a');
        assert.ok(performance.now() - started < 2_000, 'answered at once');
        assert.ok(Number(res.headers.get('retry-after')) > 0, 'Retry-After is set');
        assert.equal(res.headers.get('connection'), 'close');
        await expectError(res, 429, 'TOO_MANY_UPLOADS');
      });
      // A body that never comes does not matter either: the answer does not wait for it.
      const raw = slowUpload('cap-a', `cap-a-raw-${randomUUID()}`);
      const answer = await raw.response;
      assert.ok(answer, 'answered');
      assertError(answer.status, answer.headers, answer.body, 429, 'TOO_MANY_UPLOADS');
      await raw.closed;
    });

    await t.test('another user still gets through', async () => {
      const res = await upload(stack, Buffer.from(TEXT), 'other.txt', { sub: 'cap-b' });
      assert.equal(res.status, 202, await res.text());
    });

    await t.test('the process at UPLOAD_CONCURRENCY_MAX: 503 SERVER_BUSY with Retry-After, for multipart and for the signed-URL PUT', async () => {
      held.push(slowUpload('cap-b', 'cap-b-0'));
      await admitted(MAX);
      await storesNothing(async () => {
        const res = await upload(stack, Buffer.from(TEXT), 'c.txt', { sub: 'cap-c' });
        assert.ok(Number(res.headers.get('retry-after')) > 0);
        await expectError(res, 503, 'SERVER_BUSY');
      });
      const reserved = await reserve('cap-c', TEXT.length);
      const put = await fetch(reserved.upload.url as string, { method: 'PUT', headers: reserved.upload.headers as Record<string, string>, body: TEXT });
      await expectError(put, 503, 'SERVER_BUSY');
      assert.deepEqual(await listDir(`documents/${reserved.uploadId}`), [], 'nothing stored for the refused PUT');
    });
  } finally {
    for (const h of held) h.destroy();
  }
  await until('the held uploads to be released', async () => (await tmpFiles()).length === 0);
  assert.equal((await counts()).documents, documentsBefore + 1, 'only the other user\'s upload was stored');
  // Slots are free again once the held uploads are gone.
  await until('a slot', async () => (await upload(stack, Buffer.from(TEXT), 'later.txt', { sub: 'cap-a' })).status === 202);
});

test('a client that aborts mid-upload is logged once, at info, without a stack; nothing is stored (multipart and signed-URL PUT)', async () => {
  const multipartId = `abort-multipart-${randomUUID()}`;
  const putId = `abort-put-${randomUUID()}`;
  const reserved = await reserve();
  const firstLine = logLines.length;
  await storesNothing(async () => {
    const a = slowUpload('aborter', multipartId);
    const b = slowPut(reserved, putId);
    await admitted(2);
    a.destroy();
    b.destroy();
    await until('the aborted uploads to be cleaned up', async () => (await tmpFiles()).length === 0);
    // The handler's last log line comes after the temp file is gone.
    await until('the abort log lines', async () => logLines.slice(firstLine).filter((l) => l.requestId === multipartId || l.requestId === putId).length >= 2);
    await sleep(200);
  });
  const lines = logLines.slice(firstLine);
  for (const id of [multipartId, putId]) {
    const mine = lines.filter((l) => l.requestId === id);
    assert.equal(mine.length, 1, `one log line for ${id}: ${JSON.stringify(mine)}`);
    assert.equal(mine[0]!.level, 30, 'at info');
    assert.equal(mine[0]!.code, 'UPLOAD_ABORTED');
    assert.equal(mine[0]!.err, undefined, 'no error object, no stack');
  }
  const loud = lines.filter((l) => l.level >= 40);
  assert.deepEqual(loud, [], 'no warn or error line');
});

// The two slow-client checks take 10-17 s each: they run side by side.
test('slow clients', { concurrency: 2 }, async (t) => {
  void t.test('headers dribbled, or nothing sent at all: the connection is closed after headersTimeout (15 s)', async () => {
    const started = performance.now();
    const idle = new RawRequest('');
    const dribble = new RawRequest(`GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:${apiPort}\r\n`);
    const drip = setInterval(() => dribble.write('x-slow: 1\r\n'), 1_000);
    try {
      const answer = await dribble.response;
      assert.ok(answer, 'the dribbler is answered');
      assertError(answer.status, answer.headers, answer.body, 408, 'REQUEST_TIMEOUT');
      await Promise.all([idle.closed, dribble.closed]);
      const elapsed = performance.now() - started;
      assert.ok(elapsed > 14_000 && elapsed < 20_000, `closed after ${elapsed.toFixed(0)} ms`);
    } finally {
      clearInterval(drip);
      idle.destroy();
      dribble.destroy();
    }
  });
  void t.test('an upload body slower than UPLOAD_MIN_BYTES_PER_SECOND over 10 s is cut off: 408, connection closed, nothing stored', minRateCutOff);
});

async function minRateCutOff(): Promise<void> {
  const reserved = await reserve();
  const firstLine = logLines.length;
  await storesNothing(async () => {
    const a = slowUpload('slowpoke', `slow-multipart-${randomUUID()}`);
    const b = slowPut(reserved, `slow-put-${randomUUID()}`);
    // 1 byte a second, far below the minimum, until the server gives up (bounded).
    const drip = setInterval(() => {
      a.write('a');
      b.write('a');
    }, 1_000);
    try {
      const started = performance.now();
      const [ra, rb] = await Promise.all([a.response, b.response]);
      const elapsed = performance.now() - started;
      assert.ok(elapsed > 8_000 && elapsed < 14_000, `cut off after ${elapsed.toFixed(0)} ms (a 10 s window)`);
      for (const r of [ra, rb]) {
        assert.ok(r, 'answered before the connection closed');
        assertError(r.status, r.headers, r.body, 408, 'UPLOAD_TOO_SLOW');
        assert.equal(r.headers.connection, 'close');
      }
      await Promise.race([Promise.all([a.closed, b.closed]), sleep(3_000).then(() => assert.fail('the server did not close the connections'))]);
      await until('the temp files to be removed', async () => (await tmpFiles()).length === 0);
    } finally {
      clearInterval(drip);
      a.destroy();
      b.destroy();
    }
  });
  assert.deepEqual(logLines.slice(firstLine).filter((l) => l.level >= 40), [], 'a slow client is no error');
}

test('MAX_CONNECTIONS: connections past the cap are closed at once; the server answers again once they are gone', async () => {
  const firstLine = logLines.length;
  const sockets: net.Socket[] = [];
  try {
    // Other connections (fetch's keep-alive pool) count too, so open until one is refused.
    let refused = false;
    for (let i = 0; i <= MAX_CONNECTIONS && !refused; i++) {
      const socket = net.connect(apiPort, '127.0.0.1');
      socket.on('error', () => {});
      sockets.push(socket);
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      refused = await Promise.race([new Promise<boolean>((resolve) => socket.once('close', () => resolve(true))), sleep(150).then(() => false)]);
    }
    assert.ok(refused, `a connection past ${MAX_CONNECTIONS} was closed by the server`);
  } finally {
    for (const s of sockets) s.destroy();
  }
  await until('the API to answer again', async () => (await fetch(url('/healthz')).catch(() => null))?.status === 200);
  // The operator hears of it, once (at most once a minute), not once per dropped connection.
  const warned = logLines.slice(firstLine).filter((l) => l.level === 40 && /MAX_CONNECTIONS/.test(l.msg));
  assert.equal(warned.length, 1, JSON.stringify(warned));
});

test('text Postgres cannot store is refused with 400 INVALID_TEXT, naming the field', async (t) => {
  const call = api(stack);
  const docRes = await upload(stack, Buffer.from(TEXT), 'text.txt');
  const doc = (await docRes.json()) as Json;
  assert.equal(docRes.status, 202);

  const reprocess = (body: string) => call(`/v1/documents/${doc.id}/reprocess`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  await t.test('reprocess reason with a NUL or a lone surrogate', async () => {
    await storesNothing(async () => {
      const nul = await expectError(await reprocess(JSON.stringify({ reason: 'because\u0000' })), 400, 'INVALID_TEXT');
      assert.match(nul.error.message, /reason .*NUL/);
      const lone = await expectError(await reprocess(JSON.stringify({ reason: 'half \ud83d a smile' })), 400, 'INVALID_TEXT');
      assert.match(lone.error.message, /reason .*surrogate/);
    });
  });

  const reserve = (body: Json) => call('/v1/uploads', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  await t.test('direct upload fileName and contentType', async () => {
    await storesNothing(async () => {
      const a = await expectError(await reserve({ fileName: 'a\u0000.txt', size: 10, contentType: 'text/plain' }), 400, 'INVALID_TEXT');
      assert.match(a.error.message, /fileName/);
      const b = await expectError(await reserve({ fileName: '\udc00.txt', size: 10, contentType: 'text/plain' }), 400, 'INVALID_TEXT');
      assert.match(b.error.message, /fileName .*surrogate/);
      const c = await expectError(await reserve({ fileName: 'a.txt', size: 10, contentType: 'text/plain; charset=\u0000' }), 400, 'INVALID_TEXT');
      assert.match(c.error.message, /contentType/);
      await expectError(await reserve({ fileName: 'a.txt', size: 10, contentType: 'text/\ud800' }), 400, 'INVALID_TEXT');
    });
  });

  await t.test('a token whose sub or email holds a NUL or a lone surrogate -> 401 AUTH_INVALID_TOKEN', async () => {
    const sign = createSigner({ algorithm: 'HS256', key: TEST_JWT_SECRET, aud: stack.jwt.audience, expiresIn: 60_000 });
    await storesNothing(async () => {
      for (const claims of [{ sub: 'user\u0000a' }, { sub: 'user\ud800' }, { sub: 'user-a', email: 'a\u0000@example.com' }]) {
        const res = await fetch(url('/v1/documents'), { method: 'POST', headers: { authorization: `Bearer ${sign(claims)}` }, body: fileForm() });
        await expectError(res, 401, 'AUTH_INVALID_TOKEN');
        await expectError(await fetch(url('/v1/documents'), { headers: { authorization: `Bearer ${sign(claims)}` } }), 401, 'AUTH_INVALID_TOKEN');
      }
    });
  });

  await t.test('webhook payload ids (stored in webhook_deliveries and the event)', async () => {
    const id = randomUUID();
    const send = (payload: Json) =>
      fetch(new URL(`/v1/webhooks/llamaparse/${id}`, stack.webhookUrl), {
        method: 'POST',
        headers: { 'content-type': 'application/json', [WEBHOOK_TOKEN_HEADER]: webhookCredential(TEST_WEBHOOK_SECRET, 'llamaparse', id, 1) },
        body: JSON.stringify(payload),
      });
    await storesNothing(async () => {
      const a = await expectError(await send({ event_id: 'evt\u0000', event_type: 'parse.success', data: { job_id: 'job-1' } }), 400, 'INVALID_TEXT');
      assert.match(a.error.message, /event_id/);
      const b = await expectError(await send({ event_id: 'evt-1', event_type: 'parse.success', data: { job_id: 'job-\udfff' } }), 400, 'INVALID_TEXT');
      assert.match(b.error.message, /data\.job_id/);
    });
  });
});

test('file names are cleaned, not refused: controls, bidi and invisible characters and lone surrogates removed, 255 code points at most', async () => {
  const stored = async (body: Buffer, headers: Record<string, string>) => {
    const res = await post(body, headers);
    const accepted = (await res.json()) as Json;
    assert.equal(res.status, 202, JSON.stringify(accepted));
    return ((await (await api(stack)(`/v1/documents/${accepted.id}`)).json()) as Json).fileName as string;
  };
  // 2,500 emoji (5,000 UTF-16 units): cut to 255 whole emoji, never half a surrogate pair.
  const emoji = '😀'.repeat(2_500);
  const form = new FormData();
  form.append('file', new Blob([TEXT]), `${emoji}.txt`);
  const res = await post(form);
  const accepted = (await res.json()) as Json;
  assert.equal(res.status, 202, JSON.stringify(accepted));
  const long = ((await (await api(stack)(`/v1/documents/${accepted.id}`)).json()) as Json).fileName as string;
  assert.equal(long, '😀'.repeat(255));
  assert.ok(long.isWellFormed());

  const nasty = multipart([filePart('file', 'in\u0000voice\u202Efdp.exe\u200B\u2066x\u2069\u0007\uFEFF.txt')]);
  assert.equal(await stored(nasty.body, nasty.headers), 'invoicefdp.exex.txt');
  // A lone surrogate can only come through an encoded name (filename*=utf-16le''...).
  const lone = multipart([{ headers: [`content-disposition: form-data; name="file"; filename*=utf-16le''%3D%D8a%00.%00t%00x%00t%00`, 'content-type: text/plain'], body: TEXT }]);
  assert.equal(await stored(lone.body, lone.headers), 'a.txt');
  const nothingLeft = multipart([filePart('file', '\u202E\u200B')]);
  assert.equal(await stored(nothingLeft.body, nothingLeft.headers), 'document');
});

test('multipart: exactly one part, a file named "file"', async (t) => {
  const refused = async (parts: Parameters<typeof multipart>[0], code: string, message?: RegExp) => {
    let body: Json = {};
    await storesNothing(async () => {
      const m = multipart(parts);
      body = await expectError(await post(m.body, m.headers), 400, code);
    });
    if (message) assert.match(body.error.message, message);
    return body;
  };
  const field = (name: string, value = 'x') => ({ headers: [`content-disposition: form-data; name="${name}"`], body: value });

  await t.test('two file parts -> TOO_MANY_FILES (the second is not silently dropped)', async () => {
    await refused([filePart(), filePart('file', 'b.txt')], 'TOO_MANY_FILES', /exactly one file/);
    await refused([filePart(), filePart('other', 'b.txt')], 'TOO_MANY_FILES');
  });

  await t.test('a file under another field name -> UNEXPECTED_FIELD naming it', async () => {
    await refused([filePart('upload')], 'UNEXPECTED_FIELD', /"upload".*"file"/);
    await storesNothing(async () => {
      const body = await expectError(await post(fileForm('document')), 400, 'UNEXPECTED_FIELD');
      assert.match(body.error.message, /"document".*"file"/);
    });
  });

  await t.test('any form field, alone, before or after the file -> UNEXPECTED_FIELD', async () => {
    await refused([field('note', 'I forgot the file')], 'UNEXPECTED_FIELD', /"note".*no form fields/);
    await refused([field('title'), filePart()], 'UNEXPECTED_FIELD', /"title"/);
    await refused([filePart(), field('title')], 'UNEXPECTED_FIELD', /"title"/);
    // A large field is refused on its header, without reading it: the connection is closed
    // rather than drained.
    await storesNothing(async () => {
      const m = multipart([field('blob', 'z'.repeat(2_000_000)), filePart()]);
      const res = await post(m.body, m.headers);
      assert.equal(res.headers.get('connection'), 'close');
      const body = await expectError(res, 400, 'UNEXPECTED_FIELD');
      assert.match(body.error.message, /"blob"/);
    });
  });

  await t.test('a field name over 100 bytes, 1 MB included -> INVALID_MULTIPART (fieldNameSize)', async () => {
    await refused([filePart('f'.repeat(101))], 'INVALID_MULTIPART', /field name longer than 100 bytes.*fieldNameSize/);
    await refused([filePart('n'.repeat(1024 * 1024))], 'INVALID_MULTIPART', /fieldNameSize/);
  });

  await t.test('too many header lines in a part -> INVALID_MULTIPART (headerPairs)', async () => {
    const headers = [...Array.from({ length: 20 }, (_, i) => `x-padding-${i}: ${i}`), 'content-disposition: form-data; name="file"; filename="a.txt"'];
    await refused([{ headers, body: TEXT }], 'INVALID_MULTIPART', /header lines.*headerPairs/);
  });

  await t.test('a part header block over 16 KiB -> INVALID_MULTIPART (headerSize)', async () => {
    await refused([{ headers: [`x-padding: ${'p'.repeat(20_000)}`, 'content-disposition: form-data; name="file"; filename="a.txt"'], body: TEXT }], 'INVALID_MULTIPART', /headerSize/);
  });

  await t.test('a second part that is no form part at all -> INVALID_MULTIPART (parts)', async () => {
    await refused([filePart(), { headers: ['x-junk: 1'], body: 'junk' }], 'INVALID_MULTIPART', /too many parts.*parts = 1/);
    await refused([filePart(), ...Array.from({ length: 50 }, () => ({ headers: ['x-junk: 1'], body: 'junk' }))], 'INVALID_MULTIPART', /too many parts/);
  });

  await t.test('an oversized boundary or preamble -> INVALID_MULTIPART', async () => {
    await storesNothing(async () => {
      const m = multipart([filePart()], 'b'.repeat(71));
      await expectError(await post(m.body, m.headers), 400, 'INVALID_MULTIPART');
      const p = multipart([filePart()]);
      const preamble = await expectError(await post(Buffer.concat([Buffer.alloc(20_000, 'x'), Buffer.from('\r\n'), p.body]), p.headers), 400, 'INVALID_MULTIPART');
      assert.match(preamble.error.message, /no boundary in the first 16384 bytes/);
    });
  });

  await t.test('one file named "file", even split into 1-byte chunks, is accepted', async () => {
    const m = multipart([filePart('file', 'ok.txt')]);
    const body = new ReadableStream({
      start(controller) {
        for (const byte of m.body) controller.enqueue(new Uint8Array([byte]));
        controller.close();
      },
    });
    const res = await fetch(url('/v1/documents'), { method: 'POST', body, headers: { ...bearer(), ...m.headers }, duplex: 'half' } as RequestInit);
    assert.equal(res.status, 202, await res.text());
  });
});

test('JSON properties that no schema allows are refused (400 VALIDATION_ERROR), not stripped', async () => {
  const call = api(stack);
  const docRes = await upload(stack, Buffer.from(TEXT), 'json.txt');
  const doc = (await docRes.json()) as Json;
  await storesNothing(async () => {
    const a = await expectError(
      await call(`/v1/documents/${doc.id}/reprocess`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'x', run: 99 }) }),
      400,
      'VALIDATION_ERROR',
    );
    assert.match(a.error.message, /"run"/);
    const b = await expectError(
      await call('/v1/uploads', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ fileName: 'a.txt', size: 10, contentType: 'text/plain', public: true }) }),
      400,
      'VALIDATION_ERROR',
    );
    assert.match(b.error.message, /"public"/);
  });
});

test('no warn or error line was logged by anything a client did here (but the connection-limit warning)', () => {
  const loud = logLines.filter((l) => l.level >= 40 && !/MAX_CONNECTIONS/.test(l.msg));
  assert.deepEqual(loud, []);
});
