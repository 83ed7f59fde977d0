// The cache of verified tokens (src/security/tokens.ts): it answers only for the exact token it
// verified, never past that token's exp nor before its nbf, never for a key the JWKS no longer
// publishes, never for longer than its maximum age, and it never remembers a refusal. Against the
// real verifier and a JWKS endpoint over HTTP, then through the api.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSigner } from 'fast-jwt';
import { createJwksCache } from '../../src/security/jwks.ts';
import { AuthError, createAuthVerifier, TOKEN_CACHE_MAX_AGE_MS } from '../../src/security/tokens.ts';
import { startFakeJwks } from '../fakes/jwks.ts';
import { startStack } from '../helpers/stack.ts';

const SECRET = 'token-cache-test-secret-token-cache-test-secret';
const fake = await startFakeJwks();
const quiet = { warn: () => {}, info: () => {} };
const jwks = createJwksCache({ url: fake.url, logger: quiet, unknownKidIntervalMs: 100 });
after(async () => {
  jwks.close();
  await fake.close();
});
const settings = { secret: SECRET, audience: 'authenticated', issuer: fake.issuer, jwks };

const nowSeconds = () => Math.floor(Date.now() / 1000);
/** An HS256 token with exactly these claims over Supabase's defaults. */
function hs256(claims: Record<string, unknown>, key = SECRET): string {
  return createSigner({ key, algorithm: 'HS256', noTimestamp: true })({
    sub: 'user-h', role: 'authenticated', aud: 'authenticated', iss: fake.issuer, iat: nowSeconds(), exp: nowSeconds() + 3600, ...claims,
  });
}

async function refused(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => err instanceof AuthError && err.code === code, `expected ${code}`);
}

/** Sleeps until Date.now() is past `ms` (bounded: the tests ask for a few seconds at most). */
async function until(ms: number): Promise<void> {
  const wait = ms - Date.now();
  assert.ok(wait < 10_000, `a wait of ${wait} ms`);
  if (wait > 0) await sleep(wait);
}

test('the same token is verified once, then answered from the cache; the maximum age is a minute', async () => {
  assert.equal(TOKEN_CACHE_MAX_AGE_MS, 60_000);
  const verify = createAuthVerifier(settings);
  const token = hs256({ sub: 'user-1' });
  assert.equal((await verify(token)).sub, 'user-1');
  assert.deepEqual(verify.cacheStats(), { hits: 0, misses: 1, entries: 1 });
  for (let i = 0; i < 5; i++) assert.equal((await verify(token)).sub, 'user-1');
  assert.deepEqual(verify.cacheStats(), { hits: 5, misses: 1, entries: 1 });
  // Another token of the same user is another entry: the key is the exact token.
  await verify(hs256({ sub: 'user-1', session_id: 'another' }));
  assert.equal(verify.cacheStats().entries, 2);
  assert.equal(createAuthVerifier({ ...settings, cache: false }).cacheStats().entries, 0);
});

test('an expired token is refused even though it was cached while valid', async () => {
  // Without the 30 s skew, so that expiry is seconds away (the cache's bound is exp itself,
  // which is never later than what a verification accepts).
  const verify = createAuthVerifier({ ...settings, clockToleranceMs: 0 });
  const exp = nowSeconds() + 2;
  const token = hs256({ sub: 'short-lived', exp });
  assert.equal((await verify(token)).sub, 'short-lived');
  assert.equal((await verify(token)).sub, 'short-lived');
  assert.equal(verify.cacheStats().hits, 1, 'cached while valid');
  await until(exp * 1000 + 20);
  await refused(verify(token), 'AUTH_TOKEN_EXPIRED');
  assert.equal(verify.cacheStats().hits, 1, 'not answered from the cache past exp');
  await refused(verify(token), 'AUTH_TOKEN_EXPIRED');

  // The same for a token from the JWKS.
  const es = fake.keys.find((k) => k.alg === 'ES256')!;
  const jwksExp = nowSeconds() + 2;
  const signed = fake.sign({ sub: 'short-es', exp: jwksExp }, { key: es });
  await verify(signed);
  await verify(signed);
  await until(jwksExp * 1000 + 20);
  await refused(verify(signed), 'AUTH_TOKEN_EXPIRED');
});

test('with the default skew, a token past its exp is verified each time (never answered from the cache), then refused', async () => {
  const verify = createAuthVerifier(settings);
  // Expired 28 s ago: inside the 30 s skew for two more seconds.
  const exp = nowSeconds() - 28;
  const token = hs256({ sub: 'in-grace', exp });
  assert.equal((await verify(token)).sub, 'in-grace');
  assert.equal((await verify(token)).sub, 'in-grace');
  assert.deepEqual(verify.cacheStats(), { hits: 0, misses: 2, entries: 0 }, 'past exp: not cached');
  await until((exp + 30) * 1000 + 50);
  await refused(verify(token), 'AUTH_TOKEN_EXPIRED');
});

test('a token before its nbf is not cached (verified each time until then)', async () => {
  const verify = createAuthVerifier(settings);
  const nbf = nowSeconds() + 2; // within the 30 s skew: accepted, but not yet valid
  const token = hs256({ sub: 'early', nbf });
  await verify(token);
  await verify(token);
  assert.deepEqual(verify.cacheStats(), { hits: 0, misses: 2, entries: 0 });
  await until(nbf * 1000 + 20);
  await verify(token);
  await verify(token);
  assert.equal(verify.cacheStats().hits, 1, 'cached once nbf has passed');
});

test('a bad signature is never accepted through the cache, and refusals are not remembered', async () => {
  const verify = createAuthVerifier(settings);
  const good = hs256({ sub: 'victim' });
  await verify(good);
  await verify(good);
  const [header, payload, signature] = good.split('.') as [string, string, string];
  // The first character of the signature changed (the last one may carry unused bits).
  const flipped = `${header}.${payload}.${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
  const otherPayload = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: 'attacker' })).toString('base64url');
  const forgeries = [
    flipped,
    `${header}.${otherPayload}.${signature}`, // another subject under the victim's signature
    `${header}.${payload}.`, // no signature
    hs256({ sub: 'victim' }, 'another-secret-another-secret-another-secret!'), // signed with another key
  ];
  const entries = verify.cacheStats().entries;
  for (let round = 0; round < 3; round++) {
    for (const token of forgeries) await refused(verify(token), 'AUTH_INVALID_TOKEN');
  }
  assert.equal(verify.cacheStats().entries, entries, 'no refusal entered the cache');
  assert.equal((await verify(good)).sub, 'victim', 'the genuine token still verifies');
});

test('a cached JWKS token stops verifying once its key is gone from the set; an outage keeps it', async () => {
  const verify = createAuthVerifier(settings);
  const key = fake.addKey('ES256');
  await sleep(150); // past the unknown-kid interval
  const token = fake.sign({ sub: 'rotated' }, { key });
  assert.equal((await verify(token)).sub, 'rotated');
  assert.equal((await verify(token)).sub, 'rotated');
  assert.equal(verify.cacheStats().hits, 1);

  // The endpoint down: the last good set stands, and the cached token with it.
  fake.down = true;
  try {
    assert.equal(await jwks.refresh(), false);
    assert.equal((await verify(token)).sub, 'rotated');
  } finally {
    fake.down = false;
  }

  // Retired at the provider, and the set refreshed (every 10 minutes, or now).
  fake.retire(key.kid);
  assert.equal(await jwks.refresh(), true);
  await refused(verify(token), 'AUTH_UNKNOWN_KEY');
  await refused(verify(token), 'AUTH_UNKNOWN_KEY');
});

test('bounded: entries past the maximum are dropped, least recently used first; entries expire at their maximum age', async () => {
  const small = createAuthVerifier({ ...settings, cache: { maxEntries: 3 } });
  const tokens = Array.from({ length: 5 }, (_, i) => hs256({ sub: `bounded-${i}` }));
  for (const token of tokens) await small(token);
  assert.equal(small.cacheStats().entries, 3);
  const before = small.cacheStats();
  await small(tokens[4]!);
  await small(tokens[0]!);
  assert.equal(small.cacheStats().hits, before.hits + 1, 'the newest is kept, the oldest is gone');

  const brief = createAuthVerifier({ ...settings, cache: { maxAgeMs: 50 } });
  const token = hs256({ sub: 'brief' });
  await brief(token);
  await sleep(60);
  await brief(token);
  assert.deepEqual(brief.cacheStats(), { hits: 0, misses: 2, entries: 1 });
});

test('through the api: a token accepted a moment ago in its grace is refused at its end; a forged signature is a 401 every time', async () => {
  const stack = await startStack({ worker: false });
  const documents = (token: string) => fetch(`${stack.apiUrl}/v1/documents`, { headers: { authorization: `Bearer ${token}` } });
  const sign = (claims: Record<string, unknown>) =>
    createSigner({ key: stack.jwt.secret!, algorithm: 'HS256', noTimestamp: true })({
      sub: 'api-user', role: 'authenticated', aud: stack.jwt.audience, ...(stack.jwt.issuer ? { iss: stack.jwt.issuer } : {}), iat: nowSeconds(), ...claims,
    });

  const exp = nowSeconds() - 28;
  const graced = sign({ exp });
  assert.equal((await documents(graced)).status, 200);
  assert.equal((await documents(graced)).status, 200);
  await until((exp + 30) * 1000 + 50);
  const late = await documents(graced);
  assert.equal(late.status, 401);
  assert.equal(((await late.json()) as { error: { code: string } }).error.code, 'AUTH_TOKEN_EXPIRED');

  const good = sign({ exp: nowSeconds() + 600 });
  assert.equal((await documents(good)).status, 200);
  const [header, payload, signature] = good.split('.') as [string, string, string];
  const forged = `${header}.${payload}.${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`;
  for (let i = 0; i < 3; i++) {
    const res = await documents(forged);
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'AUTH_INVALID_TOKEN');
  }
  assert.equal((await documents(good)).status, 200);
});
