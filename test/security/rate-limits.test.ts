// Request budgets and long-poll caps over real HTTP (services/api/limits.ts): per address before
// authentication (so a flood of bad tokens is cut off), per user after it in separate budgets
// (uploads, searches, long-polls, the rest), open long-polls per user and in total; every refusal
// a 429 with Retry-After, RateLimit-* and the error shape, nothing stored, the service still
// answering. The address is Fly-Client-IP only with TRUST_PROXY=fly: a client cannot forge it
// otherwise.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { startStack, type TestStack } from '../helpers/stack.ts';

async function expect429(res: Response, code: string, limit?: number): Promise<void> {
  const body = (await res.json()) as { error?: { code?: string; message?: string } };
  assert.equal(res.status, 429, JSON.stringify(body));
  assert.equal(body.error?.code, code);
  assert.ok(Number(res.headers.get('retry-after')) >= 1, 'Retry-After');
  if (limit !== undefined) {
    assert.equal(res.headers.get('ratelimit-limit'), String(limit));
    assert.equal(res.headers.get('ratelimit-remaining'), '0');
    assert.ok(Number(res.headers.get('ratelimit-reset')) >= 1);
  }
}

const budgets = { RATE_LIMIT_PER_ADDRESS: '0', RATE_LIMIT_UPLOADS: '0', RATE_LIMIT_SEARCHES: '0', RATE_LIMIT_LONG_POLLS: '0', RATE_LIMIT_REQUESTS: '0' };
const stacks: TestStack[] = [];
after(() => Promise.all(stacks.map((s) => s.close())));
async function stack(env: Record<string, string>): Promise<TestStack> {
  const s = await startStack({ worker: false, env: { ...budgets, ...env } });
  stacks.push(s);
  return s;
}
const bearer = (s: TestStack, sub: string) => ({ authorization: `Bearer ${s.token(sub)}` });
function form(text = 'hello'): FormData {
  const f = new FormData();
  f.append('file', new Blob([text]), 'a.txt');
  return f;
}

describe('per address, before authentication', async () => {
  const s = await stack({ RATE_LIMIT_PER_ADDRESS: '20' });

  test('a flood of bad tokens: 20 answered 401, then 429 without verifying; health checks are not counted; a good token from that address waits too', async () => {
    const answers: number[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await fetch(`${s.apiUrl}/v1/documents`, { headers: { authorization: 'Bearer forged.token.here', 'fly-client-ip': `203.0.113.${i}` } });
      answers.push(res.status);
      if (res.status === 429) await expect429(res, 'RATE_LIMITED', 20);
      else await res.body?.cancel();
    }
    // Fly-Client-IP is not trusted without TRUST_PROXY=fly: 30 "addresses" are one.
    assert.deepEqual(answers, [...Array(20).fill(401), ...Array(10).fill(429)]);
    assert.equal((await fetch(`${s.apiUrl}/healthz`)).status, 200, 'health checks are not counted');
    const valid = await fetch(`${s.apiUrl}/v1/documents`, { headers: bearer(s, 'user-a') });
    await expect429(valid, 'RATE_LIMITED', 20);
  });
});

describe('TRUST_PROXY=fly: the address is Fly-Client-IP', async () => {
  const s = await stack({ RATE_LIMIT_PER_ADDRESS: '3', TRUST_PROXY: 'fly' });

  test('each client address has its own budget; a malformed header falls back to the peer', async () => {
    const from = (ip: string) => fetch(`${s.apiUrl}/v1/documents`, { headers: { ...bearer(s, 'user-a'), 'fly-client-ip': ip } });
    for (let i = 0; i < 3; i++) assert.equal((await from('198.51.100.7')).status, 200);
    await expect429(await from('198.51.100.7'), 'RATE_LIMITED', 3);
    assert.equal((await from('198.51.100.8')).status, 200, 'another client');
    // IPv6 clients are counted per /64.
    for (let i = 0; i < 3; i++) assert.equal((await from(`2001:db8:1:2::${i + 1}`)).status, 200);
    await expect429(await from('2001:db8:1:2::ff'), 'RATE_LIMITED', 3);
    for (let i = 0; i < 3; i++) assert.equal((await from('not-an-ip')).status, 200);
    await expect429(await from('also-not-an-ip'), 'RATE_LIMITED', 3);
  });
});

describe('per user, after authentication', async () => {
  const s = await stack({ RATE_LIMIT_REQUESTS: '5', RATE_LIMIT_UPLOADS: '2', RATE_LIMIT_SEARCHES: '2', RATE_LIMIT_LONG_POLLS: '3' });

  test('requests: RateLimit-Remaining counts down, the 6th is 429, another user is not affected', async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${s.apiUrl}/v1/documents`, { headers: bearer(s, 'user-r') });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('ratelimit-limit'), '5');
      remaining.push(res.headers.get('ratelimit-remaining')!);
    }
    assert.deepEqual(remaining, ['4', '3', '2', '1', '0']);
    await expect429(await fetch(`${s.apiUrl}/v1/documents`, { headers: bearer(s, 'user-r') }), 'RATE_LIMITED', 5);
    assert.equal((await fetch(`${s.apiUrl}/v1/documents`, { headers: bearer(s, 'user-s') })).status, 200);
  });

  test('uploads have their own budget: the 3rd is 429 and stores nothing; reads still pass', async () => {
    for (let i = 0; i < 2; i++) assert.equal((await fetch(`${s.apiUrl}/v1/documents`, { method: 'POST', headers: bearer(s, 'user-u'), body: form(`doc ${i}`) })).status, 202);
    await expect429(await fetch(`${s.apiUrl}/v1/documents`, { method: 'POST', headers: bearer(s, 'user-u'), body: form('third') }), 'RATE_LIMITED', 2);
    const rows = await s.runtime.sql`select 1 from docpipe.document_status where owner_id = 'user-u'`;
    assert.equal(rows.length, 2, 'the refused upload stored nothing');
    assert.equal((await fetch(`${s.apiUrl}/v1/documents`, { headers: bearer(s, 'user-u') })).status, 200);
  });

  test('searches have their own budget: the 3rd is 429; other requests still pass', async () => {
    const search = () =>
      fetch(`${s.apiUrl}/v1/search`, { method: 'POST', headers: { ...bearer(s, 'user-q'), 'content-type': 'application/json' }, body: '{"query":"lamp"}' });
    for (let i = 0; i < 2; i++) assert.equal((await search()).status, 200);
    await expect429(await search(), 'RATE_LIMITED', 2);
    assert.equal((await fetch(`${s.apiUrl}/v1/documents`, { headers: bearer(s, 'user-q') })).status, 200);
  });

  test('long-polls have their own budget', async () => {
    const created = await fetch(`${s.apiUrl}/v1/documents`, { method: 'POST', headers: bearer(s, 'user-l'), body: form() });
    const { id } = (await created.json()) as { id: string };
    const poll = () => fetch(`${s.apiUrl}/v1/documents/${id}?wait=1`, { headers: bearer(s, 'user-l') });
    for (let i = 0; i < 3; i++) assert.equal((await poll()).status, 200);
    await expect429(await poll(), 'RATE_LIMITED', 3);
    assert.equal((await fetch(`${s.apiUrl}/v1/documents/${id}`, { headers: bearer(s, 'user-l') })).status, 200, 'a plain GET still passes');
  });
});

describe('open long-polls', async () => {
  const s = await stack({ LONG_POLLS_PER_USER: '2', LONG_POLLS_MAX: '3' });

  test('per user and in total: 429 TOO_MANY_LONG_POLLS at once; a closed poll frees its slot', async () => {
    const doc = async (sub: string) => ((await (await fetch(`${s.apiUrl}/v1/documents`, { method: 'POST', headers: bearer(s, sub), body: form() })).json()) as { id: string }).id;
    const a = await doc('user-a');
    const b = await doc('user-b');
    const aborts: AbortController[] = [];
    const open = (sub: string, id: string) => {
      const controller = new AbortController();
      aborts.push(controller);
      return fetch(`${s.apiUrl}/v1/documents/${id}?wait=20`, { headers: bearer(s, sub), signal: controller.signal }).catch(() => null);
    };
    const held = [open('user-a', a), open('user-a', a)];
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    await expect429((await fetch(`${s.apiUrl}/v1/documents/${a}?wait=20`, { headers: bearer(s, 'user-a') }))!, 'TOO_MANY_LONG_POLLS');
    assert.ok(Date.now() - started < 1000, 'refused at once, not after the wait');
    held.push(open('user-b', b));
    await new Promise((r) => setTimeout(r, 200));
    const full = await fetch(`${s.apiUrl}/v1/documents/${b}?wait=20`, { headers: bearer(s, 'user-b') });
    await expect429(full, 'TOO_MANY_LONG_POLLS');
    // A client gone frees its slot.
    aborts[0]!.abort();
    await new Promise((r) => setTimeout(r, 300));
    const again = fetch(`${s.apiUrl}/v1/documents/${b}?wait=1`, { headers: bearer(s, 'user-b') });
    assert.equal((await again).status, 200);
    for (const c of aborts) c.abort();
    await Promise.all(held);
  });
});
