// Signed upload tokens for the fs adapter's `PUT /v1/storage/upload?token=...` route: the token is
// the whole credential (no JWT), so it binds the key, the size limit, the content type and the
// expiry. Format: base64url(JSON claims) + '.' + base64url(HMAC-SHA256(signingKey, first part)).
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface UploadTokenClaims {
  key: string;
  maxBytes: number;
  contentType: string;
  expiresAt: Date;
}

export type UploadTokenErrorCode = 'UPLOAD_TOKEN_INVALID' | 'UPLOAD_TOKEN_EXPIRED';

export class UploadTokenError extends Error {
  constructor(
    readonly code: UploadTokenErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'UploadTokenError';
  }
}

export interface UploadTokens {
  sign(claims: UploadTokenClaims): string;
  /** The claims of a well-formed, correctly signed, unexpired token; UploadTokenError otherwise. */
  verify(token: string, now?: Date): UploadTokenClaims;
}

/** The signed payload; short names keep URLs short. `v` versions the format. */
interface Payload {
  v: 1;
  k: string;
  m: number;
  c: string;
  e: number;
}

const MAX_TOKEN_LENGTH = 8192;

export function createUploadTokens(signingKey: string | Buffer): UploadTokens {
  const secret = typeof signingKey === 'string' ? Buffer.from(signingKey, 'utf8') : Buffer.from(signingKey);
  if (secret.length < 16) throw new Error('the upload token signing key must be at least 16 bytes');

  const mac = (data: string) => createHmac('sha256', secret).update(data).digest();
  const invalid = (why: string) => new UploadTokenError('UPLOAD_TOKEN_INVALID', `invalid upload token: ${why}`);

  return {
    sign(claims: UploadTokenClaims): string {
      const expires = claims.expiresAt.getTime();
      if (!Number.isFinite(expires)) throw new TypeError('expiresAt must be a valid date');
      if (!Number.isSafeInteger(claims.maxBytes) || claims.maxBytes < 0) throw new TypeError('maxBytes must be a non-negative integer');
      const payload: Payload = { v: 1, k: claims.key, m: claims.maxBytes, c: claims.contentType, e: expires };
      const body = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
      return `${body}.${mac(body).toString('base64url')}`;
    },

    verify(token: string, now: Date = new Date()): UploadTokenClaims {
      if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw invalid('missing or malformed');
      const parts = token.split('.');
      if (parts.length !== 2 || !/^[\w-]+$/.test(parts[0]!) || !/^[\w-]+$/.test(parts[1]!)) throw invalid('malformed');
      const [body, signature] = parts as [string, string];
      const expected = mac(body);
      const given = Buffer.from(signature, 'base64url');
      // Length first: timingSafeEqual throws on unequal lengths, and the length is not secret.
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid('bad signature');
      let payload: Payload;
      try {
        payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Payload;
      } catch {
        throw invalid('malformed claims');
      }
      if (
        payload === null ||
        typeof payload !== 'object' ||
        payload.v !== 1 ||
        typeof payload.k !== 'string' ||
        typeof payload.c !== 'string' ||
        !Number.isSafeInteger(payload.m) ||
        payload.m < 0 ||
        !Number.isFinite(payload.e)
      ) {
        throw invalid('malformed claims');
      }
      if (now.getTime() >= payload.e) throw new UploadTokenError('UPLOAD_TOKEN_EXPIRED', 'the upload token has expired');
      return { key: payload.k, maxBytes: payload.m, contentType: payload.c, expiresAt: new Date(payload.e) };
    },
  };
}
