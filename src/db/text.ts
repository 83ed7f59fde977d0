// Text that Postgres accepts. `text` and `jsonb` refuse NUL, and jsonb refuses unpaired UTF-16
// surrogates (JSON.stringify writes them as lone \uD8xx escapes). Text from clients is checked
// with textProblem and refused at the edge (services/text.ts, security/tokens.ts); text that
// docpipe did not write itself and must store anyway (a provider's error message, a library's
// exception) is made storable with storableText.

/** Why Postgres would refuse `value`, or null when it stores it as is. */
export function textProblem(value: string): string | null {
  if (value.includes('\0')) return 'contains a NUL character (U+0000)';
  if (!value.isWellFormed()) return 'contains an unpaired UTF-16 surrogate (not valid Unicode)';
  return null;
}

/** NUL and unpaired surrogates replaced by U+FFFD, cut to `maxCodePoints` code points. */
export function storableText(text: string, maxCodePoints = 2000): string {
  let out = text.includes('\0') ? text.replaceAll('\0', '\uFFFD') : text;
  if (!out.isWellFormed()) out = out.toWellFormed();
  if (out.length <= maxCodePoints) return out;
  // Cut by code points, never between the halves of a pair.
  let end = 0;
  for (let n = 0; n < maxCodePoints && end < out.length; n++) end += out.codePointAt(end)! > 0xffff ? 2 : 1;
  return end < out.length ? `${out.slice(0, end)}…` : out;
}
