// PartScanner: the one-file rule and the header limits, judged from part headers as they
// arrive, with the same verdict however the body is split into chunks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { boundaryOf, MULTIPART_LIMITS, PartScanner } from '../../src/services/api/multipart.ts';
import { HttpError } from '../../src/services/errors.ts';

const B = 'xyz-boundary';

function body(parts: { headers: string[]; body?: string }[], options: { preamble?: string; epilogue?: string; close?: boolean } = {}): Buffer {
  let text = options.preamble ?? '';
  for (const p of parts) text += `--${B}\r\n${p.headers.join('\r\n')}\r\n\r\n${p.body ?? 'content'}\r\n`;
  if (options.close !== false) text += `--${B}--\r\n${options.epilogue ?? ''}`;
  return Buffer.from(text, 'latin1');
}

const file = (name = 'file', fileName = 'a.txt') => ({ headers: [`Content-Disposition: form-data; name="${name}"; filename="${fileName}"`, 'Content-Type: text/plain'] });
const field = (name: string) => ({ headers: [`Content-Disposition: form-data; name="${name}"`] });

type Verdict = { code: string; message: string } | null;

function scan(bytes: Buffer, split: number[]): { verdict: Verdict; parts: number } {
  const scanner = new PartScanner(B);
  let from = 0;
  for (const at of [...split, bytes.length]) {
    scanner.push(bytes.subarray(from, at));
    from = at;
  }
  const e = scanner.error;
  return { verdict: e ? { code: e.code, message: e.message } : null, parts: scanner.parts };
}

/** The verdict for `bytes`, asserted identical in one chunk, in two at every split point and byte by byte. */
function verdict(bytes: Buffer): Verdict {
  const whole = scan(bytes, []);
  for (let at = 1; at < bytes.length; at++) assert.deepEqual(scan(bytes, [at]), whole, `split at ${at}`);
  assert.deepEqual(scan(bytes, Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)), whole, 'byte by byte');
  return whole.verdict;
}

test('one file named "file" passes, with or without a preamble and an epilogue', () => {
  assert.equal(verdict(body([file()])), null);
  assert.equal(verdict(body([file()], { preamble: 'This is a preamble.\r\n', epilogue: 'and an epilogue' })), null);
  // Header names are case-insensitive; folded header lines continue the previous one.
  assert.equal(verdict(body([{ headers: ['content-disposition: form-data;', '\tname="file"; filename="a.txt"'] }])), null);
  // A file is a part with a file name, or one of type application/octet-stream (busboy's rule).
  assert.equal(verdict(body([{ headers: ['Content-Disposition: form-data; name="file"', 'Content-Type: application/octet-stream'] }])), null);
  // The body may contain boundary-like text that is not a delimiter.
  assert.equal(verdict(body([{ ...file(), body: `x--${B} is not at the start of a line; \r\n-${B} lacks a dash; --${B}` }])), null);
  // RFC 5987 names.
  assert.equal(verdict(body([{ headers: [`Content-Disposition: form-data; name="file"; filename*=utf-8''%F0%9F%98%80.txt`] }])), null);
});

test('a second part is refused on its header: a file -> TOO_MANY_FILES, a field -> UNEXPECTED_FIELD, anything else -> INVALID_MULTIPART', () => {
  assert.equal(verdict(body([file(), file('file', 'b.txt')]))?.code, 'TOO_MANY_FILES');
  assert.equal(verdict(body([file(), file('other')]))?.code, 'TOO_MANY_FILES');
  const f = verdict(body([file(), field('note')]));
  assert.equal(f?.code, 'UNEXPECTED_FIELD');
  assert.match(f!.message, /"note"/);
  const junk = verdict(body([file(), { headers: ['X-Whatever: 1'] }]));
  assert.equal(junk?.code, 'INVALID_MULTIPART');
  assert.match(junk!.message, /too many parts/);
  // Refused at its header: what follows (even an unterminated body) is never needed.
  assert.equal(verdict(body([file(), file('file', 'b.txt')], { close: false }))?.code, 'TOO_MANY_FILES');
});

test('boundaries where Dicer sees them: right after the header block, or inside it', () => {
  // An empty body: the header's blank line is also the CRLF that begins the next delimiter.
  const empty = Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n--${B}--\r\n`, 'latin1');
  assert.equal(verdict(empty), null);
  const hidden = Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n--${B}\r\nContent-Disposition: form-data; name="evil"\r\n\r\nx\r\n--${B}--\r\n`, 'latin1');
  assert.equal(verdict(hidden)?.code, 'UNEXPECTED_FIELD', 'the part after an empty body is seen');
  // A delimiter before the header's blank line.
  const cut = Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n--${B}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\nx\r\n--${B}--\r\n`, 'latin1');
  const v = verdict(cut);
  assert.equal(v?.code, 'INVALID_MULTIPART');
  assert.match(v!.message, /ends before its header block/);
});

test('the first part: a field, a file under another name or none, or no Content-Disposition', () => {
  const a = verdict(body([field('note')]));
  assert.deepEqual([a?.code, /"note".*no form fields/.test(a!.message)], ['UNEXPECTED_FIELD', true]);
  const b = verdict(body([file('upload')]));
  assert.deepEqual([b?.code, /"upload".*"file"/.test(b!.message)], ['UNEXPECTED_FIELD', true]);
  assert.equal(verdict(body([{ headers: ['Content-Disposition: form-data; filename="a.txt"'] }]))?.code, 'UNEXPECTED_FIELD');
  assert.equal(verdict(body([{ headers: ['Content-Disposition: attachment; name="file"; filename="a.txt"'] }]))?.code, 'INVALID_MULTIPART');
  assert.equal(verdict(body([{ headers: ['no colon here'] }]))?.code, 'INVALID_MULTIPART');
  assert.equal(verdict(body([{ headers: [] }]))?.code, 'INVALID_MULTIPART');
  // A name that only ends in "name" is not the name parameter.
  assert.equal(verdict(body([{ headers: ['Content-Disposition: form-data; filename="file"'] }]))?.code, 'UNEXPECTED_FIELD');
});

test('limits: field name bytes, header lines, header block bytes, preamble bytes', () => {
  const max = MULTIPART_LIMITS.fieldNameBytes;
  assert.equal(verdict(body([file('f'.repeat(max))]))?.code, 'UNEXPECTED_FIELD', 'at the limit: only the wrong name');
  const long = verdict(body([file('f'.repeat(max + 1))]));
  assert.equal(long?.code, 'INVALID_MULTIPART');
  assert.match(long!.message, /fieldNameSize/);

  const lines = (n: number) => ({ headers: [...Array.from({ length: n - 1 }, (_, i) => `X-Pad-${i}: ${i}`), 'Content-Disposition: form-data; name="file"; filename="a"'] });
  assert.equal(verdict(body([lines(MULTIPART_LIMITS.headerPairs)])), null);
  const pairs = verdict(body([lines(MULTIPART_LIMITS.headerPairs + 1)]));
  assert.equal(pairs?.code, 'INVALID_MULTIPART');
  assert.match(pairs!.message, /headerPairs/);
});

test('limits on big inputs (one chunk and a few splits)', () => {
  const check = (bytes: Buffer): Verdict => {
    const whole = scan(bytes, []);
    for (const at of [1, 7, 100, 4096, 16_390, bytes.length - 1]) if (at < bytes.length) assert.deepEqual(scan(bytes, [at]), whole, `split at ${at}`);
    return whole.verdict;
  };
  const huge = check(body([file('n'.repeat(1024 * 1024))]));
  assert.match(huge!.message, /fieldNameSize/, 'a 1 MB field name is named as such, not as an oversized header');
  const header = check(body([{ headers: [`X-Pad: ${'p'.repeat(MULTIPART_LIMITS.headerBytes)}`, 'Content-Disposition: form-data; name="file"; filename="a"'] }]));
  assert.match(header!.message, /headerSize/);
  const preamble = check(body([file()], { preamble: `${'x'.repeat(MULTIPART_LIMITS.preambleBytes + 1)}\r\n` }));
  assert.match(preamble!.message, /no boundary in the first/);
  assert.equal(check(body([file()], { preamble: `${'x'.repeat(MULTIPART_LIMITS.preambleBytes - 10)}\r\n` })), null);
});

test('boundaryOf: quoted or not, required, at most 70 characters', () => {
  assert.equal(boundaryOf('multipart/form-data; boundary=abc'), 'abc');
  assert.equal(boundaryOf('multipart/form-data; charset=utf-8; boundary="a b\\"c"'), 'a b"c');
  assert.equal(boundaryOf(`multipart/form-data; boundary=${'b'.repeat(70)}`), 'b'.repeat(70));
  for (const bad of [undefined, 'multipart/form-data', 'multipart/form-data; boundary=', `multipart/form-data; boundary=${'b'.repeat(71)}`]) {
    assert.throws(() => boundaryOf(bad), (err: unknown) => err instanceof HttpError && err.code === 'INVALID_MULTIPART', String(bad));
  }
});
