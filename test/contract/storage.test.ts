// One list of cases, run against every Storage adapter: fs (a temp directory, its signed uploads
// served by a small app with the API's PUT /v1/storage/upload route) and supabase (supabase-js
// against the fake Supabase Storage server, its bucket created by setup()).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { createLogger } from '../../src/observability/logger.ts';
import { createFsStorage } from '../../src/providers/storage/fs.ts';
import { createSupabaseStorage } from '../../src/providers/storage/supabase.ts';
import { BodyLengthError } from '../../src/providers/storage/meter.ts';
import { createUploadTokens } from '../../src/providers/storage/upload-token.ts';
import { InvalidKeyError, ObjectNotFoundError, ObjectTooLargeError, type Storage } from '../../src/providers/types.ts';
import { registerFsUploadRoute } from '../../src/services/api/storage-upload.ts';
import { createHttpApp, type App } from '../../src/services/http.ts';
import { startFakeSupabaseStorage, type FakeSupabaseStorage } from '../fakes/supabase-storage.ts';
import { chunked } from '../helpers/streams.ts';

interface Harness {
  storage: Storage;
  /** A storage of the same kind whose backing (fs root, bucket) does not exist yet. */
  fresh(): Storage;
  close(): Promise<void>;
}

const adapters: Record<string, () => Promise<Harness>> = {
  async fs() {
    const root = await mkdtemp(join(tmpdir(), 'docpipe-storage-contract-'));
    const signingKey = randomUUID() + randomUUID();
    const app: App = createHttpApp({ service: 'storage-contract', logger: createLogger('silent') });
    registerFsUploadRoute(app, { storage: createFsStorage(join(root, 'objects')), tokens: createUploadTokens(signingKey) });
    const publicApiUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    const storage = createFsStorage(join(root, 'objects'), { publicApiUrl, signingKey });
    await storage.setup();
    return {
      storage,
      fresh: () => createFsStorage(join(root, `fresh-${randomUUID()}`)),
      async close() {
        await app.close();
        await rm(root, { recursive: true, force: true });
      },
    };
  },

  async supabase() {
    const fake: FakeSupabaseStorage = await startFakeSupabaseStorage();
    const make = (bucket: string) => createSupabaseStorage({ url: fake.url, serviceKey: fake.serviceKey, bucket, timeoutSeconds: 30 });
    const storage = make('documents');
    assert.equal(await storage.setup(), 'created');
    return { storage, fresh: () => make(`fresh-${randomUUID()}`), close: () => fake.close() };
  },
};

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function pattern(size: number, seed = 7): Buffer {
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + seed) % 256;
  return data;
}

for (const [name, start] of Object.entries(adapters)) {
  describe(`Storage contract: ${name}`, () => {
    let h: Harness;
    let s: Storage;
    // Keys are unique per case, so cases never see each other's objects.
    const doc = () => `documents/${randomUUID()}`;

    before(async () => {
      h = await start();
      s = h.storage;
    });
    after(async () => {
      await h?.close();
    });

    test('kind names the adapter', () => {
      assert.equal(s.kind, name);
    });

    test('put then get round-trips the bytes with the right sha256 and size', async () => {
      const key = `${doc()}/original`;
      const data = pattern(300_000);
      const stored = await s.put(key, chunked(data, 16_384), { maxBytes: 1_000_000, contentType: 'application/pdf' });
      assert.deepEqual(stored, { key, size: data.length, sha256: sha256(data) });
      assert.deepEqual(await buffer(await s.get(key)), data);
    });

    test('put accepts a Readable and an empty body', async () => {
      const key = `${doc()}/parsed.md`;
      const stored = await s.put(key, Readable.from([Buffer.from('# Hello\n')]), { contentType: 'text/markdown' });
      assert.deepEqual(stored, { key, size: 8, sha256: sha256(Buffer.from('# Hello\n')) });
      const empty = await s.put(`${doc()}/empty`, Readable.from([]));
      assert.equal(empty.size, 0);
      assert.equal(empty.sha256, sha256(Buffer.alloc(0)));
      assert.deepEqual(await s.stat(empty.key), { size: 0 });
      assert.deepEqual(await s.head(empty.key, 4), Buffer.alloc(0));
    });

    test('head returns the first n bytes (fewer when the object is shorter)', async () => {
      const key = `${doc()}/original`;
      const data = pattern(70_000, 3);
      await s.put(key, Readable.from([data]));
      assert.deepEqual(await s.head(key, 10), data.subarray(0, 10));
      assert.deepEqual(await s.head(key, 4100), data.subarray(0, 4100));
      assert.deepEqual(await s.head(key, 1_000_000), data);
      assert.deepEqual(await s.head(key, 0), Buffer.alloc(0));
      await assert.rejects(s.head(key, -1), RangeError);
    });

    test('stat answers the size of a present object and null for an absent one', async () => {
      const key = `${doc()}/original`;
      await s.put(key, Readable.from([Buffer.from('12345')]));
      assert.deepEqual(await s.stat(key), { size: 5 });
      assert.equal(await s.stat(`${doc()}/original`), null);
    });

    test('get and head of an absent object throw ObjectNotFoundError', async () => {
      const key = `${doc()}/original`;
      await assert.rejects(s.get(key), (err: unknown) => err instanceof ObjectNotFoundError && err.key === key);
      await assert.rejects(s.head(key, 4), ObjectNotFoundError);
      await assert.rejects(s.head(key, 0), ObjectNotFoundError);
    });

    test('a body over maxBytes fails with ObjectTooLargeError and leaves nothing at the key', async () => {
      const key = `${doc()}/original`;
      const data = pattern(100_000);
      await assert.rejects(s.put(key, chunked(data, 8_192), { maxBytes: 50_000 }), (err: unknown) => {
        assert.ok(err instanceof ObjectTooLargeError, String(err));
        assert.equal(err.limit, 50_000);
        return true;
      });
      assert.equal(await s.stat(key), null);
      // Exactly at the limit is fine.
      const exact = await s.put(key, chunked(data.subarray(0, 50_000), 8_192), { maxBytes: 50_000 });
      assert.equal(exact.size, 50_000);
    });

    test('a failing body propagates its error and leaves nothing at the key', async () => {
      const key = `${doc()}/original`;
      async function* broken(): AsyncIterable<Uint8Array> {
        yield Buffer.from('partial');
        await new Promise((resolve) => setTimeout(resolve, 20));
        throw new Error('connection reset');
      }
      await assert.rejects(s.put(key, broken()), /connection reset/);
      assert.equal(await s.stat(key), null);
    });

    test('put overwrites an existing object (a retried job puts again)', async () => {
      const key = `${doc()}/parsed.md`;
      await s.put(key, Readable.from([Buffer.from('first version, longer')]));
      const second = await s.put(key, Readable.from([Buffer.from('second')]));
      assert.equal(second.size, 6);
      assert.deepEqual(await buffer(await s.get(key)), Buffer.from('second'));
      assert.deepEqual(await s.stat(key), { size: 6 });
    });

    test('deletePrefix removes nested keys under the prefix and nothing else', async () => {
      const x = doc();
      const y = doc();
      for (const key of [`${x}/original`, `${x}/runs/1/parsed.md`, `${x}/runs/2/parsed.md`, `${y}/original`, `${x}-sibling/original`]) {
        await s.put(key, Readable.from([Buffer.from(key)]));
      }
      await s.deletePrefix(`${x}/`);
      assert.equal(await s.stat(`${x}/original`), null);
      assert.equal(await s.stat(`${x}/runs/1/parsed.md`), null);
      assert.equal(await s.stat(`${x}/runs/2/parsed.md`), null);
      assert.deepEqual(await s.stat(`${y}/original`), { size: `${y}/original`.length });
      assert.deepEqual(await s.stat(`${x}-sibling/original`), { size: `${x}-sibling/original`.length }, 'a sibling sharing the string prefix survives');
      // A single object as the prefix, without a trailing slash; absence is not an error.
      await s.deletePrefix(`${y}/original`);
      assert.equal(await s.stat(`${y}/original`), null);
      await s.deletePrefix(x);
      await s.deletePrefix(`${doc()}/never-existed`);
    });

    test('invalid keys are rejected with InvalidKeyError by every operation', async () => {
      // Also what the Supabase storage server refuses in a key (`#`, `%`, non-ASCII), so a key
      // one adapter takes every adapter takes.
      const bad = ['../x', '/abs', 'a//b', '', 'a/../b', 'a/./b', 'a/', 'a\\b', 'nul\0byte', '..', '.tmp/x', 'a#b', 'a%3Fb', 'caf\u00e9', 'tab\there'];
      for (const key of bad) {
        const what = JSON.stringify(key);
        await assert.rejects(s.put(key, Readable.from([Buffer.from('x')])), InvalidKeyError, `put ${what}`);
        await assert.rejects(s.get(key), InvalidKeyError, `get ${what}`);
        await assert.rejects(s.head(key, 1), InvalidKeyError, `head ${what}`);
        await assert.rejects(s.stat(key), InvalidKeyError, `stat ${what}`);
        await assert.rejects(s.createSignedUpload(key, { expiresInSeconds: 60, maxBytes: 10, contentType: 'text/plain' }), InvalidKeyError, `createSignedUpload ${what}`);
      }
      for (const prefix of ['../x', '/abs', 'a//b', '', '/', '.tmp']) {
        await assert.rejects(s.deletePrefix(prefix), InvalidKeyError, `deletePrefix ${JSON.stringify(prefix)}`);
      }
    });

    test('keys with characters a URL reserves (`?`, `&`, `=`, `+`, space) are objects of their own', async () => {
      const x = doc();
      const keys = [`${x}/a`, `${x}/a?b`, `${x}/a?b=c&d`, `${x}/a b+c`, `${x}/a;b:c,d@e$f!g*h'(i)`];
      for (const key of keys) await s.put(key, Readable.from([Buffer.from(key)]));
      for (const key of keys) {
        assert.deepEqual(await buffer(await s.get(key)), Buffer.from(key), key);
        assert.deepEqual(await s.stat(key), { size: Buffer.byteLength(key) }, key);
      }
      const upload = await s.createSignedUpload(`${x}/up?load`, { expiresInSeconds: 600, maxBytes: 100, contentType: 'text/plain' });
      const put = await fetch(upload.url, { method: upload.method, headers: upload.headers, body: 'signed', signal: AbortSignal.timeout(30_000) });
      assert.equal(put.status, 200, await put.clone().text());
      assert.deepEqual(await buffer(await s.get(`${x}/up?load`)), Buffer.from('signed'));
      assert.equal(await s.stat(`${x}/up`), null);
      await s.deletePrefix(x);
      for (const key of [...keys, `${x}/up?load`]) assert.equal(await s.stat(key), null, key);
    });

    test('a declared size must be the body\'s length: more, fewer, or over maxBytes fail and store nothing', async () => {
      const key = `${doc()}/parsed.md`;
      const data = pattern(20_000);
      await assert.rejects(s.put(key, chunked(data, 4_096), { size: data.length + 1 }), BodyLengthError);
      await assert.rejects(s.put(key, chunked(data, 4_096), { size: data.length - 1 }), BodyLengthError);
      await assert.rejects(s.put(key, chunked(data, 4_096), { size: data.length, maxBytes: data.length - 1 }), ObjectTooLargeError);
      await assert.rejects(s.put(key, chunked(data, 4_096), { size: -1 }), RangeError);
      assert.equal(await s.stat(key), null);
      const stored = await s.put(key, chunked(data, 4_096), { size: data.length, maxBytes: data.length, contentType: 'text/markdown' });
      assert.deepEqual(stored, { key, size: data.length, sha256: sha256(data) });
      assert.deepEqual(await buffer(await s.get(key)), data);
    });

    test('a 5 MB object streams in and out', async () => {
      const key = `${doc()}/original`;
      const data = pattern(5 * 1024 * 1024, 11);
      const stored = await s.put(key, chunked(data, 64 * 1024), { maxBytes: 6 * 1024 * 1024 });
      assert.equal(stored.size, data.length);
      assert.equal(stored.sha256, sha256(data));
      const stream = await s.get(key);
      const hash = createHash('sha256');
      let size = 0;
      let chunks = 0;
      for await (const part of stream) {
        hash.update(part as Buffer);
        size += (part as Buffer).length;
        chunks += 1;
      }
      assert.equal(size, data.length);
      assert.equal(hash.digest('hex'), sha256(data));
      assert.ok(chunks > 1, 'the object arrives in several chunks');
    });

    test('setup creates what is missing, then finds it', async () => {
      const fresh = h.fresh();
      assert.equal(await fresh.setup(), 'created');
      assert.equal(await fresh.setup(), 'exists');
      await fresh.check();
      assert.equal(await s.setup(), 'exists');
    });

    test('check passes on a ready storage', async () => {
      await s.check();
    });

    test('a signed upload URL takes a plain PUT once', async () => {
      const key = `${doc()}/original`;
      const data = pattern(200_000, 5);
      const upload = await s.createSignedUpload(key, { expiresInSeconds: 600, maxBytes: 1_000_000, contentType: 'application/pdf' });
      assert.equal(upload.method, 'PUT');
      assert.match(upload.url, /^http:\/\/127\.0\.0\.1:\d+\//);
      assert.equal(upload.headers['content-type'], 'application/pdf');
      assert.ok(upload.expiresAt.getTime() > Date.now(), 'expires in the future');
      assert.equal(await s.stat(key), null, 'signing stores nothing');

      const first = await fetch(upload.url, { method: upload.method, headers: upload.headers, body: data, signal: AbortSignal.timeout(30_000) });
      assert.equal(first.status, 200, await first.clone().text());
      await first.arrayBuffer();
      assert.deepEqual(await buffer(await s.get(key)), data);

      const second = await fetch(upload.url, { method: upload.method, headers: upload.headers, body: Buffer.from('replaced'), signal: AbortSignal.timeout(30_000) });
      assert.ok(second.status >= 400 && second.status < 500, `the second PUT is refused (got ${second.status})`);
      await second.arrayBuffer();
      assert.deepEqual(await buffer(await s.get(key)), data, 'the first upload stays');
    });
  });
}
