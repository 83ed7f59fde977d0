// Direct uploads with Supabase Storage (the fake, over real HTTP) and the local parser and
// embedder: what POST /v1/uploads answers when the bucket is missing, and the signed URL's real
// lifetime, read from its token. (providers.test.ts runs the same path with LlamaParse and OpenAI.)
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, beforeEach, describe, test } from 'node:test';
import { startFakeSupabaseStorage } from '../fakes/supabase-storage.ts';
import { api, startStack, upload, waitForStatus, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

const supabase = await startFakeSupabaseStorage({ buckets: ['direct'] });
after(() => supabase.close());

const stack: TestStack = await startStack({
  env: {
    DOCPIPE_STORAGE: 'supabase',
    SUPABASE_URL: supabase.url,
    SUPABASE_SERVICE_ROLE_KEY: supabase.serviceKey,
    SUPABASE_STORAGE_BUCKET: 'direct',
  },
});
const call = api(stack);

async function reserve(body: Json): Promise<{ status: number; body: Json }> {
  const res = await call('/v1/uploads', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Json };
}

async function register(uploadId: string): Promise<{ status: number; body: Json }> {
  const res = await call('/v1/documents', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ uploadId }) });
  return { status: res.status, body: (await res.json()) as Json };
}

/** The `exp` of the signed URL's token, in ms. */
function tokenExpiry(url: string): number {
  const token = new URL(url).searchParams.get('token')!;
  return (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
}

describe('direct upload to Supabase Storage', () => {
  beforeEach(() => supabase.reset());

  test('a missing bucket: POST /v1/uploads answers STORAGE_BUCKET_MISSING, as a multipart upload does, and reserves nothing', async () => {
    supabase.deleteBucket('direct');
    try {
      const reserved = await reserve({ fileName: 'a.txt', size: 5, contentType: 'text/plain' });
      const uploaded = await upload(stack, Buffer.from('hello'), 'a.txt');
      const multipart = { status: uploaded.status, body: (await uploaded.json()) as Json };
      for (const [what, answer] of [['reservation', reserved], ['multipart upload', multipart]] as const) {
        assert.equal(answer.status, 502, `${what}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.error.code, 'STORAGE_BUCKET_MISSING', what);
        assert.match(answer.body.error.message, /storage bucket "direct" is missing, or SUPABASE_SERVICE_ROLE_KEY has no access to it/, what);
      }
      assert.ok(supabase.requests.some((r) => r.operation === 'signUpload' && r.status === 400), 'the sign route answered its 404 InvalidRequest');
      assert.equal((await stack.db.sql`select 1 from docpipe.pending_uploads`).length, 0);
    } finally {
      supabase.buckets.set('direct', { id: 'direct', name: 'direct', owner: '', public: false, file_size_limit: null, allowed_mime_types: null, created_at: '', updated_at: '' });
    }
  });

  test("expiresAt is the token's exp (the server's 60 s, not UPLOAD_URL_TTL_SECONDS); once expired the PUT is refused and nothing is received", async () => {
    const r = await reserve({ fileName: 'a.txt', size: 5, contentType: 'text/plain' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const expiresAt = Date.parse(r.body.upload.expiresAt);
    assert.equal(expiresAt, tokenExpiry(r.body.upload.url));
    const left = expiresAt - Date.now();
    assert.ok(left > 50_000 && left <= 60_000, `the client is told ~60 s (${left} ms)`);
    assert.deepEqual(r.body.upload.headers, { 'content-type': 'text/plain' });

    supabase.advanceClock(61_000);
    const late = await fetch(r.body.upload.url, { method: 'PUT', headers: r.body.upload.headers, body: 'hello' });
    assert.equal(late.status, 400);
    assert.deepEqual(await late.json(), { statusCode: '400', error: 'InvalidJWT', message: '"exp" claim timestamp check failed' });
    const missing = await register(r.body.uploadId);
    assert.deepEqual([missing.status, missing.body.error.code], [409, 'UPLOAD_NOT_RECEIVED']);
  });

  test('with a 2 h server setting (hosted Supabase) the client is told 2 h; a PUT in time registers', async () => {
    supabase.setSignedUploadTtl(7200);
    const bytes = await readFile('test/fixtures/sample.pdf');
    const r = await reserve({ fileName: 'big.pdf', size: bytes.length, contentType: 'application/pdf' });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const expiresAt = Date.parse(r.body.upload.expiresAt);
    assert.equal(expiresAt, tokenExpiry(r.body.upload.url));
    assert.ok(expiresAt - Date.now() > 7_100_000, r.body.upload.expiresAt);
    const put = await fetch(r.body.upload.url, { method: 'PUT', headers: r.body.upload.headers, body: bytes });
    assert.equal(put.status, 200, await put.clone().text());
    const done = await register(r.body.uploadId);
    assert.deepEqual([done.status, done.body.id], [202, r.body.uploadId]);
    // The worker stores the parsed markdown with its length declared.
    const doc = await waitForStatus(stack, r.body.uploadId, ['ready', 'failed']);
    assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
    assert.ok(supabase.objects.has(`direct/documents/${r.body.uploadId}/runs/1/parsed.md`));
  });
});
