import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer, text } from 'node:stream/consumers';
import { createFsStorage } from '../../src/providers/storage/fs.ts';
import { InvalidKeyError, ObjectNotFoundError, ObjectTooLargeError, type Storage } from '../../src/providers/types.ts';
import { chunked } from '../helpers/streams.ts';

let root: string;
let storage: Storage;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'docpipe-fs-storage-'));
  storage = createFsStorage(root);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function tmpEntries(): Promise<string[]> {
  return readdir(join(root, '.tmp')).catch(() => []);
}

test('put then get round-trips bytes with the right sha256 and size', async () => {
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) % 256;
  const stored = await storage.put('documents/0001/original', chunked(data, 16_384), { maxBytes: 1_000_000 });
  assert.deepEqual(stored, { key: 'documents/0001/original', size: data.length, sha256: sha256(data) });
  assert.deepEqual(await buffer(await storage.get('documents/0001/original')), data);
  assert.deepEqual(await storage.stat('documents/0001/original'), { size: data.length });
  assert.deepEqual(await storage.head('documents/0001/original', 10), data.subarray(0, 10));
  assert.deepEqual(await storage.head('documents/0001/original', 1_000_000), data);
  assert.deepEqual(await tmpEntries(), [], 'no temp file left behind');
});

test('put accepts a Readable and an empty body', async () => {
  const stored = await storage.put('documents/0002/parsed.md', Readable.from([Buffer.from('# Hello\n')]));
  assert.equal(stored.size, 8);
  assert.equal(await text(await storage.get('documents/0002/parsed.md')), '# Hello\n');
  const empty = await storage.put('documents/0002/empty', Readable.from([]));
  assert.deepEqual(empty, { key: 'documents/0002/empty', size: 0, sha256: sha256(Buffer.alloc(0)) });
});

test('a body over maxBytes aborts with ObjectTooLargeError and leaves no file', async () => {
  const data = Buffer.alloc(100_000, 1);
  await assert.rejects(storage.put('documents/0003/original', chunked(data, 8_192), { maxBytes: 50_000 }), (err: unknown) => {
    assert.ok(err instanceof ObjectTooLargeError);
    assert.equal(err.limit, 50_000);
    return true;
  });
  assert.equal(await storage.stat('documents/0003/original'), null);
  await assert.rejects(stat(join(root, 'documents/0003/original')), { code: 'ENOENT' });
  assert.deepEqual(await tmpEntries(), []);
  // Exactly at the limit is fine.
  const exact = await storage.put('documents/0003/original', chunked(data.subarray(0, 50_000), 8_192), { maxBytes: 50_000 });
  assert.equal(exact.size, 50_000);
});

test('a failing body leaves no file and the error propagates', async () => {
  async function* broken(): AsyncIterable<Uint8Array> {
    yield Buffer.from('partial');
    throw new Error('connection reset');
  }
  await assert.rejects(storage.put('documents/0004/original', broken()), /connection reset/);
  assert.equal(await storage.stat('documents/0004/original'), null);
  assert.deepEqual(await tmpEntries(), []);
});

test('keys that could escape the root or are malformed are rejected', async () => {
  const bad = ['../x', '/etc/passwd', 'a/../../b', 'a//b', 'a\\b', '', 'a/./b', 'a/', 'nul\0byte', '..', '.tmp/x'];
  for (const key of bad) {
    await assert.rejects(storage.put(key, Readable.from([Buffer.from('x')])), InvalidKeyError, `put ${JSON.stringify(key)}`);
    await assert.rejects(storage.get(key), InvalidKeyError, `get ${JSON.stringify(key)}`);
    await assert.rejects(storage.stat(key), InvalidKeyError, `stat ${JSON.stringify(key)}`);
    await assert.rejects(storage.head(key, 1), InvalidKeyError, `head ${JSON.stringify(key)}`);
  }
  for (const key of ['../x', '/etc', 'a//b', '', '.tmp']) {
    await assert.rejects(storage.deletePrefix(key), InvalidKeyError, `deletePrefix ${JSON.stringify(key)}`);
  }
});

test('stat is null and get/head throw ObjectNotFoundError when absent', async () => {
  assert.equal(await storage.stat('documents/missing/original'), null);
  await assert.rejects(storage.get('documents/missing/original'), ObjectNotFoundError);
  await assert.rejects(storage.head('documents/missing/original', 4), ObjectNotFoundError);
  // A "directory" key is not an object either.
  await storage.put('documents/0005/original', Readable.from([Buffer.from('x')]));
  assert.equal(await storage.stat('documents/0005'), null);
  await assert.rejects(storage.get('documents/0005'), ObjectNotFoundError);
  // A path through a file is absent, not an error.
  assert.equal(await storage.stat('documents/0005/original/deeper'), null);
});

test('deletePrefix removes a document directory, single files, and tolerates absence', async () => {
  await storage.put('documents/0006/original', Readable.from([Buffer.from('a')]));
  await storage.put('documents/0006/parsed.md', Readable.from([Buffer.from('b')]));
  await storage.put('documents/00067/original', Readable.from([Buffer.from('c')]));
  await storage.deletePrefix('documents/0006/');
  assert.equal(await storage.stat('documents/0006/original'), null);
  assert.equal(await storage.stat('documents/0006/parsed.md'), null);
  assert.deepEqual(await storage.stat('documents/00067/original'), { size: 1 }, 'a sibling sharing the string prefix survives');
  await storage.deletePrefix('documents/00067/original');
  assert.equal(await storage.stat('documents/00067/original'), null);
  await storage.deletePrefix('documents/never-existed');
});

test('concurrent puts of one key both succeed and the object is one of them whole', async () => {
  const a = Buffer.alloc(200_000, 0x61);
  const b = Buffer.alloc(150_000, 0x62);
  const [ra, rb] = await Promise.all([
    storage.put('documents/0007/original', chunked(a, 4_096)),
    storage.put('documents/0007/original', chunked(b, 4_096)),
  ]);
  assert.equal(ra.sha256, sha256(a));
  assert.equal(rb.sha256, sha256(b));
  const final = await buffer(await storage.get('documents/0007/original'));
  assert.ok(final.equals(a) || final.equals(b), 'the stored object is exactly one of the bodies');
  assert.deepEqual(await tmpEntries(), []);
});

test('check passes on a writable root and fails clearly otherwise', async () => {
  await storage.check();
  const fresh = createFsStorage(join(root, 'nested', 'new-root'));
  await fresh.check();
  if (process.getuid?.() !== 0) {
    const locked = join(root, 'locked');
    await createFsStorage(locked).check();
    await chmod(locked, 0o500);
    await chmod(join(locked, '.tmp'), 0o500);
    await assert.rejects(createFsStorage(locked).check(), /not writable/);
    await chmod(join(locked, '.tmp'), 0o700);
    await chmod(locked, 0o700);
  } else {
    // root ignores permissions; a root path under a regular file can never be created.
    await storage.put('documents/0008/original', Readable.from([Buffer.from('x')]));
    await assert.rejects(createFsStorage(join(root, 'documents/0008/original')).check(), /not writable/);
  }
});
