// Client text on its way to Postgres. Postgres `text` cannot hold U+0000 and `jsonb` refuses
// the \u0000 escape and unpaired UTF-16 surrogates, so such a string would fail its INSERT
// with a 500. Strings we store as given are refused up front (400 INVALID_TEXT, naming the
// field); file names, which are display names only, are cleaned instead.
import { textProblem } from '../db/text.ts';
import { HttpError } from './errors.ts';

export { textProblem };

/** 400 INVALID_TEXT, naming `field`, when `value` is a string Postgres cannot store; otherwise null. */
export function invalidText(field: string, value: unknown): HttpError | null {
  const problem = typeof value === 'string' ? textProblem(value) : null;
  return problem ? new HttpError(400, 'INVALID_TEXT', `${field} ${problem}; send valid Unicode text without NUL characters`) : null;
}

export function assertStorableText(field: string, value: unknown): void {
  const error = invalidText(field, value);
  if (error) throw error;
}

export const MAX_FILE_NAME_CODE_POINTS = 255;
export const DEFAULT_FILE_NAME = 'document';

// Cc: controls (NUL, C0, DEL, C1); Cf: invisible format characters (bidi overrides and
// isolates, zero-width spaces and joiners, BOM, tags); Cs: unpaired surrogates (a paired one
// is a single astral code point under the u flag); Zl/Zp: line and paragraph separators.
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;

/**
 * The stored display name of an uploaded file (multipart or direct upload): the last path
 * segment only, without control, invisible-format or bidi characters and unpaired surrogates,
 * trimmed, at most 255 code points (never cut inside a surrogate pair), 'document' when
 * nothing is left. Never used as a path.
 */
export function cleanFileName(name: string | undefined | null): string {
  // The last path segment, as busboy reads a multipart file name: '' after a trailing slash,
  // and for '.' or '..'.
  const segment = (name ?? '').replaceAll('\\', '/').split('/').at(-1)!;
  const visible = (segment === '.' || segment === '..' ? '' : segment).replace(INVISIBLE, '').trim();
  let cut = '';
  let count = 0;
  for (const codePoint of visible) {
    if (++count > MAX_FILE_NAME_CODE_POINTS) break;
    cut += codePoint;
  }
  return cut.trim() || DEFAULT_FILE_NAME;
}
