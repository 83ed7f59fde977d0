// Webhook authentication. Each document's parse run gets its own credential, sent to the
// parser in `webhook_headers` and echoed back on every delivery: an HMAC over the provider, the
// document id and the run, keyed by WEBHOOK_SECRET. It is issued before the provider's job id
// exists (the headers go with the upload that creates the job), so the run binds it; the job id
// in the payload is then checked against the document's current job. LlamaCloud can also sign
// each delivery (`LC-Signature: sha256=<hex HMAC of the raw body>`); that is verified when its
// signing secret is configured. Every comparison is constant-time.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The header that carries the per-document credential (sent as one of the job's webhook_headers). */
export const WEBHOOK_TOKEN_HEADER = 'x-docpipe-webhook-token';

function hmac(secret: string, provider: string, documentId: string, run: number): Buffer {
  return createHmac('sha256', secret).update(`docpipe-webhook\n${provider}\n${documentId.toLowerCase()}\n${run}`).digest();
}

/** `v1.<run>.<base64url HMAC>`: short enough for a URL query under LlamaCloud's 200-char limit. */
export function webhookCredential(secret: string, provider: string, documentId: string, run: number): string {
  return `v1.${run}.${hmac(secret, provider, documentId, run).toString('base64url')}`;
}

/** The run the credential was issued for, or null when it is not a credential of this document. */
export function verifyWebhookCredential(secret: string, provider: string, documentId: string, value: string | undefined): { run: number } | null {
  if (typeof value !== 'string' || value.length > 200) return null;
  const match = /^v1\.([1-9]\d{0,8})\.([A-Za-z0-9_-]{43})$/.exec(value);
  if (!match) return null;
  const run = Number(match[1]);
  const given = Buffer.from(match[2]!, 'base64url');
  const expected = hmac(secret, provider, documentId, run);
  return given.length === expected.length && timingSafeEqual(given, expected) ? { run } : null;
}

/** Verifies `LC-Signature: sha256=<hex>` over the raw request body. */
export function verifyLcSignature(secret: string, rawBody: Buffer, header: string | undefined): boolean {
  if (typeof header !== 'string') return false;
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (!match) return false;
  const given = Buffer.from(match[1]!, 'hex');
  const expected = createHmac('sha256', secret).update(rawBody).digest();
  return timingSafeEqual(given, expected);
}

/** What a sender computes: used by tests and the fake. */
export function lcSignature(secret: string, rawBody: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(rawBody).digest('hex')}`;
}
