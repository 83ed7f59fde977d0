// JWT verification and (for development and tests only) signing. Supabase projects sign user
// tokens with asymmetric keys published as a JWKS (ES256, or RS256), or, legacy projects, with
// one HS256 secret; docpipe takes either or both. The algorithm follows from where the key comes
// from, never from the token alone: HS256 only with the configured secret, ES256/RS256 only with
// a key of that type from the JWKS, found by `kid`. So `alg: none`, a switched algorithm, or an
// HS256 token "signed" with a public key never verifies.
//
// The API's verifier remembers the tokens it has verified (by a hash of the exact token), so a
// client polling with the same token pays for one verification a minute, not one per request. A
// remembered token is accepted only between its nbf and its exp, for at most a minute after it
// was verified, and, when a JWKS key verified it, only while that key is still in the set: the
// cache never accepts a token that a verification now would refuse for its times or its key.
// Refusals are not remembered here.
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createDecoder, createSigner, createVerifier, TokenError } from 'fast-jwt';
import { textProblem } from '../db/text.ts';
import type { JwksCache } from './jwks.ts';

export interface JwtSettings {
  /** The legacy HS256 secret (JWT_SECRET); also the key of fs signed-upload URLs when set. */
  secret: string | undefined;
  audience: string;
  issuer: string | undefined;
}

export interface Principal {
  sub: string;
  role: string | null;
  email: string | null;
}

export type AuthFailure =
  | 'AUTH_MISSING_TOKEN'
  | 'AUTH_INVALID_TOKEN'
  | 'AUTH_TOKEN_EXPIRED'
  | 'AUTH_TOKEN_NOT_YET_VALID'
  | 'AUTH_TOKEN_TOO_LARGE'
  | 'AUTH_UNKNOWN_KEY';

export class AuthError extends Error {
  constructor(
    readonly code: AuthFailure,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

/** Tokens longer than this are refused before any parsing (Supabase's are about 1 KB). */
export const MAX_TOKEN_BYTES = 8 * 1024;
/** Clock skew tolerated on exp and nbf. */
export const CLOCK_TOLERANCE_MS = 30_000;
/**
 * A verified token is remembered this long at most (and never past its exp). Short, so that the
 * cache holds the tokens in use now, not every token seen in an hour.
 */
export const TOKEN_CACHE_MAX_AGE_MS = 60_000;
/**
 * Verified tokens remembered at most, least recently used out first: one per user active in the
 * last minute on this machine. An entry (a 44-character hash and the principal) is under 1 KB
 * in memory (measured): 8 MB at most. Only valid tokens get in, so forged ones cannot fill it.
 */
export const TOKEN_CACHE_MAX_ENTRIES = 10_000;

type Verify = (token: string) => Record<string, unknown>;

function verifierFor(key: string, algorithm: 'HS256' | 'ES256' | 'RS256', settings: Pick<JwtSettings, 'audience' | 'issuer'>, clockToleranceMs = CLOCK_TOLERANCE_MS): Verify {
  return createVerifier({
    key,
    algorithms: [algorithm],
    allowedAud: settings.audience,
    ...(settings.issuer ? { allowedIss: settings.issuer } : {}),
    // aud is required, not only checked when present: a token minted for no audience is not ours.
    requiredClaims: ['sub', 'exp', 'aud', ...(settings.issuer ? ['iss'] : [])],
    clockTolerance: clockToleranceMs,
    cache: 1000,
  }) as Verify;
}

function authErrorOf(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof TokenError && err.code === TokenError.codes.expired) return new AuthError('AUTH_TOKEN_EXPIRED', 'the token has expired');
  if (err instanceof TokenError && err.code === TokenError.codes.inactive) return new AuthError('AUTH_TOKEN_NOT_YET_VALID', 'the token is not valid yet (nbf)');
  return new AuthError('AUTH_INVALID_TOKEN', 'the token is invalid');
}

/** The principal of verified claims; refuses a sub, role or email that could not be stored. */
function principalOf(claims: Record<string, unknown>): Principal {
  if (typeof claims.sub !== 'string' || claims.sub.length === 0 || claims.sub.length > 255) {
    throw new AuthError('AUTH_INVALID_TOKEN', 'the token has no usable sub claim');
  }
  const principal: Principal = {
    sub: claims.sub,
    role: typeof claims.role === 'string' ? claims.role : null,
    email: typeof claims.email === 'string' ? claims.email : null,
  };
  // Every principal string may end up in SQL or an event's jsonb (sub does: owner_id, actor),
  // where a NUL or an unpaired surrogate would fail the statement with a 500.
  for (const [claim, value] of Object.entries(principal)) {
    if (typeof value === 'string' && textProblem(value) !== null) {
      throw new AuthError('AUTH_INVALID_TOKEN', `the token's ${claim} claim is not valid text (a NUL character or an unpaired surrogate)`);
    }
  }
  return principal;
}

/** Verifies signature and claims; every failure an AuthError. */
function verifiedClaims(verify: Verify, token: string): Record<string, unknown> {
  try {
    return verify(token);
  } catch (err) {
    throw authErrorOf(err);
  }
}

/** Verifies signature and claims, then reads the principal; every failure an AuthError. */
function verifiedPrincipal(verify: Verify, token: string): Principal {
  return principalOf(verifiedClaims(verify, token));
}

function assertSize(token: string): void {
  if (token.length > MAX_TOKEN_BYTES) throw new AuthError('AUTH_TOKEN_TOO_LARGE', `the token is over ${MAX_TOKEN_BYTES} bytes`);
}

/** HS256 only, synchronous: the development default, tests and tools. */
export function createTokenVerifier(settings: JwtSettings): (token: string) => Principal {
  if (!settings.secret) throw new Error('createTokenVerifier needs the HS256 secret');
  const verify = verifierFor(settings.secret, 'HS256', settings);
  return (token) => {
    assertSize(token);
    return verifiedPrincipal(verify, token);
  };
}

export interface TokenCacheOptions {
  maxEntries?: number;
  maxAgeMs?: number;
}

export interface AuthVerifier {
  (token: string): Promise<Principal>;
  /** The token cache's counts: hits (answered without verifying), misses, entries now. */
  cacheStats(): { hits: number; misses: number; entries: number };
}

/** A verified token as remembered: its principal, when it may be used, and the JWKS key that verified it. */
interface Verified {
  principal: Principal;
  /** Date.now() bounds: nbf (0 without one), and the earlier of exp and the entry's maximum age. */
  notBefore: number;
  expiresAt: number;
  key: { kid: string; pem: string } | null;
}

/**
 * The API's verifier: HS256 with the secret, ES256/RS256 with the JWKS, whichever is configured
 * (both may be), with the cache of verified tokens (the header comment; `cache: false` turns it
 * off). Throws AuthError with a stable code. `clockToleranceMs` is for tests of expiry.
 */
export function createAuthVerifier(settings: JwtSettings & { jwks: JwksCache | null; cache?: TokenCacheOptions | false; clockToleranceMs?: number }): AuthVerifier {
  if (!settings.secret && !settings.jwks) throw new Error('no JWT secret and no JWKS: nothing to verify tokens with');
  const tolerance = settings.clockToleranceMs ?? CLOCK_TOLERANCE_MS;
  const hs256 = settings.secret ? verifierFor(settings.secret, 'HS256', settings, tolerance) : null;
  const decodeHeader = createDecoder({ complete: true, checkTyp: undefined });
  const byKid = new Map<string, { pem: string; verify: Verify }>();
  const cache = settings.cache === false ? null : { maxEntries: TOKEN_CACHE_MAX_ENTRIES, maxAgeMs: TOKEN_CACHE_MAX_AGE_MS, ...settings.cache };
  const verified = new Map<string, Verified>();
  const stats = { hits: 0, misses: 0 };

  /** The remembered principal of `hash`, if it may be used now. */
  const remembered = (hash: string): Principal | null => {
    const entry = verified.get(hash);
    if (!entry) return null;
    const now = Date.now();
    // The key check is what keeps JWKS rotation as docs/SECURITY.md says: a key gone from the
    // set (or replaced under its kid) at the last refresh verifies nothing more, cached or not.
    if (now < entry.notBefore || now >= entry.expiresAt || (entry.key && settings.jwks?.peek(entry.key.kid)?.pem !== entry.key.pem)) {
      verified.delete(hash);
      return null;
    }
    // Most recently used last: Map keeps insertion order, so the first key is the one to evict.
    verified.delete(hash);
    verified.set(hash, entry);
    return entry.principal;
  };
  const remember = (hash: string, principal: Principal, claims: Record<string, unknown>, key: Verified['key']): void => {
    const now = Date.now();
    // Strictly inside [nbf, exp], without the skew a verification tolerates: past exp (or before
    // nbf) a token is verified each time, as without the cache.
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp)) return;
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || !Number.isFinite(claims.nbf))) return;
    const expiresAt = Math.min(now + cache!.maxAgeMs, claims.exp * 1000);
    const notBefore = typeof claims.nbf === 'number' ? claims.nbf * 1000 : 0;
    if (expiresAt <= now || notBefore > now) return;
    verified.set(hash, { principal: Object.freeze(principal), notBefore, expiresAt, key });
    while (verified.size > cache!.maxEntries) verified.delete(verified.keys().next().value!);
  };

  const verifyToken = async (token: string): Promise<Principal> => {
    assertSize(token);
    const hash = cache ? createHash('sha256').update(token).digest('base64') : '';
    if (cache) {
      const principal = remembered(hash);
      if (principal) {
        stats.hits++;
        return principal;
      }
      stats.misses++;
    }
    let header: { alg?: unknown; kid?: unknown };
    try {
      header = (decodeHeader(token) as { header: { alg?: unknown; kid?: unknown } }).header;
    } catch {
      throw new AuthError('AUTH_INVALID_TOKEN', 'the token is invalid');
    }
    let verify: Verify;
    let verifiedBy: Verified['key'] = null;
    if (header.alg === 'HS256') {
      if (!hs256) throw new AuthError('AUTH_INVALID_TOKEN', 'HS256 tokens are not accepted here (no JWT_SECRET)');
      verify = hs256;
    } else if (header.alg === 'ES256' || header.alg === 'RS256') {
      if (!settings.jwks) throw new AuthError('AUTH_INVALID_TOKEN', `${header.alg} tokens are not accepted here (no JWT_JWKS_URL)`);
      if (typeof header.kid !== 'string' || header.kid === '' || header.kid.length > 200) throw new AuthError('AUTH_INVALID_TOKEN', 'the token has no usable kid');
      const key = await settings.jwks.key(header.kid);
      if (!key) throw new AuthError('AUTH_UNKNOWN_KEY', 'the token was signed with a key the JWKS does not hold');
      if (key.alg !== header.alg) throw new AuthError('AUTH_INVALID_TOKEN', 'the token\'s algorithm does not match its key');
      let cached = byKid.get(key.kid);
      if (!cached || cached.pem !== key.pem) {
        cached = { pem: key.pem, verify: verifierFor(key.pem, key.alg, settings, tolerance) };
        byKid.set(key.kid, cached);
      }
      verify = cached.verify;
      verifiedBy = { kid: key.kid, pem: key.pem };
    } else {
      throw new AuthError('AUTH_INVALID_TOKEN', 'the token\'s algorithm is not accepted');
    }
    const claims = verifiedClaims(verify, token);
    const principal = principalOf(claims);
    if (cache) remember(hash, principal, claims, verifiedBy);
    return principal;
  };
  return Object.assign(verifyToken, { cacheStats: () => ({ ...stats, entries: verified.size }) });
}

/** Signs a Supabase-shaped user token. For the development default and tests, not production. */
export function signUserToken(settings: JwtSettings, sub: string, options: { expiresInSeconds?: number; claims?: Record<string, unknown> } = {}): string {
  if (!settings.secret) throw new Error('signUserToken needs the HS256 secret');
  const sign = createSigner({
    key: settings.secret,
    algorithm: 'HS256',
    expiresIn: (options.expiresInSeconds ?? 3600) * 1000,
    aud: settings.audience,
    ...(settings.issuer ? { iss: settings.issuer } : {}),
  });
  return sign({ sub, role: 'authenticated', ...options.claims });
}

/** `docpipe token [sub] [--ttl 24h]`: the subject and the lifetime (m, h or d; at most 400 days). */
export function parseTokenArgs(args: string[], defaultSub: string): { sub: string; ttlSeconds: number } {
  const { values, positionals } = parseArgs({ args, strict: true, allowPositionals: true, options: { ttl: { type: 'string' } } });
  if (positionals.length > 1) throw new Error(`one subject at most, got ${positionals.length}`);
  const ttl = values.ttl ?? '24h';
  const match = /^([1-9][0-9]*)([mhd])$/.exec(ttl);
  if (!match) throw new Error(`--ttl ${JSON.stringify(ttl)}: expected a number and a unit, m, h or d (e.g. 30m, 24h, 365d)`);
  const ttlSeconds = Number(match[1]) * { m: 60, h: 3600, d: 86_400 }[match[2] as 'm' | 'h' | 'd'];
  if (ttlSeconds > 400 * 86_400) throw new Error(`--ttl ${ttl} is over 400 days`);
  return { sub: positionals[0] ?? defaultSub, ttlSeconds };
}
