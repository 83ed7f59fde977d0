// A Supabase Auth JWKS endpoint (GET /auth/v1/.well-known/jwks.json), over real HTTP: ES256
// (P-256, what Supabase recommends) and RS256 keys with `kid`, `alg`, `use` and
// `key_ops: ["verify"]` as Supabase publishes them; rotation (add, retire), an outage switch,
// and a count of fetches. It signs tokens with its private keys as Supabase Auth would.
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSigner } from 'fast-jwt';

export interface FakeKey {
  kid: string;
  alg: 'ES256' | 'RS256';
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export interface FakeJwks {
  /** The JWKS URL (JWT_JWKS_URL). */
  url: string;
  /** The issuer of its tokens: https://<ref>.supabase.co/auth/v1 in Supabase. */
  issuer: string;
  keys: FakeKey[];
  /** Number of GETs of the key set answered (or refused, while down). */
  fetches: number;
  /** While true, the endpoint answers 503. */
  down: boolean;
  /** A new key, published from now on. */
  addKey(alg: 'ES256' | 'RS256'): FakeKey;
  /** Stops publishing a key. */
  retire(kid: string): void;
  /** A token signed with `key` (default: the first), Supabase's claims unless overridden. */
  sign(claims: Record<string, unknown>, options?: { key?: FakeKey; kid?: string | null; expiresInSeconds?: number; notBeforeSeconds?: number }): string;
  close(): Promise<void>;
}

function makeKey(alg: 'ES256' | 'RS256'): FakeKey {
  const pair = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid: randomUUID(), alg, ...pair };
}

export async function startFakeJwks(options: { audience?: string } = {}): Promise<FakeJwks> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/auth/v1/.well-known/jwks.json') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"not found"}');
      return;
    }
    fake.fetches++;
    if (fake.down) {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"message":"service unavailable"}');
      return;
    }
    const keys = fake.keys.map((k) => ({ ...k.publicKey.export({ format: 'jwk' }), kid: k.kid, alg: k.alg, use: 'sig', key_ops: ['verify'], ext: true }));
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'public, max-age=600' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer = `${base}/auth/v1`;
  const audience = options.audience ?? 'authenticated';
  const fake: FakeJwks = {
    url: `${issuer}/.well-known/jwks.json`,
    issuer,
    keys: [makeKey('ES256'), makeKey('RS256')],
    fetches: 0,
    down: false,
    addKey(alg) {
      const key = makeKey(alg);
      fake.keys.push(key);
      return key;
    },
    retire(kid) {
      fake.keys = fake.keys.filter((k) => k.kid !== kid);
    },
    sign(claims, signOptions = {}) {
      const key = signOptions.key ?? fake.keys[0]!;
      const kid = signOptions.kid === undefined ? key.kid : signOptions.kid;
      const now = Math.floor(Date.now() / 1000);
      const sign = createSigner({
        key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        algorithm: key.alg,
        ...(kid !== null ? { kid } : {}),
        noTimestamp: true,
      });
      return sign({
        aud: audience,
        iss: issuer,
        iat: now,
        exp: now + (signOptions.expiresInSeconds ?? 3600),
        ...(signOptions.notBeforeSeconds !== undefined ? { nbf: now + signOptions.notBeforeSeconds } : {}),
        role: 'authenticated',
        session_id: randomUUID(),
        is_anonymous: false,
        ...claims,
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  return fake;
}
