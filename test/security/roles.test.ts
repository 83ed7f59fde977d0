// Supabase's roles over real HTTP: `authenticated` users act on their own documents only (another
// owner's is a 404, and naming another owner in a list a 403); the service role acts on anyone's
// (read, list by owner or all, delete) and reaches the admin routes; `anon` nothing.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startStack } from '../helpers/stack.ts';

const stack = await startStack({ worker: false });
after(() => stack.close());
const as = (sub: string, role?: string) => ({ authorization: `Bearer ${stack.token(sub, role ? ({ claims: { role } } as never) : undefined)}` });
async function upload(sub: string): Promise<string> {
  const form = new FormData();
  form.append('file', new Blob([`a document of ${sub}`]), 'a.txt');
  const res = await fetch(`${stack.apiUrl}/v1/documents`, { method: 'POST', headers: as(sub), body: form });
  assert.equal(res.status, 202);
  return ((await res.json()) as { id: string }).id;
}
const ids = (body: unknown) => (body as { documents: { id: string }[] }).documents.map((d) => d.id).sort();

test('a user: their own documents only', async () => {
  const mine = await upload('alice');
  const theirs = await upload('bob');
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${mine}`, { headers: as('alice') })).status, 200);
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${theirs}`, { headers: as('alice') })).status, 404);
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${theirs}`, { method: 'DELETE', headers: as('alice') })).status, 404);
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${theirs}/events`, { headers: as('alice') })).status, 404);
  assert.deepEqual(ids(await (await fetch(`${stack.apiUrl}/v1/documents`, { headers: as('alice') })).json()), [mine]);
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents?owner=alice`, { headers: as('alice') })).status, 200);
  const other = await fetch(`${stack.apiUrl}/v1/documents?owner=bob`, { headers: as('alice') });
  assert.equal(other.status, 403);
  assert.equal(((await other.json()) as { error: { code: string } }).error.code, 'FORBIDDEN_OWNER');
  const admin = await fetch(`${stack.apiUrl}/v1/admin/audit`, { headers: as('alice') });
  assert.equal(admin.status, 403);
});

test('the service role: anyone\'s documents, listed all or by owner, deletable', async () => {
  const carols = await upload('carol');
  const daves = await upload('dave');
  const service = as('backend', 'service_role');
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${carols}`, { headers: service })).status, 200);
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${carols}/events`, { headers: service })).status, 200);
  assert.deepEqual(ids(await (await fetch(`${stack.apiUrl}/v1/documents?owner=dave`, { headers: service })).json()), [daves]);
  const all = ids(await (await fetch(`${stack.apiUrl}/v1/documents?limit=100`, { headers: service })).json());
  assert.ok(all.includes(carols) && all.includes(daves), 'every owner');
  assert.ok((await fetch(`${stack.apiUrl}/v1/documents/${daves}`, { method: 'DELETE', headers: service })).status < 300);
  assert.equal((await fetch(`${stack.apiUrl}/v1/documents/${daves}`, { headers: as('dave') })).status, 404, 'deleted for its owner too');
  assert.equal((await fetch(`${stack.apiUrl}/v1/admin/audit?action=document.delete&target=${daves}`, { headers: service })).status, 200);
});

test('an encoded path reaches the same route and the same checks (decided by the route, not the raw URL)', async () => {
  assert.equal((await fetch(`${stack.apiUrl}/%761/documents`, { headers: as('alice') })).status, 200);
  const anon = await fetch(`${stack.apiUrl}/%761/documents`, { headers: as('visitor', 'anon') });
  assert.equal(anon.status, 403);
  assert.equal(((await anon.json()) as { error: { code: string } }).error.code, 'AUTH_FORBIDDEN_ROLE');
  assert.equal((await fetch(`${stack.apiUrl}/%761/documents`)).status, 401);
});

test('anon: 403 AUTH_FORBIDDEN_ROLE everywhere', async () => {
  for (const path of ['/v1/documents', '/v1/admin/audit']) {
    const res = await fetch(`${stack.apiUrl}${path}`, { headers: as('visitor', 'anon') });
    assert.equal(res.status, 403, path);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'AUTH_FORBIDDEN_ROLE');
  }
});
