// JWT verification and (for development and tests only) signing. Supabase's legacy projects
// sign user tokens with one HS256 secret; the algorithm list is fixed, so `alg: none` or a
// switched algorithm never verifies. JWKS (ES256/RS256) arrives in a later issue.
import { parseArgs } from 'node:util';
import { createSigner, createVerifier, TokenError } from 'fast-jwt';
import { textProblem } from '../db/text.ts';

export interface JwtSettings {
  secret: string;
  audience: string;
  issuer: string | undefined;
}

export interface Principal {
  sub: string;
  role: string | null;
  email: string | null;
}

export type AuthFailure = 'AUTH_MISSING_TOKEN' | 'AUTH_INVALID_TOKEN' | 'AUTH_TOKEN_EXPIRED';

export class AuthError extends Error {
  constructor(
    readonly code: AuthFailure,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

export function createTokenVerifier(settings: JwtSettings): (token: string) => Principal {
  const verify = createVerifier({
    key: settings.secret,
    algorithms: ['HS256'],
    allowedAud: settings.audience,
    ...(settings.issuer ? { allowedIss: settings.issuer } : {}),
    requiredClaims: ['sub', 'exp'],
    clockTolerance: 5_000,
    cache: 1000,
  });
  return (token) => {
    let claims: Record<string, unknown>;
    try {
      claims = verify(token) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof TokenError && err.code === TokenError.codes.expired) {
        throw new AuthError('AUTH_TOKEN_EXPIRED', 'the token has expired');
      }
      throw new AuthError('AUTH_INVALID_TOKEN', 'the token is invalid');
    }
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
  };
}

/** Signs a Supabase-shaped user token. For the development default and tests, not production. */
export function signUserToken(settings: JwtSettings, sub: string, options: { expiresInSeconds?: number; claims?: Record<string, unknown> } = {}): string {
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
