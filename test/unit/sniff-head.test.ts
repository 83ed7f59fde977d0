// captureHead: an upload is sniffed from the first bytes it streams to storage. The head it
// keeps, and so the verdict, must not depend on how the body is split into chunks: one chunk,
// 1-byte chunks, chunks straddling the limit; and the bytes must pass through unchanged.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { captureHead, SNIFF_BYTES, sniffMediaType } from '../../src/providers/parser/sniff.ts';

async function* split(data: Buffer, sizes: (i: number) => number): AsyncIterable<Uint8Array> {
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = Math.max(1, sizes(i));
    yield data.subarray(at, at + n);
    at += n;
  }
}

/** Streams `data` through a capture, as the upload route does; returns what passed and the head. */
async function through(data: Buffer, sizes: (i: number) => number, limit?: number): Promise<{ passed: Buffer; head: Buffer; chunks: number }> {
  const capture = captureHead(limit);
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      callback();
    },
  });
  await pipeline(Readable.from(split(data, sizes)), capture.stream, sink);
  return { passed: Buffer.concat(out), head: capture.head(), chunks: out.length };
}

test('the head is the first bytes, however the body is split', async () => {
  const data = Buffer.from(Array.from({ length: 3 * 1000 + 7 }, (_, i) => i % 251));
  const limit = 1000;
  const splits: [string, (i: number) => number][] = [
    ['one chunk', () => data.length],
    ['1-byte chunks', () => 1],
    ['7-byte chunks', () => 7],
    ['a chunk ending exactly at the limit', (i) => (i === 0 ? limit : 500)],
    ['a chunk straddling the limit', (i) => (i === 0 ? limit - 3 : 10)],
    ['growing chunks', (i) => i * i + 1],
  ];
  for (const [name, sizes] of splits) {
    const r = await through(data, sizes, limit);
    assert.deepEqual(r.passed, data, `${name}: the bytes pass through unchanged`);
    assert.deepEqual(r.head, data.subarray(0, limit), `${name}: the head`);
  }
  // Shorter than the limit: all of it.
  assert.deepEqual((await through(data.subarray(0, 10), () => 1, limit)).head, data.subarray(0, 10));
  assert.deepEqual((await through(Buffer.alloc(0), () => 1, limit)).head, Buffer.alloc(0));
});

test('a body in one chunk is kept by reference; a split one is copied into one buffer of at most the limit', async () => {
  const data = Buffer.from('hello, world');
  const capture = captureHead(64);
  await pipeline(Readable.from([data]), capture.stream, new Writable({ write: (_c, _e, cb) => cb() }));
  assert.equal(capture.head().buffer, data.buffer, 'no copy of a single chunk');

  // 10,000 one-byte chunks end up in one buffer of `limit` bytes, not in 10,000 kept chunks.
  const many = captureHead(4096);
  const bytes = Buffer.from(Array.from({ length: 10_000 }, (_, i) => i % 256));
  for (let i = 0; i < bytes.length; i++) many.observe(bytes.subarray(i, i + 1));
  assert.deepEqual(many.head(), bytes.subarray(0, 4096));
  assert.equal(many.head().buffer.byteLength, 4096);
});

test('a PDF, a PNG and HTML sniff the same from 1-byte chunks as from the whole file', async () => {
  const files: [string, string | null][] = [
    ['test/fixtures/sample.pdf', 'application/pdf'],
    ['test/fixtures/not-supported.png', null],
    ['test/fixtures/sample.html', 'text/html'],
    ['test/fixtures/sample.docx', 'application/vnd.openxmlformats-officedocument.wordprocessingml.document'],
  ];
  for (const [file, expected] of files) {
    const data = await readFile(file);
    assert.equal(await sniffMediaType(data.subarray(0, SNIFF_BYTES), file), expected, `${file} whole`);
    // The magic bytes arrive one at a time, then the rest in odd sizes.
    const r = await through(data, (i) => (i < 64 ? 1 : 1021));
    assert.ok(r.chunks > 64);
    assert.deepEqual(r.head, data.subarray(0, SNIFF_BYTES));
    assert.equal(await sniffMediaType(r.head, file), expected, `${file} from 1-byte chunks`);
  }
});

test('observe, for a reader of its own chunks (Uint8Array too), keeps the same head', () => {
  const data = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
  const capture = captureHead(100);
  for (let i = 0; i < data.length; i += 7) capture.observe(new Uint8Array(data.buffer, data.byteOffset + i, Math.min(7, data.length - i)));
  assert.deepEqual(capture.head(), data.subarray(0, 100));
});
