// Adapter-specific behaviour the storage contract cannot express: how the Supabase adapter reads
// the storage server's errors (HTTP 400 with the real status as a string `statusCode`), its
// readiness messages, timeouts and batching; and the fs adapter's upload route refusals.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createClient } from '@supabase/supabase-js';
import { createLogger } from '../../src/observability/logger.ts';
import { providerRequests } from '../../src/observability/metrics.ts';
import { createFsStorage } from '../../src/providers/storage/fs.ts';
import { BodyLengthError } from '../../src/providers/storage/meter.ts';
import { createSupabaseStorage, type SupabaseStorageOptions } from '../../src/providers/storage/supabase.ts';
import { createUploadTokens, UploadTokenError } from '../../src/providers/storage/upload-token.ts';
import { ObjectNotFoundError, ObjectTooLargeError, ProviderError, type Storage } from '../../src/providers/types.ts';
import { registerFsUploadRoute } from '../../src/services/api/storage-upload.ts';
import { createHttpApp, type App } from '../../src/services/http.ts';
import { startFakeSupabaseStorage, type FakeSupabaseStorage } from '../fakes/supabase-storage.ts';

const MISSING = /storage bucket "documents" is missing, or SUPABASE_SERVICE_ROLE_KEY has no access to it: run `docpipe setup-storage`/;

function body(text: string): Readable {
  return Readable.from([Buffer.from(text)]);
}

async function counter(operation: string, outcome: string): Promise<number> {
  const metric = await providerRequests.get();
  return metric.values.find((v) => v.labels.provider === 'supabase' && v.labels.operation === operation && v.labels.outcome === outcome)?.value ?? 0;
}

function assertProviderError(err: unknown, code: string, permanent: boolean): true {
  assert.ok(err instanceof ProviderError, `expected a ProviderError, got ${String(err)}`);
  assert.equal(err.code, code);
  assert.equal(err.permanent, permanent);
  return true;
}

describe('supabase storage adapter', () => {
  let fake: FakeSupabaseStorage;
  let storage: Storage;
  const make = (overrides: Partial<SupabaseStorageOptions> = {}) =>
    createSupabaseStorage({ url: fake.url, serviceKey: fake.serviceKey, bucket: 'documents', timeoutSeconds: 10, ...overrides });

  before(async () => {
    fake = await startFakeSupabaseStorage({ buckets: ['documents'] });
    storage = make();
  });
  after(async () => {
    await fake?.close();
  });
  beforeEach(() => fake.reset());

  test('check on a missing bucket says "missing, or no access", answered as HTTP 400 with statusCode "404"', async () => {
    const other = make({ bucket: 'documents' });
    fake.deleteBucket('documents');
    try {
      await assert.rejects(other.check(), MISSING);
      const last = fake.requests.at(-1)!;
      assert.deepEqual([last.operation, last.status], ['getBucket', 400]);
    } finally {
      assert.equal(await storage.setup(), 'created');
    }
  });

  test('a wrong, garbled or expired key: check says the key is wrong (AccessDenied), reads say "missing bucket" (NoSuchBucket)', async () => {
    const [head, payload] = fake.serviceKey.split('.') as [string, string];
    const keys = {
      garbled: { key: `wrong-${randomUUID()}`, server: 'Invalid Compact JWS' },
      'another project\'s': { key: `${head}.${payload}.${Buffer.alloc(32, 7).toString('base64url')}`, server: 'signature verification failed' },
      expired: { key: fake.signKey('service_role', -60), server: '"exp" claim timestamp check failed' },
    };
    for (const [what, { key, server }] of Object.entries(keys)) {
      const wrong = make({ serviceKey: key });
      const rejected = (err: unknown) => {
        assertProviderError(err, 'STORAGE_AUTH_FAILED', true);
        const message = (err as Error).message;
        assert.match(message, /SUPABASE_SERVICE_ROLE_KEY .*not a valid key of the project/, what);
        assert.ok(message.includes(server), `${what}: the server's reason is kept: ${message}`);
        assert.doesNotMatch(message, /missing/, what);
        assert.ok(!message.includes(key), `${what}: the key never appears in a message`);
        return true;
      };
      // What /readyz and the doctor show: the key is wrong, not the bucket missing.
      await assert.rejects(wrong.check(), rejected);
      assert.deepEqual([fake.requests.at(-1)!.operation, fake.requests.at(-1)!.status], ['getBucket', 400]);
      await assert.rejects(wrong.setup(), rejected);
      await assert.rejects(wrong.put('documents/x/original', body('x'), { size: 1 }), rejected);
      await assert.rejects(wrong.deletePrefix('documents/x'), rejected);
      await assert.rejects(wrong.createSignedUpload('documents/x/original', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), rejected);
      // Download and info answer NoSuchBucket to a wrong key: permanent (config), never "object not found".
      await assert.rejects(wrong.get('documents/x/original'), (err: unknown) => assertProviderError(err, 'STORAGE_BUCKET_MISSING', true));
      await assert.rejects(wrong.stat('documents/x/original'), (err: unknown) => assertProviderError(err, 'STORAGE_BUCKET_MISSING', true));
    }
  });

  test('the anon key: check says "missing, or no access"; writes are STORAGE_ACCESS_DENIED; reads and deletes see nothing', async () => {
    await storage.put('documents/anon/original', body('kept'));
    const anon = make({ serviceKey: fake.anonKey });
    await assert.rejects(anon.check(), (err: unknown) => {
      assertProviderError(err, 'STORAGE_BUCKET_MISSING', true);
      assert.match((err as Error).message, MISSING);
      return true;
    });
    const denied = (err: unknown) => {
      assertProviderError(err, 'STORAGE_ACCESS_DENIED', true);
      assert.match((err as Error).message, /row-level security: SUPABASE_SERVICE_ROLE_KEY is not the service role key/);
      return true;
    };
    await assert.rejects(anon.put('documents/anon/other', body('x')), denied);
    await assert.rejects(anon.createSignedUpload('documents/anon/signed', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), denied);
    await assert.rejects(anon.setup(), denied);
    // Row-level security hides the object: info answers NoSuchKey (only check tells the two apart).
    assert.equal(await anon.stat('documents/anon/original'), null);
    await assert.rejects(anon.get('documents/anon/original'), ObjectNotFoundError);
    await anon.deletePrefix('documents/anon');
    assert.deepEqual(await storage.stat('documents/anon/original'), { size: 4 }, 'the anon key deleted nothing');
  });

  test('row-level security denial is a permanent STORAGE_ACCESS_DENIED', async () => {
    fake.setRowLevelSecurityDenied(true);
    await assert.rejects(storage.put('documents/rls/original', body('x')), (err: unknown) => {
      assertProviderError(err, 'STORAGE_ACCESS_DENIED', true);
      assert.equal((err as ProviderError).details.status, 403);
      assert.ok(!(err as Error).message.includes(fake.serviceKey));
      return true;
    });
    assert.deepEqual(fake.requests.map((r) => [r.operation, r.status]), [['upload', 400]]);
    assert.equal(fake.objects.has('documents/documents/rls/original'), false);
  });

  test('a 500 is a retryable STORAGE_UNAVAILABLE, and a retry then succeeds', async () => {
    fake.failNext('upload', 500);
    const before = await counter('put', 'server_error');
    await assert.rejects(storage.put('documents/flaky/original', body('x')), (err: unknown) => assertProviderError(err, 'STORAGE_UNAVAILABLE', false));
    assert.equal(await counter('put', 'server_error'), before + 1);
    assert.equal(fake.requests.at(-1)!.status, 500);
    const okBefore = await counter('put', 'ok');
    assert.equal((await storage.put('documents/flaky/original', body('x'))).size, 1);
    assert.equal(await counter('put', 'ok'), okBefore + 1);

    fake.failNext('download', 503);
    await assert.rejects(storage.get('documents/flaky/original'), (err: unknown) => assertProviderError(err, 'STORAGE_UNAVAILABLE', false));
    // The 400-with-statusCode form of a 5xx is read the same way.
    fake.failNext('info', { statusCode: '502', error: 'Bad Gateway', message: 'upstream', code: 'InternalError' });
    await assert.rejects(storage.stat('documents/flaky/original'), (err: unknown) => assertProviderError(err, 'STORAGE_UNAVAILABLE', false));
  });

  test('errors arrive as HTTP 400 with a string statusCode, and are read from the body', async () => {
    await assert.rejects(storage.get('documents/absent/original'), (err: unknown) => {
      assert.ok(err instanceof ObjectNotFoundError);
      const cause = (err as Error & { cause?: unknown }).cause;
      assert.equal(cause, undefined, 'ObjectNotFoundError carries no provider detail');
      return true;
    });
    assert.deepEqual(fake.requests.map((r) => [r.operation, r.status]), [['download', 400]]);
    // The same NoSuchKey, seen through supabase-js directly: status 400, statusCode "404".
    const client = createClient(fake.url, fake.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const { error } = await client.storage.from('documents').download('documents/absent/original');
    assert.ok(error);
    assert.equal((error as { status?: number }).status, 400);
    assert.equal((error as { statusCode?: string }).statusCode, '404');
  });

  test('401, 403, 429 and other 4xx map to their codes', async () => {
    fake.failNext('info', 401);
    await assert.rejects(storage.stat('documents/a/original'), (err: unknown) => assertProviderError(err, 'STORAGE_AUTH_FAILED', true));
    fake.failNext('info', 403);
    await assert.rejects(storage.stat('documents/a/original'), (err: unknown) => assertProviderError(err, 'STORAGE_ACCESS_DENIED', true));
    fake.failNext('info', 429);
    await assert.rejects(storage.stat('documents/a/original'), (err: unknown) => assertProviderError(err, 'STORAGE_RATE_LIMITED', false));
    fake.failNext('info', 400);
    await assert.rejects(storage.stat('documents/a/original'), (err: unknown) => assertProviderError(err, 'STORAGE_REQUEST_REJECTED', true));
  });

  test("the bucket's file_size_limit applies to a put that declares its size (content-length): EntityTooLarge is ObjectTooLargeError", async () => {
    fake.buckets.get('documents')!.file_size_limit = 1_000_000;
    const big = Buffer.alloc(1_200_000, 1);
    try {
      await assert.rejects(storage.put('documents/big/original', Readable.from([big]), { size: big.length }), (err: unknown) => {
        assert.ok(err instanceof ObjectTooLargeError, String(err));
        assert.match(err.message, /size limit of the storage bucket/);
        return true;
      });
      assert.deepEqual([fake.requests.at(-1)!.operation, fake.requests.at(-1)!.status], ['upload', 400]);
      assert.equal(await storage.stat('documents/big/original'), null);
      // Without a declared length the server cannot apply its limit (as the real one does not).
      assert.equal((await storage.put('documents/big/streamed', Readable.from([big]))).size, big.length);
      assert.deepEqual(await storage.stat('documents/big/streamed'), { size: big.length });
      // At the limit is fine.
      assert.equal((await storage.put('documents/big/exact', Readable.from([big.subarray(0, 1_000_000)]), { size: 1_000_000 })).size, 1_000_000);
    } finally {
      fake.buckets.get('documents')!.file_size_limit = null;
    }
  });

  test('a body whose length is not the declared size fails with BodyLengthError and stores nothing', async () => {
    const before = fake.requests.length;
    await assert.rejects(storage.put('documents/len/short', body('four'), { size: 5 }), (err: unknown) => err instanceof BodyLengthError && /4 bytes, 5 were declared/.test(err.message));
    await assert.rejects(storage.put('documents/len/long', body('six!!!'), { size: 5 }), BodyLengthError);
    assert.equal(await storage.stat('documents/len/short'), null);
    assert.equal(await storage.stat('documents/len/long'), null);
    // A size over maxBytes, or not a size at all, fails before anything is sent.
    const sent = fake.requests.length;
    await assert.rejects(storage.put('documents/len/over', body('x'), { size: 11, maxBytes: 10 }), (err: unknown) => err instanceof ObjectTooLargeError && err.limit === 10);
    for (const size of [-1, 1.5, Number.NaN]) await assert.rejects(storage.put('documents/len/bad', body('x'), { size }), RangeError);
    assert.equal(fake.requests.length, sent);
    assert.ok(sent > before);
  });

  test('a dropped connection and a stalled server are retryable STORAGE_UNAVAILABLE', async () => {
    fake.failNext('getBucket', 'reset');
    await assert.rejects(storage.check(), (err: unknown) => assertProviderError(err, 'STORAGE_UNAVAILABLE', false));
    const quick = make({ timeoutSeconds: 0.3 });
    fake.setDelayMs(2_000);
    const started = Date.now();
    await assert.rejects(quick.stat('documents/a/original'), (err: unknown) => {
      assertProviderError(err, 'STORAGE_UNAVAILABLE', false);
      assert.match((err as Error).message, /did not answer within 0.3s/);
      return true;
    });
    assert.ok(Date.now() - started < 1_500, 'the timeout fired, not the delay');
  });

  test('get really streams: it resolves before the body is read', async () => {
    const size = 4 * 1024 * 1024;
    await storage.put('documents/stream/original', Readable.from([Buffer.alloc(size, 1)]));
    let pulled = 0;
    const counting: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (!response.body) return response;
      const counted = response.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            pulled += chunk.byteLength;
            controller.enqueue(chunk);
          },
        }),
      );
      return new Response(counted, { status: response.status, headers: response.headers });
    };
    const streaming = make({ fetch: counting });
    const stream = await streaming.get('documents/stream/original');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(pulled < size / 2, `only a little was read ahead (${pulled} bytes)`);
    let total = 0;
    for await (const part of stream) total += (part as Buffer).length;
    assert.equal(total, size);
    // head sends a Range request and reads only what it needs.
    pulled = 0;
    assert.equal((await streaming.head('documents/stream/original', 100)).length, 100);
    assert.ok(pulled <= 64 * 1024, `head read ${pulled} bytes`);
  });

  test('deletePrefix walks folders page by page and removes in batches of at most 1000', async () => {
    const at = new Date().toISOString();
    for (let i = 0; i < 2_500; i++) {
      fake.objects.set(`documents/documents/many/chunks/${String(i).padStart(5, '0')}`, { bytes: Buffer.from('x'), contentType: 'text/plain', cacheControl: 'no-cache', id: randomUUID(), createdAt: at, updatedAt: at });
    }
    fake.objects.set(`documents/documents/many/original`, { bytes: Buffer.from('x'), contentType: 'text/plain', cacheControl: 'no-cache', id: randomUUID(), createdAt: at, updatedAt: at });
    fake.objects.set(`documents/documents/other/original`, { bytes: Buffer.from('x'), contentType: 'text/plain', cacheControl: 'no-cache', id: randomUUID(), createdAt: at, updatedAt: at });
    await storage.deletePrefix('documents/many');
    assert.deepEqual([...fake.objects.keys()].filter((k) => /^documents\/documents\/(many|other)\//.test(k)), ['documents/documents/other/original']);
    const removes = fake.requests.filter((r) => r.operation === 'remove');
    assert.equal(removes.length, 3, '2502 keys in batches of 1000');
    assert.ok(fake.requests.filter((r) => r.operation === 'list').length >= 4, 'the 2500-entry folder is read in pages');
  });

  test('setup answers "exists" for an existing bucket and check then passes', async () => {
    assert.equal(await storage.setup(), 'exists');
    await storage.check();
  });

  test("a signed upload URL expires when the server's token says (its exp), whatever the server's setting", async () => {
    const expiryOf = (url: string) => {
      const token = new URL(url).searchParams.get('token')!;
      return (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
    };
    // The self-hosted default: 60 s.
    const short = await storage.createSignedUpload('documents/signed/original', { expiresInSeconds: 7200, maxBytes: 10, contentType: 'text/plain' });
    assert.deepEqual(short.headers, { 'content-type': 'text/plain' });
    assert.equal(short.expiresAt.getTime(), expiryOf(short.url));
    const left = short.expiresAt.getTime() - Date.now();
    assert.ok(left > 55_000 && left <= 60_000, `expires in ~60 s (${left} ms)`);
    // Hosted Supabase: 2 h.
    fake.setSignedUploadTtl(7200);
    const long = await storage.createSignedUpload('documents/signed/other', { expiresInSeconds: 60, maxBytes: 10, contentType: 'text/plain' });
    assert.equal(long.expiresAt.getTime(), expiryOf(long.url));
    assert.ok(long.expiresAt.getTime() - Date.now() > 7_100_000);

    // Bound to its path; refused once expired, with the server's answer; nothing stored.
    const elsewhere = short.url.replace('documents/signed/original', 'documents/signed/moved');
    const moved = await fetch(elsewhere, { method: 'PUT', headers: short.headers, body: 'x' });
    assert.equal(moved.status, 400);
    assert.deepEqual(await moved.json(), { statusCode: '400', error: 'InvalidSignature', message: 'Invalid signature' });
    fake.advanceClock(61_000);
    const late = await fetch(short.url, { method: 'PUT', headers: short.headers, body: 'x' });
    assert.equal(late.status, 400);
    assert.deepEqual(await late.json(), { statusCode: '400', error: 'InvalidJWT', message: '"exp" claim timestamp check failed' });
    assert.equal(fake.objects.has('documents/documents/signed/original'), false);
    assert.equal((await fetch(long.url, { method: 'PUT', headers: long.headers, body: 'in time' })).status, 200);
    assert.deepEqual(await storage.stat('documents/signed/other'), { size: 7 });
  });

  test('signing fails retryably on a 500, and on a token without a readable exp (no made-up expiry)', async () => {
    fake.failNext('signUpload', 500);
    await assert.rejects(storage.createSignedUpload('documents/noexp/original', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), (err: unknown) => assertProviderError(err, 'STORAGE_UNAVAILABLE', false));
    const garbled: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (!String(input).includes('/object/upload/sign/')) return response;
      const answer = (await response.json()) as { url: string; token: string };
      return Response.json({ ...answer, token: 'not-a-jwt' }, { status: response.status });
    };
    await assert.rejects(make({ fetch: garbled }).createSignedUpload('documents/noexp/original', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), (err: unknown) => {
      assertProviderError(err, 'STORAGE_UNAVAILABLE', false);
      assert.match((err as Error).message, /without a readable token expiry/);
      return true;
    });
  });

  test('signing an upload URL in a missing bucket is STORAGE_BUCKET_MISSING (a 404 InvalidRequest, not a missing object)', async () => {
    fake.deleteBucket('documents');
    try {
      await assert.rejects(storage.createSignedUpload('documents/nobucket/original', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), (err: unknown) => {
        assertProviderError(err, 'STORAGE_BUCKET_MISSING', true);
        assert.match((err as Error).message, MISSING);
        return true;
      });
      assert.deepEqual([fake.requests.at(-1)!.operation, fake.requests.at(-1)!.status], ['signUpload', 400]);
    } finally {
      assert.equal(await storage.setup(), 'created');
    }
    // An existing path is refused at once (KeyAlreadyExists): the URL would upload nothing.
    await storage.put('documents/exists/original', body('x'));
    await assert.rejects(storage.createSignedUpload('documents/exists/original', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), (err: unknown) => {
      assertProviderError(err, 'STORAGE_REQUEST_REJECTED', true);
      assert.match((err as Error).message, /409 KeyAlreadyExists/);
      return true;
    });
  });

  test('keys are percent-encoded per segment: `a?b` and `a` are two objects, and signed URLs work for them', async () => {
    const keys = ['documents/enc/a', 'documents/enc/a?b', 'documents/enc/a?b=c&d', 'documents/enc/x y+z', "documents/enc/(it's)"];
    for (const key of keys) await storage.put(key, body(key), { contentType: 'text/plain' });
    for (const key of keys) {
      assert.equal(fake.objects.get(`documents/${key}`)?.bytes.toString(), key, `stored under its own name: ${key}`);
      assert.deepEqual(await storage.stat(key), { size: key.length });
      assert.equal((await storage.head(key, 100)).toString(), key);
      let read = '';
      for await (const part of await storage.get(key)) read += (part as Buffer).toString();
      assert.equal(read, key);
    }
    // The URL goes out encoded: `?` never starts the query string.
    assert.ok(fake.requests.some((r) => r.operation === 'upload' && r.path.endsWith('/documents/enc/a%3Fb%3Dc%26d')));
    const upload = await storage.createSignedUpload('documents/enc/signed?', { expiresInSeconds: 60, maxBytes: 10, contentType: 'text/plain' });
    assert.equal((await fetch(upload.url, { method: 'PUT', headers: upload.headers, body: 'via url' })).status, 200);
    assert.equal(fake.objects.get('documents/documents/enc/signed?')?.bytes.toString(), 'via url');
    await storage.deletePrefix('documents/enc');
    assert.deepEqual([...fake.objects.keys()].filter((k) => k.startsWith('documents/documents/enc/')), []);
  });

  test('the fake takes a multipart (Blob) upload as supabase-js sends it', async () => {
    const client = createClient(fake.url, fake.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const { error } = await client.storage.from('documents').upload('documents/blob/original', new Blob(['hello blob'], { type: 'text/markdown' }));
    assert.equal(error, null);
    const stored = fake.objects.get('documents/documents/blob/original');
    assert.equal(stored?.bytes.toString(), 'hello blob');
    assert.equal(stored?.contentType, 'text/markdown');
    // Without upsert a second upload is KeyAlreadyExists (409 in the body, 400 on the wire).
    const again = await client.storage.from('documents').upload('documents/blob/original', new Blob(['x']));
    assert.equal((again.error as { statusCode?: string } | null)?.statusCode, '409');
  });
});

describe('upload tokens', () => {
  const tokens = createUploadTokens('k'.repeat(32));
  const claims = { key: 'documents/t/original', maxBytes: 10, contentType: 'text/plain', expiresAt: new Date(Date.now() + 60_000) };

  test('verify returns the signed claims', () => {
    assert.deepEqual(tokens.verify(tokens.sign(claims)), claims);
  });

  test('bad signatures, other keys, malformed and expired tokens are refused with a stable code', () => {
    const token = tokens.sign(claims);
    const [payload, signature] = token.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify({ v: 1, k: 'documents/other/original', m: 10, c: 'text/plain', e: claims.expiresAt.getTime() })).toString('base64url');
    const cases: Array<[string, string]> = [
      [`${forged}.${signature}`, 'UPLOAD_TOKEN_INVALID'],
      [`${payload}.${signature.slice(0, -2)}AA`, 'UPLOAD_TOKEN_INVALID'],
      [createUploadTokens('o'.repeat(32)).sign(claims), 'UPLOAD_TOKEN_INVALID'],
      ['', 'UPLOAD_TOKEN_INVALID'],
      ['not-a-token', 'UPLOAD_TOKEN_INVALID'],
      [`${payload}.${signature}.x`, 'UPLOAD_TOKEN_INVALID'],
    ];
    for (const [bad, code] of cases) {
      assert.throws(() => tokens.verify(bad), (err: unknown) => err instanceof UploadTokenError && err.code === code, bad);
    }
    assert.throws(() => tokens.verify(token, new Date(claims.expiresAt.getTime() + 1)), { code: 'UPLOAD_TOKEN_EXPIRED' });
  });
});

describe('fs upload route (PUT /v1/storage/upload)', () => {
  let root: string;
  let app: App;
  let storage: Storage;
  const signingKey = randomUUID() + randomUUID();
  const tokens = createUploadTokens(signingKey);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'docpipe-fs-upload-'));
    app = createHttpApp({ service: 'upload-test', logger: createLogger('silent') });
    registerFsUploadRoute(app, { storage: createFsStorage(root), tokens });
    const publicApiUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    storage = createFsStorage(root, { publicApiUrl, signingKey });
  });
  after(async () => {
    await app?.close();
    await rm(root, { recursive: true, force: true });
  });

  const sign = (key: string, maxBytes = 1_000) => storage.createSignedUpload(key, { expiresInSeconds: 60, maxBytes, contentType: 'text/plain' });
  const put = (url: string, data: NonNullable<RequestInit['body']>, headers: Record<string, string> = { 'content-type': 'text/plain' }) =>
    fetch(url, { method: 'PUT', headers, body: data, duplex: 'half', signal: AbortSignal.timeout(30_000) } as RequestInit);

  async function errorOf(response: Response): Promise<{ code: string; message: string; requestId: string }> {
    return ((await response.json()) as { error: { code: string; message: string; requestId: string } }).error;
  }

  test('stores the body and answers {key, size}', async () => {
    const upload = await sign('documents/r1/original');
    const response = await put(upload.url, 'hello');
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { key: 'documents/r1/original', size: 5 });
    assert.deepEqual(await storage.stat('documents/r1/original'), { size: 5 });
  });

  test('an expired token is 401 UPLOAD_TOKEN_EXPIRED', async () => {
    const token = tokens.sign({ key: 'documents/r2/original', maxBytes: 10, contentType: 'text/plain', expiresAt: new Date(Date.now() - 1_000) });
    const response = await put(`${app.listeningOrigin}/v1/storage/upload?token=${token}`, 'x');
    assert.equal(response.status, 401);
    const error = await errorOf(response);
    assert.equal(error.code, 'UPLOAD_TOKEN_EXPIRED');
    assert.ok(error.requestId);
    assert.equal(await storage.stat('documents/r2/original'), null);
  });

  test('a tampered or missing token is 401 UPLOAD_TOKEN_INVALID', async () => {
    const upload = await sign('documents/r3/original');
    const url = new URL(upload.url);
    const [payload, signature] = url.searchParams.get('token')!.split('.') as [string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    const widened = Buffer.from(JSON.stringify({ ...claims, m: 10_000_000 })).toString('base64url');
    url.searchParams.set('token', `${widened}.${signature}`);
    const tampered = await put(url.toString(), 'x');
    assert.equal(tampered.status, 401);
    assert.equal((await errorOf(tampered)).code, 'UPLOAD_TOKEN_INVALID');
    const missing = await put(`${app.listeningOrigin}/v1/storage/upload`, 'x');
    assert.equal(missing.status, 401);
    assert.equal((await errorOf(missing)).code, 'UPLOAD_TOKEN_INVALID');
    assert.equal(await storage.stat('documents/r3/original'), null);
  });

  test('a body over maxBytes is 413 FILE_TOO_LARGE and nothing is stored', async () => {
    // Declared too large (content-length): refused before reading.
    const declared = await sign('documents/r4/original', 100);
    const first = await put(declared.url, Buffer.alloc(5_000, 1));
    assert.equal(first.status, 413);
    assert.equal((await errorOf(first)).code, 'FILE_TOO_LARGE');
    // Streamed without a length: refused once the limit is crossed.
    const streamed = await sign('documents/r5/original', 100_000);
    const chunks = (async function* () {
      for (let i = 0; i < 40; i++) yield Buffer.alloc(8_192, 2);
    })();
    const second = await put(streamed.url, Readable.toWeb(Readable.from(chunks)) as unknown as NonNullable<RequestInit['body']>);
    assert.equal(second.status, 413);
    assert.equal((await errorOf(second)).code, 'FILE_TOO_LARGE');
    assert.equal(await storage.stat('documents/r4/original'), null);
    assert.equal(await storage.stat('documents/r5/original'), null);
    assert.deepEqual(await readdir(join(root, '.tmp')).catch(() => []), [], 'no temp file left');
  });

  test('a second PUT to the same URL is 409 UPLOAD_EXISTS and the first object stays', async () => {
    const upload = await sign('documents/r6/original');
    assert.equal((await put(upload.url, 'first')).status, 200);
    const again = await put(upload.url, 'second!');
    assert.equal(again.status, 409);
    assert.equal((await errorOf(again)).code, 'UPLOAD_EXISTS');
    assert.deepEqual(await storage.stat('documents/r6/original'), { size: 5 });
  });

  test('any content type (or none) is taken raw, JSON included', async () => {
    const upload = await sign('documents/r7/original');
    const response = await put(upload.url, '{"not":"parsed"}', { 'content-type': 'application/json' });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { key: 'documents/r7/original', size: 16 });
    const bare = await sign('documents/r8/original');
    const none = await fetch(bare.url, { method: 'PUT', body: new Uint8Array([1, 2, 3]), signal: AbortSignal.timeout(30_000) });
    assert.equal(none.status, 200);
    assert.deepEqual(await storage.stat('documents/r8/original'), { size: 3 });
  });

  test('createSignedUpload without publicApiUrl/signingKey says so', async () => {
    await assert.rejects(createFsStorage(root).createSignedUpload('documents/r9/original', { expiresInSeconds: 60, maxBytes: 1, contentType: 'text/plain' }), /without publicApiUrl and signingKey/);
  });
});
