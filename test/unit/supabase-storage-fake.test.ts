// The Supabase Storage fake answers as the real storage server does (supabase/storage 1.11.2, as
// docs/PROVIDERS.md "Supabase Storage: answers docpipe relies on" lists it), over real HTTP: a
// kinder fake would hide the adapter's bugs. Each case names the server behaviour it pins.
import { describe, test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { createClient } from '@supabase/supabase-js';
import { startFakeSupabaseStorage, type FakeSupabaseStorage } from '../fakes/supabase-storage.ts';

type Json = Record<string, any>;

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

describe('fake Supabase Storage', () => {
  let fake: FakeSupabaseStorage;
  /** A raw request to `/storage/v1<path>`; `key: null` sends no Authorization header. */
  let call: (method: string, path: string, options?: { key?: string | null; headers?: Record<string, string>; body?: unknown }) => Promise<Answer>;

  before(async () => {
    fake = await startFakeSupabaseStorage({ buckets: ['docs'] });
    call = async (method, path, options = {}) => {
      const key = options.key === undefined ? fake.serviceKey : options.key;
      const headers: Record<string, string> = { ...(key === null ? {} : { apikey: key, authorization: `Bearer ${key}` }), ...options.headers };
      let body = options.body as RequestInit['body'];
      if (options.body !== undefined && !(typeof options.body === 'string' || Buffer.isBuffer(options.body) || options.body instanceof Readable)) {
        body = JSON.stringify(options.body);
        headers['content-type'] ??= 'application/json';
      }
      const response = await fetch(`${fake.url}/storage/v1${path}`, { method, headers, body, duplex: 'half', signal: AbortSignal.timeout(10_000) } as RequestInit);
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // a download's bytes
      }
      return { status: response.status, headers: response.headers, body: parsed };
    };
  });
  after(async () => {
    await fake?.close();
  });
  beforeEach(() => {
    fake.reset();
    for (const k of [...fake.objects.keys()]) fake.objects.delete(k);
    for (const name of [...fake.buckets.keys()]) if (name !== 'docs') fake.deleteBucket(name);
    if (!fake.buckets.has('docs')) fake.buckets.set('docs', { id: 'docs', name: 'docs', owner: '', public: false, file_size_limit: null, allowed_mime_types: null, created_at: '', updated_at: '' });
    fake.buckets.get('docs')!.file_size_limit = null;
  });

  const upload = (key: string, data: string, headers: Record<string, string> = {}) =>
    call('POST', `/object/docs/${key}`, { headers: { 'content-type': 'text/plain', ...headers }, body: data });

  test('errors are HTTP 400 with the real status as a string; 5xx keep theirs; an unknown route is a real 404', async () => {
    const absent = await call('GET', '/object/docs/absent');
    assert.deepEqual([absent.status, absent.body], [400, { statusCode: '404', error: 'not_found', message: 'Object not found', code: 'NoSuchKey' }]);
    assert.equal((await upload('dup', 'x')).status, 200);
    assert.deepEqual((await upload('dup', 'y')).body, { statusCode: '409', error: 'Duplicate', message: 'The resource already exists', code: 'KeyAlreadyExists' });
    assert.deepEqual((await call('GET', '/bucket/nope')).body, { statusCode: '404', error: 'Bucket not found', message: 'Bucket not found', code: 'NoSuchBucket' });
    const exists = await call('POST', '/bucket', { body: { name: 'docs' } });
    assert.deepEqual([exists.status, exists.body.statusCode, exists.body.code], [400, '409', 'BucketAlreadyExists']);
    fake.failNext('download', 500);
    const broken = await call('GET', '/object/docs/dup');
    assert.deepEqual([broken.status, broken.body.statusCode, broken.body.error], [500, '500', 'Internal']);
    const unknown = await call('GET', '/nowhere');
    assert.deepEqual([unknown.status, unknown.body.statusCode, unknown.body.code], [404, '404', 'InvalidRequest']);
  });

  test('no Authorization header: InvalidRequest, on every keyed route', async () => {
    for (const [method, path] of [['GET', '/bucket/docs'], ['POST', '/object/docs/a'], ['GET', '/object/docs/a'], ['POST', '/object/list/docs'], ['DELETE', '/object/docs'], ['POST', '/object/upload/sign/docs/a']]) {
      const answer = await call(method!, path!, { key: null, body: method === 'GET' ? undefined : {} });
      assert.equal(answer.status, 400, `${method} ${path}`);
      assert.deepEqual(answer.body, { statusCode: '400', error: 'Error', message: "headers must have required property 'authorization'", code: 'InvalidRequest' }, `${method} ${path}`);
    }
  });

  test('a wrong, garbled or expired key: AccessDenied with jose\'s message on bucket, upload, list, remove and sign; NoSuchBucket on download and info', async () => {
    await upload('kept', 'x');
    const [head, payload] = fake.serviceKey.split('.') as [string, string];
    const keys: Array<[string, string]> = [
      [`garbage-${randomUUID()}`, 'Invalid Compact JWS'],
      [`${head}.${payload}.${Buffer.alloc(32, 1).toString('base64url')}`, 'signature verification failed'],
      [fake.signKey('service_role', -1), '"exp" claim timestamp check failed'],
    ];
    for (const [key, message] of keys) {
      const denied = { statusCode: '403', error: 'Unauthorized', message, code: 'AccessDenied' };
      for (const [method, path, body] of [
        ['GET', '/bucket/docs', undefined],
        ['POST', '/bucket', { name: 'other' }],
        ['POST', '/object/docs/new', 'x'],
        ['POST', '/object/list/docs', { prefix: '' }],
        ['DELETE', '/object/docs', { prefixes: ['kept'] }],
        ['POST', '/object/upload/sign/docs/new', {}],
        ['POST', '/object/sign/docs/kept', { expiresIn: 60 }],
      ] as const) {
        const answer = await call(method, path, { key, body });
        assert.deepEqual([answer.status, answer.body], [400, denied], `${message}: ${method} ${path}`);
      }
      for (const path of ['/object/docs/kept', '/object/info/docs/kept']) {
        const answer = await call('GET', path, { key });
        assert.deepEqual([answer.status, answer.body.code], [400, 'NoSuchBucket'], `${message}: GET ${path}`);
      }
    }
    assert.ok(fake.objects.has('docs/kept'), 'nothing was deleted');
  });

  test('the anon key meets row-level security: writes AccessDenied, get bucket NoSuchBucket, reads NoSuchKey, list and remove []', async () => {
    await upload('kept', 'x');
    const client = createClient(fake.url, fake.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const files = client.storage.from('docs');
    const rls = { statusCode: '403', code: 'AccessDenied', message: 'new row violates row-level security policy' };
    const pick = (error: any) => ({ statusCode: error?.statusCode, code: error?.code ?? error?.error, message: error?.message });
    assert.deepEqual(pick((await client.storage.createBucket('mine')).error), rls);
    assert.deepEqual(pick((await files.upload('new', Buffer.from('x'), { contentType: 'text/plain' })).error), rls);
    assert.deepEqual(pick((await files.createSignedUploadUrl('new')).error), rls);
    assert.equal(((await client.storage.getBucket('docs')).error as any)?.code, 'NoSuchBucket');
    assert.equal(((await files.download('kept')).error as any)?.code, 'NoSuchKey');
    assert.equal(((await files.info('kept')).error as any)?.code, 'NoSuchKey');
    assert.deepEqual((await files.list('')).data, []);
    assert.deepEqual((await files.remove(['kept'])).data, []);
    assert.ok(fake.objects.has('docs/kept'), 'the anon key deleted nothing');
    assert.equal(fake.objects.has('docs/new'), false);
  });

  test('a missing bucket: list and remove answer 200 [], signing an upload URL a 404 InvalidRequest', async () => {
    assert.deepEqual(await call('POST', '/object/list/gone', { body: { prefix: '' } }).then((a) => [a.status, a.body]), [200, []]);
    assert.deepEqual(await call('DELETE', '/object/gone', { body: { prefixes: ['a'] } }).then((a) => [a.status, a.body]), [200, []]);
    const sign = await call('POST', '/object/upload/sign/gone/a', { body: {} });
    assert.deepEqual([sign.status, sign.body], [400, { statusCode: '404', error: 'InvalidRequest', message: 'The related resource does not exist', code: 'InvalidRequest' }]);
    assert.equal((await call('POST', '/object/gone/x', { body: 'x', headers: { 'content-type': 'text/plain' } })).body.code, 'NoSuchBucket', 'an upload answers NoSuchBucket');
  });

  test('bucket names and keys are checked as the server checks them', async () => {
    for (const name of ['bad/name', 'x'.repeat(64), 'caf\u00e9']) {
      const answer = await call('POST', '/bucket', { body: { name } });
      assert.deepEqual([answer.status, answer.body], [400, { statusCode: '400', error: 'Invalid Input', message: 'Bucket name invalid', code: 'InvalidBucketName' }], name);
    }
    const invalid = await upload('a%23b', 'x');
    assert.deepEqual([invalid.status, invalid.body], [400, { statusCode: '400', error: 'InvalidKey', message: 'Invalid key: a#b', code: 'InvalidKey' }]);
    // A non-ASCII key is InvalidKey on download and info too (not NoSuchKey).
    for (const path of ['/object/docs/caf%C3%A9', '/object/info/docs/caf%C3%A9']) {
      assert.equal((await call('GET', path)).body.code, 'InvalidKey', path);
    }
  });

  test('the path is decoded once per segment: unencoded `?` and `#` collide, encoded ones do not', async () => {
    assert.equal((await upload('a%3Fb', 'encoded')).status, 200);
    assert.equal(fake.objects.get('docs/a?b')?.bytes.toString(), 'encoded');
    assert.equal((await upload('plain?b', 'unencoded')).status, 200);
    assert.equal(fake.objects.get('docs/plain')?.bytes.toString(), 'unencoded', 'the `?b` went into the query string');
    // `%` must itself be encoded: `a%253Fb` is the key `a%3Fb`, which the server refuses.
    assert.equal((await upload('a%253Fb', 'x')).body.message, 'Invalid key: a%3Fb');
  });

  test('the size limit applies to a declared content-length only; a stream without one is stored', async () => {
    fake.buckets.get('docs')!.file_size_limit = 10;
    const declared = await upload('big', 'x'.repeat(11));
    assert.deepEqual([declared.status, declared.body.statusCode, declared.body.code], [400, '413', 'EntityTooLarge']);
    assert.equal(fake.objects.has('docs/big'), false);
    const streamed = await upload('big', Readable.from([Buffer.from('x'.repeat(11))]) as unknown as string);
    assert.equal(streamed.status, 200);
    assert.equal(fake.objects.get('docs/big')?.bytes.length, 11);
    assert.equal((await upload('exact', 'x'.repeat(10))).status, 200);
  });

  test('ranges: 206 for a satisfiable one, a real HTTP 416 for an unsatisfiable one and for any range of an empty object', async () => {
    await upload('five', '12345');
    await upload('empty', '');
    const part = await call('GET', '/object/docs/five', { headers: { range: 'bytes=1-2' } });
    assert.deepEqual([part.status, part.body, part.headers.get('content-range')], [206, 23, 'bytes 1-2/5']);
    const invalid = { statusCode: '416', error: 'invalid_range', message: 'invalid range provided', code: 'InvalidRange' };
    for (const [key, range] of [['five', 'bytes=5-9'], ['empty', 'bytes=0-3'], ['empty', 'bytes=-4']]) {
      const answer = await call('GET', `/object/docs/${key}`, { headers: { range: range! } });
      assert.deepEqual([answer.status, answer.body], [416, invalid], `${key} ${range}`);
    }
  });

  test('downloads carry x-robots-tag: none; info answers carry etag, cache-control and last-modified', async () => {
    await upload('doc', 'hello', { 'cache-control': 'max-age=3600' });
    const download = await call('GET', '/object/docs/doc');
    assert.equal(download.headers.get('x-robots-tag'), 'none');
    const info = await call('GET', '/object/info/docs/doc');
    assert.equal(info.status, 200);
    assert.equal(info.body.size, 5);
    assert.match(info.headers.get('etag') ?? '', /^"[0-9a-f]{32}"$/);
    assert.equal(info.headers.get('cache-control'), 'max-age=3600');
    assert.ok(!Number.isNaN(Date.parse(info.headers.get('last-modified') ?? '')));
  });

  test('remove: empty prefixes refused, more than 1,000 refused with the hard limits on, deleted rows in full', async () => {
    await upload('a', 'x');
    const empty = await call('DELETE', '/object/docs', { body: { prefixes: [] } });
    assert.deepEqual([empty.status, empty.body.code], [400, 'InvalidRequest']);
    const many = Array.from({ length: 1001 }, (_, i) => `k${i}`);
    const bulk = await call('DELETE', '/object/docs', { body: { prefixes: many } });
    assert.deepEqual([bulk.status, bulk.body], [400, { statusCode: '400', error: 'Error', message: 'Bulk object requests are limited to 1000 objects per request.', code: 'InvalidRequest' }]);
    const removed = await call('DELETE', '/object/docs', { body: { prefixes: ['a', 'absent'] } });
    assert.equal(removed.status, 200);
    assert.equal(removed.body.length, 1);
    const row = removed.body[0] as Json;
    assert.equal(row.name, 'a');
    assert.equal(row.owner, '');
    for (const field of ['owner_id', 'version', 'user_metadata']) assert.ok(field in row, field);

    const lax = await startFakeSupabaseStorage({ buckets: ['docs'], hardLimits: false });
    try {
      const response = await fetch(`${lax.url}/storage/v1/object/docs`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${lax.serviceKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ prefixes: many }),
      });
      assert.deepEqual([response.status, await response.json()], [200, []]);
    } finally {
      await lax.close();
    }
  });

  test('list sorts by the objects\' full names, byte order: `a-sibling` before `a`', async () => {
    for (const key of ['a/original', 'a-sibling/original', 'a.txt', 'B']) await upload(key, 'x');
    const listed = await call('POST', '/object/list/docs', { body: { prefix: '', limit: 100, offset: 0, sortBy: { column: 'name', order: 'asc' } } });
    assert.deepEqual((listed.body as Json[]).map((e) => e.name), ['B', 'a-sibling', 'a.txt', 'a']);
  });

  test('signed upload URLs: the token is an HS256 JWT {url, upsert, scope, iat, exp}; its lifetime is the server\'s (60 s by default)', async () => {
    const signed = await call('POST', '/object/upload/sign/docs/new%3Fx', { body: {} });
    assert.equal(signed.status, 200);
    // The key goes back unencoded (so a client must not parse the token back out of `url`).
    assert.equal(signed.body.url, `/object/upload/sign/docs/new?x?token=${signed.body.token}`);
    const [header, claims] = (signed.body.token as string).split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()));
    assert.deepEqual(header, { alg: 'HS256' });
    assert.deepEqual(Object.keys(claims).sort(), ['exp', 'iat', 'scope', 'upsert', 'url']);
    assert.deepEqual([claims.url, claims.upsert, claims.scope, claims.exp - claims.iat], ['docs/new?x', false, 'upload', 60]);
    fake.setSignedUploadTtl(7200);
    const hosted = await call('POST', '/object/upload/sign/docs/later', { body: {} });
    const later = JSON.parse(Buffer.from((hosted.body.token as string).split('.')[1]!, 'base64url').toString());
    assert.equal(later.exp - later.iat, 7200);
  });

  test('the signed PUT: tampered, another path\'s, missing and expired tokens are refused as the server does', async () => {
    const { token } = (await call('POST', '/object/upload/sign/docs/target', { body: {} })).body as { token: string };
    const { token: other } = (await call('POST', '/object/upload/sign/docs/other', { body: {} })).body as { token: string };
    const put = (path: string, query: string, body = 'x', headers: Record<string, string> = {}) =>
      call('PUT', `/object/upload/sign/docs/${path}${query}`, { key: null, headers: { 'content-type': 'text/plain', ...headers }, body });
    const tampered = `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
    assert.deepEqual((await put('target', `?token=${tampered}`)).body, { statusCode: '400', error: 'InvalidJWT', message: 'signature verification failed' });
    assert.deepEqual((await put('target', '?token=garbage')).body, { statusCode: '400', error: 'InvalidJWT', message: 'Invalid Compact JWS' });
    assert.deepEqual((await put('target', `?token=${other}`)).body, { statusCode: '400', error: 'InvalidSignature', message: 'Invalid signature' });
    assert.deepEqual((await put('target', '')).body, { statusCode: '400', error: 'Error', message: "querystring must have required property 'token'", code: 'InvalidRequest' });
    // A service key is no upload token.
    assert.equal((await put('target', `?token=${fake.serviceKey}`)).body.error, 'InvalidSignature');
    assert.equal(fake.objects.has('docs/target'), false);

    // The PUT's x-upsert is ignored: a token without upsert uploads once.
    assert.equal((await put('target', `?token=${token}`, 'first')).status, 200);
    const again = await put('target', `?token=${token}`, 'second', { 'x-upsert': 'true' });
    assert.deepEqual([again.status, again.body.code], [400, 'KeyAlreadyExists']);
    assert.equal(fake.objects.get('docs/target')?.bytes.toString(), 'first');

    fake.advanceClock(61_000);
    assert.deepEqual((await put('other', `?token=${other}`)).body, { statusCode: '400', error: 'InvalidJWT', message: '"exp" claim timestamp check failed' });
    assert.equal(fake.objects.has('docs/other'), false);
  });

  test('signing: an existing path without upsert is KeyAlreadyExists at once; with upsert the PUT overwrites; an invalid key fails on the PUT', async () => {
    await upload('taken', 'old');
    const refused = await call('POST', '/object/upload/sign/docs/taken', { body: {} });
    assert.deepEqual([refused.status, refused.body.statusCode, refused.body.code], [400, '409', 'KeyAlreadyExists']);
    const upsert = await call('POST', '/object/upload/sign/docs/taken', { body: {}, headers: { 'x-upsert': 'true' } });
    assert.equal(upsert.status, 200);
    const put = await call('PUT', `/object/upload/sign/docs/taken?token=${upsert.body.token}`, { key: null, headers: { 'content-type': 'text/plain' }, body: 'new' });
    assert.equal(put.status, 200);
    assert.equal(fake.objects.get('docs/taken')?.bytes.toString(), 'new');

    const invalid = await call('POST', '/object/upload/sign/docs/a%23b', { body: {} });
    assert.equal(invalid.status, 200, 'sign takes an invalid key');
    const failed = await call('PUT', `/object/upload/sign/docs/a%23b?token=${invalid.body.token}`, { key: null, headers: { 'content-type': 'text/plain' }, body: 'x' });
    assert.deepEqual([failed.status, failed.body.code], [400, 'InvalidKey']);
  });
});
