// The public keys of a JWKS endpoint (Supabase: https://<ref>.supabase.co/auth/v1/.well-known/jwks.json),
// for ES256 and RS256 user tokens, by `kid`.
//
// What a key cache in front of an identity provider must do, and get-jwks (a per-kid LRU) does
// not: an unknown `kid` refetches the set at most once per `unknownKidIntervalMs` (a flood of
// invented kids costs one fetch per 30 s, not one per request); the set is refreshed in the
// background every `refreshMs` so that a key removed at the provider stops verifying; and a
// failed fetch keeps the last good set, so an outage of the endpoint rejects no valid token.
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { Logger } from '../observability/logger.ts';

export type JwksAlgorithm = 'ES256' | 'RS256';

export interface JwksKey {
  kid: string;
  alg: JwksAlgorithm;
  /** SPKI PEM, as fast-jwt takes a public key. */
  pem: string;
}

export interface JwksOptions {
  url: string;
  logger: Pick<Logger, 'warn' | 'info'>;
  /** Least time between two fetches caused by unknown kids. */
  unknownKidIntervalMs?: number;
  /** Background refresh of the whole set (Supabase caches its own for about 20 minutes). */
  refreshMs?: number;
  timeoutMs?: number;
}

export interface JwksCache {
  /** The key for `kid`, fetching the set again if it is unknown and the last fetch is old enough. */
  key(kid: string): Promise<JwksKey | null>;
  /** The key for `kid` in the set as it is now, without fetching (the token cache's check that a key is still published). */
  peek(kid: string): JwksKey | null;
  /** Fetches the set now; resolves false (keeping the old set) when the endpoint fails. */
  refresh(): Promise<boolean>;
  /** How many keys are cached, and when the set was last fetched successfully. */
  state(): { keys: number; fetchedAt: number | null };
  close(): void;
}

/** The algorithm a JWK is for: its `alg` if it says one, else its key type. Null: not a verification key we take. */
function algorithmOf(jwk: JsonWebKey & { alg?: string; use?: string; key_ops?: string[] }): JwksAlgorithm | null {
  if (jwk.use !== undefined && jwk.use !== 'sig') return null;
  if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) return null;
  const byType: JwksAlgorithm | null = jwk.kty === 'EC' && jwk.crv === 'P-256' ? 'ES256' : jwk.kty === 'RSA' ? 'RS256' : null;
  if (byType === null) return null;
  if (jwk.alg !== undefined && jwk.alg !== byType) return null;
  return byType;
}

export function parseJwks(body: unknown): JwksKey[] {
  const keys = (body as { keys?: unknown })?.keys;
  if (!Array.isArray(keys)) throw new Error('the response has no "keys" array');
  const parsed: JwksKey[] = [];
  for (const jwk of keys as (JsonWebKey & { kid?: unknown; alg?: string; use?: string; key_ops?: string[] })[]) {
    if (typeof jwk?.kid !== 'string' || jwk.kid === '') continue;
    const alg = algorithmOf(jwk);
    if (alg === null) continue;
    let key: KeyObject;
    try {
      // Only the public members: a JWK that carries a private part must not become a private key.
      const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
      key = createPublicKey({ key: pub, format: 'jwk' });
    } catch {
      continue;
    }
    parsed.push({ kid: jwk.kid, alg, pem: key.export({ type: 'spki', format: 'pem' }).toString() });
  }
  return parsed;
}

export function createJwksCache(options: JwksOptions): JwksCache {
  const unknownKidIntervalMs = options.unknownKidIntervalMs ?? 30_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  let keys = new Map<string, JwksKey>();
  let fetchedAt: number | null = null;
  let lastAttempt = -Infinity;
  let inflight: Promise<boolean> | null = null;

  const fetchOnce = async (): Promise<boolean> => {
    lastAttempt = Date.now();
    try {
      const res = await fetch(options.url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const parsed = parseJwks(await res.json());
      if (parsed.length === 0) throw new Error('no ES256 or RS256 verification key in the set');
      const next = new Map(parsed.map((k) => [k.kid, k]));
      const added = parsed.filter((k) => !keys.has(k.kid)).map((k) => k.kid);
      const removed = [...keys.keys()].filter((kid) => !next.has(kid));
      if (added.length || removed.length) options.logger.info({ jwks: options.url, added, removed }, 'JWKS keys changed');
      keys = next;
      fetchedAt = Date.now();
      return true;
    } catch (err) {
      options.logger.warn({ jwks: options.url, reason: (err as Error).message, cachedKeys: keys.size }, 'JWKS fetch failed; verifying with the keys cached before');
      return false;
    }
  };
  const refresh = () => (inflight ??= fetchOnce().finally(() => (inflight = null)));

  const timer = setInterval(() => void refresh(), options.refreshMs ?? 10 * 60_000);
  timer.unref();

  return {
    async key(kid) {
      const known = keys.get(kid);
      if (known) return known;
      if (inflight) await inflight;
      else if (Date.now() - lastAttempt >= unknownKidIntervalMs) await refresh();
      return keys.get(kid) ?? null;
    },
    peek: (kid) => keys.get(kid) ?? null,
    refresh,
    state: () => ({ keys: keys.size, fetchedAt }),
    close: () => clearInterval(timer),
  };
}
