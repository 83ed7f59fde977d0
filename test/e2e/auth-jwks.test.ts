// The API with a JWKS (JWT_JWKS_URL, as new Supabase projects sign user tokens) beside the legacy
// HS256 secret, over real HTTP: ES256/RS256 users upload and read their own documents, HS256 keeps
// working, Supabase's roles decide (anon and role-less tokens 403, service_role allowed), and
// every refusal is a 401/403 with a stable code and the Bearer challenge.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, test } from 'node:test';
import { startFakeJwks } from '../fakes/jwks.ts';
import { startStack, waitForStatus } from '../helpers/stack.ts';

const fake = await startFakeJwks();
const stack = await startStack({ env: { JWT_JWKS_URL: fake.url, JWT_ISSUER: fake.issuer } });
after(async () => {
  await stack.close();
  await fake.close();
});

const documents = (token: string, init: RequestInit = {}) =>
  fetch(`${stack.apiUrl}/v1/documents`, { ...init, headers: { authorization: `Bearer ${token}`, ...init.headers } });

async function expectError(res: Response, status: number, code: string): Promise<void> {
  const body = (await res.json()) as { error?: { code?: string; message?: string } };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error?.code, code, JSON.stringify(body));
  assert.ok(body.error?.message);
}

test('ES256 and RS256 users upload and read their own documents; HS256 users too', async () => {
  const userE = randomUUID();
  const form = new FormData();
  form.append('file', new Blob(['# Notes\n\nsigned with ES256\n']), 'notes.md');
  const created = await documents(fake.sign({ sub: userE }), { method: 'POST', body: form });
  assert.equal(created.status, 202, await created.clone().text());
  const { id } = (await created.json()) as { id: string };
  // The same user with an HS256 token (a project rotating from its legacy secret) sees it end ready.
  assert.equal((await waitForStatus(stack, id, ['ready', 'failed'], { sub: userE })).status, 'ready');
  const own = await fetch(`${stack.apiUrl}/v1/documents/${id}`, { headers: { authorization: `Bearer ${fake.sign({ sub: userE })}` } });
  assert.equal(own.status, 200);
  assert.equal(((await own.json()) as { status: string }).status, 'ready');
  // Another user (RS256) does not see it; an HS256 user lists their own, empty.
  const rs = fake.keys.find((k) => k.alg === 'RS256')!;
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${id}`, { headers: { authorization: `Bearer ${fake.sign({ sub: randomUUID() }, { key: rs })}` } })).status, 404);
  const hs = await documents(stack.token('user-hs'));
  assert.equal(hs.status, 200);
});

test('roles: anon and role-less tokens are 403 AUTH_FORBIDDEN_ROLE; service_role is allowed', async () => {
  await expectError(await documents(fake.sign({ sub: randomUUID(), role: 'anon', is_anonymous: true })), 403, 'AUTH_FORBIDDEN_ROLE');
  await expectError(await documents(fake.sign({ sub: randomUUID(), role: undefined })), 403, 'AUTH_FORBIDDEN_ROLE');
  await expectError(await documents(fake.sign({ sub: randomUUID(), role: 'supabase_admin' })), 403, 'AUTH_FORBIDDEN_ROLE');
  assert.equal((await documents(fake.sign({ sub: 'backend', role: 'service_role' }))).status, 200);
});

test('refusals: 401 with a stable code and the Bearer challenge, nothing stored', async () => {
  const cases: [string, string][] = [
    [fake.sign({ sub: 'x' }, { kid: randomUUID() }), 'AUTH_UNKNOWN_KEY'],
    [fake.sign({ sub: 'x' }, { expiresInSeconds: -120 }), 'AUTH_TOKEN_EXPIRED'],
    [fake.sign({ sub: 'x' }, { notBeforeSeconds: 300 }), 'AUTH_TOKEN_NOT_YET_VALID'],
    [fake.sign({ sub: 'x', aud: 'another-service' }), 'AUTH_INVALID_TOKEN'],
    [fake.sign({ sub: 'x', iss: 'https://attacker.example/auth/v1' }), 'AUTH_INVALID_TOKEN'],
    ['e'.repeat(9000), 'AUTH_TOKEN_TOO_LARGE'],
  ];
  for (const [token, code] of cases) {
    const form = new FormData();
    form.append('file', new Blob(['nothing to store']), 'a.txt');
    const res = await documents(token, { method: 'POST', body: form });
    assert.equal(res.headers.get('www-authenticate'), 'Bearer', code);
    await expectError(res, 401, code);
  }
  const rows = await stack.runtime.sql`select 1 from docpipe.document_status where owner_id = 'x'`;
  assert.equal(rows.length, 0);
});
