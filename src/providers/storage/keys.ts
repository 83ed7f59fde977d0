// Storage key rules shared by every Storage adapter. Keys come from the domain
// (`documents/<id>/original`), but they are still validated strictly and identically everywhere:
// for fs a key is the only path input that reaches the filesystem, and a key one adapter accepts
// must be accepted by every other, so documents move between backends unchanged.
import { InvalidKeyError } from '../types.ts';

/** The fs adapter's temp area (`<root>/.tmp`); reserved in every adapter so keys stay portable. */
export const RESERVED_TMP_SEGMENT = '.tmp';

export const MAX_KEY_LENGTH = 1024;

/**
 * The characters the Supabase storage server accepts in a key (its `isValidKey`): ASCII letters,
 * digits and `_ / ! - . * ' ( ) & $ @ = ; : + , ?` and space. It refuses `#`, `%`, NUL, `\` and
 * anything non-ASCII, so every adapter does.
 */
const KEY_CHARACTERS = /^[\w/!\-.*'() &$@=;:+,?]+$/;

/**
 * Throws InvalidKeyError unless `key` is a relative, normalised, `/`-separated path: non-empty,
 * at most 1024 characters of KEY_CHARACTERS, no leading `/`, no empty, `.` or `..` segment (so no
 * `a//b`, no trailing `/`), and not under the reserved `.tmp` area.
 */
export function assertValidKey(key: string): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) throw new InvalidKeyError(key);
  if (!KEY_CHARACTERS.test(key) || key.startsWith('/')) throw new InvalidKeyError(key);
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
