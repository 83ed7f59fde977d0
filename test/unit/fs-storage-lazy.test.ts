// The fs storage creates its temp file with the first byte: a body that sends nothing holds no
// file descriptor, and one that fails before or after its first byte leaves no temp file.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, readlink, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFsStorage } from '../../src/providers/storage/fs.ts';

const root = await realpath(await mkdtemp(join(tmpdir(), 'docpipe-fs-lazy-')));
after(() => rm(root, { recursive: true, force: true }));
const storage = createFsStorage(root);
const tmpEntries = () => readdir(join(root, '.tmp')).catch(() => [] as string[]);
// Descriptors this process holds on files under root (null where /proc is absent). Counting all of
// the process's descriptors is not stable: the runtime opens and closes its own meanwhile.
const fdsUnderRoot = async (): Promise<number | null> => {
  const fds = await readdir('/proc/self/fd').catch(() => null);
  if (fds === null) return null;
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
  return targets.filter((target) => target.startsWith(root)).length;
};

test('no temp file (and no descriptor) until the first byte; then the object as usual', async () => {
  const body = new PassThrough();
  const put = storage.put('documents/lazy-1/original', body);
  await sleep(50);
  assert.deepEqual(await tmpEntries(), [], 'nothing created while the body is silent');
  const held = await fdsUnderRoot();
  if (held !== null) assert.equal(held, 0, 'no descriptor held');
  body.write('hello ');
  await sleep(50);
  assert.equal((await tmpEntries()).length, 1, 'the temp file exists once bytes arrive');
  const heldAfter = await fdsUnderRoot();
  if (heldAfter !== null) assert.equal(heldAfter, 1, 'one descriptor, on the temp file');
  body.end('world');
  const stored = await put;
  assert.equal(stored.size, 11);
  assert.equal(await readFile(join(root, 'documents/lazy-1/original'), 'utf8'), 'hello world');
  assert.deepEqual(await tmpEntries(), []);
});

test('a body that fails before its first byte, or after it, leaves no temp file', async () => {
  const silent = new PassThrough();
  const a = storage.put('documents/lazy-2/original', silent);
  await sleep(20);
  silent.destroy(new Error('client gone'));
  await assert.rejects(a, /client gone/);

  const started = new PassThrough();
  const b = storage.put('documents/lazy-3/original', started);
  started.write('partial');
  await sleep(20);
  started.destroy(new Error('client gone'));
  await assert.rejects(b, /client gone/);

  // Destroyed a few turns of the event loop after the first write: sometimes while the temp
  // file's open is still in flight.
  for (let turns = 0; turns < 20; turns++) {
    const racing = new PassThrough();
    racing.on('error', () => {}); // destroyed before put's pipeline may listen
    const c = storage.put(`documents/lazy-4-${turns}/original`, racing);
    racing.write('x');
    for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
    racing.destroy(new Error('client gone'));
    await assert.rejects(c);
  }

  assert.deepEqual(await tmpEntries(), []);
  for (const id of ['lazy-2', 'lazy-3', 'lazy-4-0', 'lazy-4-19']) assert.equal(await storage.stat(`documents/${id}/original`), null);
});
