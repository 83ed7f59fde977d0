// POST /v1/documents streams the body to storage once: the type is sniffed from the bytes as
// they pass (never by reading the stored file back), whatever their split into chunks; a
// storage that stops reading stops the socket (back-pressure end to end); and a large upload
// leaves at most a bounded amount of spent chunks for V8 to collect (upload-guard.ts). The
// storage is the stack's real fs storage, its methods wrapped to count and to pace.
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PutOptions, Storage } from '../../src/providers/types.ts';
import { exposeGc } from '../../src/services/api/upload-guard.ts';
import { api, startStack, upload } from '../helpers/stack.ts';

type Json = Record<string, any>;

const MB = 1024 * 1024;
// No worker: it would read the stored files (parsing) and count as the api reading them back.
const stack = await startStack({ worker: false, env: { MAX_UPLOAD_BYTES: String(256 * MB) } });
const call = api(stack);

/** The stack's storage, its reads counted and its put's body observable (and pausable). */
const storage = stack.runtime.providers.storage as Storage;
const reads = { get: 0, head: 0, stat: 0 };
let onPutBody: ((body: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>) | null = null;
for (const name of ['get', 'head', 'stat'] as const) {
  const original = storage[name].bind(storage) as (...args: unknown[]) => Promise<unknown>;
  (storage as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
    reads[name]++;
    return original(...args);
  };
}
const put = storage.put.bind(storage);
storage.put = (key: string, body: Readable | AsyncIterable<Uint8Array>, options?: PutOptions) =>
  put(key, onPutBody ? onPutBody(body as AsyncIterable<Uint8Array>) : body, options);

/** Records the sizes of the chunks storage.put is given. */
function recordChunks(): number[] {
  const sizes: number[] = [];
  onPutBody = async function* (body) {
    for await (const chunk of body) {
      sizes.push(chunk.length);
      yield chunk;
    }
  };
  return sizes;
}

const BOUNDARY = 'upload-stream-test-boundary';

/**
 * A multipart upload over a raw request, chunked: each `pieces` element is written (and arrives)
 * as a chunk of its own, `gapMs` apart, with back-pressure honoured. Resolves with the answer
 * and how many file bytes were written when it came.
 */
async function rawUpload(fileName: string, pieces: Iterable<Buffer>, options: { gapMs?: number; onWritten?: (bytes: number) => void } = {}): Promise<{ status: number; body: Json }> {
  const req = http.request(new URL('/v1/documents', stack.apiUrl), {
    method: 'POST',
    headers: { authorization: `Bearer ${stack.token()}`, 'content-type': `multipart/form-data; boundary=${BOUNDARY}` },
  });
  req.on('socket', (socket) => socket.setNoDelay(true));
  const answered = new Promise<{ status: number; body: Json }>((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text || '{}') as Json }));
    });
    req.on('error', reject);
  });
  let done = false;
  void answered.finally(() => (done = true)).catch(() => {});
  req.write(`--${BOUNDARY}\r\ncontent-disposition: form-data; name="file"; filename="${fileName}"\r\ncontent-type: application/octet-stream\r\n\r\n`);
  let written = 0;
  for (const piece of pieces) {
    if (done) break;
    if (options.gapMs) await sleep(options.gapMs);
    if (!req.write(piece)) await Promise.race([new Promise((r) => req.once('drain', r)), answered]);
    written += piece.length;
    options.onWritten?.(written);
  }
  if (!done) req.end(`\r\n--${BOUNDARY}--\r\n`);
  return answered;
}

/** The first `head` bytes one by one, then the rest in 1000-byte pieces. */
function* trickle(data: Buffer, head: number): Iterable<Buffer> {
  for (let i = 0; i < head; i++) yield data.subarray(i, i + 1);
  for (let i = head; i < data.length; i += 1000) yield data.subarray(i, i + 1000);
}

test('an upload is sniffed from the bytes it streams: the stored file is never read back', async () => {
  reads.get = reads.head = reads.stat = 0;
  const accepted = await upload(stack, await readFile('test/fixtures/sample.pdf'), 'paper.pdf');
  assert.equal(accepted.status, 202, await accepted.clone().text());
  const { id } = (await accepted.json()) as Json;
  const refused = await upload(stack, await readFile('test/fixtures/not-supported.png'), 'image.png');
  assert.equal(refused.status, 415);
  assert.equal(((await refused.json()) as Json).error.code, 'UNSUPPORTED_MEDIA_TYPE');
  const empty = await upload(stack, Buffer.alloc(0), 'empty.txt');
  assert.equal(((await empty.json()) as Json).error.code, 'EMPTY_FILE');
  assert.deepEqual(reads, { get: 0, head: 0, stat: 0 }, 'no read of storage on the upload path');
  const doc = (await (await call(`/v1/documents/${id}`)).json()) as Json;
  assert.equal(doc.mediaType, 'application/pdf');
});

test('magic bytes that arrive one byte per chunk are recognised (accepted) and refused alike', async (t) => {
  const cases: [string, string, number | string][] = [
    ['test/fixtures/sample.pdf', 'paper.pdf', 'application/pdf'],
    ['test/fixtures/sample.docx', 'letter.docx', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document'],
    ['test/fixtures/sample.html', 'page.html', 'text/html'],
    ['test/fixtures/not-supported.png', 'image.png', 415],
  ];
  for (const [file, name, expected] of cases) {
    const sizes = recordChunks();
    try {
      const r = await rawUpload(name, trickle(await readFile(file), 32), { gapMs: 2 });
      // The split reached the sniffing: the magic number did not come in one piece.
      assert.ok(sizes.length >= 8 && sizes[0]! < 8, `${name}: chunk sizes ${sizes.slice(0, 12).join(', ')}`);
      t.diagnostic(`${name}: ${sizes.length} chunks, the first ${sizes.slice(0, 6).join(', ')} bytes`);
      if (typeof expected === 'number') {
        assert.equal(r.status, expected, JSON.stringify(r.body));
        assert.equal(r.body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
        continue;
      }
      assert.equal(r.status, 202, JSON.stringify(r.body));
      const doc = (await (await call(`/v1/documents/${r.body.id}`)).json()) as Json;
      assert.equal(doc.mediaType, expected, name);
    } finally {
      onPutBody = null;
    }
  }
});

test('a storage that stops reading stops the socket: the body waits in the kernel, not in the api', async (t) => {
  const gc = exposeGc()!;
  let consumed = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  onPutBody = async function* (body) {
    for await (const chunk of body) {
      consumed += chunk.length;
      yield chunk;
      if (consumed >= MB) await gate;
    }
  };
  try {
    const piece = Buffer.alloc(MB, 0x61);
    const total = 160 * MB;
    gc();
    const before = process.memoryUsage().arrayBuffers;
    let written = 0;
    const answer = rawUpload('big.txt', Array.from({ length: total / MB }, () => piece), { onWritten: (n) => (written = n) });
    // Until the client can write no more: what the kernel buffers on loopback (up to tcp_rmem's
    // and tcp_wmem's maximum) plus what the api holds.
    let last = -1;
    for (let i = 0; i < 100 && written !== last; i++) {
      last = written;
      await sleep(100);
    }
    gc();
    const held = process.memoryUsage().arrayBuffers - before;
    t.diagnostic(`stalled at ${(consumed / MB).toFixed(1)} MB stored, ${(written / MB).toFixed(0)} MB written by the client, api holding ${(held / MB).toFixed(1)} MB`);
    assert.ok(written < total, 'the client could not write the whole body while storage was not reading');
    assert.ok(held < 8 * MB, `memory held by the stalled upload: ${(held / MB).toFixed(1)} MB`);
    release();
    const r = await answer;
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.equal(consumed, total);
  } finally {
    release();
    onPutBody = null;
  }
});

test('a 100 MB upload leaves less than 40 MB of spent chunks to collect', async (t) => {
  const piece = Buffer.alloc(MB, 0x62);
  exposeGc()!();
  const before = process.memoryUsage().arrayBuffers;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 5);
  try {
    const r = await rawUpload('large.txt', Array.from({ length: 100 }, () => piece));
    assert.equal(r.status, 202, JSON.stringify(r.body));
  } finally {
    clearInterval(sampler);
  }
  const growth = (peak - before) / MB;
  t.diagnostic(`ArrayBuffer memory: +${growth.toFixed(1)} MB at its peak during the upload`);
  // V8 alone collects them once 64 MB more are held than after its last collection.
  assert.ok(growth < 40, `+${growth.toFixed(1)} MB`);
});
