// Storage key rules shared by every Storage adapter. Keys come from the domain
// (`documents/<id>/original`), but they are still validated strictly and identically everywhere:
// for fs a key is the only path input that reaches the filesystem, and a key one adapter accepts
// must be accepted by every other, so documents move between backends unchanged.
import { InvalidKeyError } from '../types.ts';

/** The fs adapter's temp area (`<root>/.tmp`); reserved in every adapter so keys stay portable. */
export const RESERVED_TMP_SEGMENT = '.tmp';

export const MAX_KEY_LENGTH = 1024;

/**
 * Throws InvalidKeyError unless `key` is a relative, normalised, `/`-separated path: non-empty,
 * at most 1024 characters, no NUL or backslash, no leading `/`, no empty, `.` or `..` segment
 * (so no `a//b`, no trailing `/`), and not under the reserved `.tmp` area.
 */
export function assertValidKey(key: string): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) throw new InvalidKeyError(key);
  if (key.includes('\0') || key.includes('\\') || key.startsWith('/')) throw new InvalidKeyError(key);
  const segments = key.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) throw new InvalidKeyError(key);
  // The temp area must stay unreachable by key, or deletePrefix('.tmp') could pull files out from
  // under in-flight fs uploads.
  if (segments[0] === RESERVED_TMP_SEGMENT) throw new InvalidKeyError(key);
  return key;
}

/** A deletePrefix argument: a key, optionally with one trailing `/` (whole segments only). */
export function normalizePrefix(prefix: string): string {
  const key = typeof prefix === 'string' && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  return assertValidKey(key);
}
