// The JWKS key cache and the verifier against a Supabase-shaped JWKS endpoint over real HTTP:
// ES256 and RS256 by kid beside HS256; rotation; an unknown kid refetches at most once per
// interval; an outage keeps the cached set; and every forgery is refused with a stable code.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSigner } from 'fast-jwt';
import { createJwksCache, parseJwks } from '../../src/security/jwks.ts';
import { AuthError, createAuthVerifier, MAX_TOKEN_BYTES } from '../../src/security/tokens.ts';
import { startFakeJwks } from '../fakes/jwks.ts';

const SECRET = 'jwks-test-hs256-secret-jwks-test-hs256-secret';
const fake = await startFakeJwks();
const quiet = { warn: () => {}, info: () => {} };
const cache = createJwksCache({ url: fake.url, logger: quiet, unknownKidIntervalMs: 300 });
after(async () => {
  cache.close();
  await fake.close();
});
const verify = createAuthVerifier({ secret: SECRET, audience: 'authenticated', issuer: fake.issuer, jwks: cache });
const hs256 = (claims: Record<string, unknown>, options: { aud?: string | null; iss?: string | null; key?: string } = {}) =>
  createSigner({ key: options.key ?? SECRET, algorithm: 'HS256', expiresIn: 600_000 })({
    sub: 'user-h',
    role: 'authenticated',
    ...(options.aud === null ? {} : { aud: options.aud ?? 'authenticated' }),
    ...(options.iss === null ? {} : { iss: options.iss ?? fake.issuer }),
    ...claims,
  });

async function refused(token: string, code: string): Promise<void> {
  await assert.rejects(verify(token), (err: unknown) => err instanceof AuthError && err.code === code, `expected ${code}`);
}

test('ES256 and RS256 tokens verify by kid; HS256 keeps working beside them', async () => {
  const [es, rs] = fake.keys;
  assert.equal((await verify(fake.sign({ sub: 'user-e' }, { key: es }))).sub, 'user-e');
  assert.equal((await verify(fake.sign({ sub: 'user-r' }, { key: rs }))).sub, 'user-r');
  assert.equal((await verify(hs256({}))).sub, 'user-h');
  assert.equal(cache.state().keys, 2);
});

test('rotation: a new key is fetched on its first token; a retired one stops verifying after a refresh', async () => {
  const old = fake.keys[0]!;
  const fresh = fake.addKey('ES256');
  await sleep(350); // past the unknown-kid interval
  const before = fake.fetches;
  assert.equal((await verify(fake.sign({ sub: 'user-n' }, { key: fresh }))).sub, 'user-n');
  assert.equal(fake.fetches, before + 1, 'one fetch for the new kid');
  fake.retire(old.kid);
  assert.equal(await cache.refresh(), true);
  await refused(fake.sign({ sub: 'user-o' }, { key: old }), 'AUTH_UNKNOWN_KEY');
});

test('invented kids: refused, and the set is fetched at most once per interval', async () => {
  await sleep(350);
  const before = fake.fetches;
  const key = fake.keys[0]!;
  const tokens = Array.from({ length: 200 }, () => fake.sign({ sub: 'x' }, { key, kid: randomUUID() }));
  for (const token of tokens) await refused(token, 'AUTH_UNKNOWN_KEY');
  assert.equal(fake.fetches - before, 1, `fetches for 200 unknown kids: ${fake.fetches - before}`);
});

test('the endpoint down: cached keys keep verifying, a failed refresh keeps the set', async () => {
  fake.down = true;
  try {
    assert.equal(await cache.refresh(), false);
    assert.ok(cache.state().keys >= 2);
    assert.equal((await verify(fake.sign({ sub: 'user-d' }))).sub, 'user-d');
  } finally {
    fake.down = false;
  }
});

test('forgeries and bad claims: each a 401 code, never a principal', async () => {
  const rsa = fake.keys.find((k) => k.alg === 'RS256')!;
  const es = fake.keys.find((k) => k.alg === 'ES256')!;
  // alg:none, with and without a kid.
  const none = (header: object) => `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'x', aud: 'authenticated', iss: fake.issuer, exp: 9e9 })).toString('base64url')}.`;
  await refused(none({ alg: 'none', typ: 'JWT' }), 'AUTH_INVALID_TOKEN');
  await refused(none({ alg: 'none', kid: es.kid }), 'AUTH_INVALID_TOKEN');
  // Algorithm confusion: HS256 "signed" with the RSA public key, under its kid.
  const publicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const confused = createSigner({ key: publicPem, algorithm: 'HS256', kid: rsa.kid, expiresIn: 600_000 })({ sub: 'x', aud: 'authenticated', iss: fake.issuer, role: 'authenticated' });
  await refused(confused, 'AUTH_INVALID_TOKEN');
  // A header that names ES256 over the RSA key's kid.
  const [, payload, signature] = fake.sign({ sub: 'x' }, { key: rsa }).split('.');
  await refused(`${Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid: rsa.kid })).toString('base64url')}.${payload}.${signature}`, 'AUTH_INVALID_TOKEN');
  // No kid on an asymmetric token.
  await refused(fake.sign({ sub: 'x' }, { key: es, kid: null }), 'AUTH_INVALID_TOKEN');
  // Expired, not yet valid (past the 30 s tolerance), and within the tolerance.
  await refused(fake.sign({ sub: 'x' }, { expiresInSeconds: -60 }), 'AUTH_TOKEN_EXPIRED');
  await refused(fake.sign({ sub: 'x' }, { notBeforeSeconds: 120 }), 'AUTH_TOKEN_NOT_YET_VALID');
  assert.equal((await verify(fake.sign({ sub: 'skewed' }, { notBeforeSeconds: 20 }))).sub, 'skewed');
  // aud and iss: required, and must match.
  await refused(hs256({}, { aud: null }), 'AUTH_INVALID_TOKEN');
  await refused(hs256({}, { aud: 'anon' }), 'AUTH_INVALID_TOKEN');
  await refused(hs256({}, { iss: null }), 'AUTH_INVALID_TOKEN');
  await refused(hs256({}, { iss: 'https://evil.example/auth/v1' }), 'AUTH_INVALID_TOKEN');
  await refused(fake.sign({ sub: 'x', aud: 'other' }), 'AUTH_INVALID_TOKEN');
  // sub missing or empty; another secret.
  await refused(hs256({ sub: undefined }), 'AUTH_INVALID_TOKEN');
  await refused(fake.sign({ sub: '' }), 'AUTH_INVALID_TOKEN');
  await refused(hs256({}, { key: 'another-secret-another-secret-another-secret!' }), 'AUTH_INVALID_TOKEN');
  // Too large: refused before parsing (not valid base64 JSON at all).
  await refused('x'.repeat(MAX_TOKEN_BYTES + 1), 'AUTH_TOKEN_TOO_LARGE');
  await refused(fake.sign({ sub: 'x', padding: 'p'.repeat(MAX_TOKEN_BYTES) }), 'AUTH_TOKEN_TOO_LARGE');
});

test('without a secret, HS256 is refused; without a JWKS, ES256 is', async () => {
  const jwksOnly = createAuthVerifier({ secret: undefined, audience: 'authenticated', issuer: fake.issuer, jwks: cache });
  await assert.rejects(jwksOnly(hs256({})), (err: unknown) => err instanceof AuthError && /no JWT_SECRET/.test(err.message));
  const secretOnly = createAuthVerifier({ secret: SECRET, audience: 'authenticated', issuer: fake.issuer, jwks: null });
  await assert.rejects(secretOnly(fake.sign({ sub: 'x' })), (err: unknown) => err instanceof AuthError && /no JWT_JWKS_URL/.test(err.message));
});

test('parseJwks keeps verification keys only, and never a private part', () => {
  const es = fake.keys.find((k) => k.alg === 'ES256')!;
  const priv = es.privateKey.export({ format: 'jwk' });
  const parsed = parseJwks({
    keys: [
      { ...priv, kid: 'with-private-part', alg: 'ES256' },
      { ...es.publicKey.export({ format: 'jwk' }), kid: 'enc', use: 'enc' },
      { ...es.publicKey.export({ format: 'jwk' }), kid: 'sign-only', key_ops: ['sign'] },
      { ...es.publicKey.export({ format: 'jwk' }), kid: 'wrong-alg', alg: 'RS256' },
      { kty: 'oct', k: 'c2VjcmV0', kid: 'symmetric' },
      { ...es.publicKey.export({ format: 'jwk' }) },
    ],
  });
  assert.deepEqual(parsed.map((k) => k.kid), ['with-private-part']);
  assert.match(parsed[0]!.pem, /^-----BEGIN PUBLIC KEY-----/);
  assert.throws(() => parseJwks({ nokeys: [] }), /no "keys" array/);
});
