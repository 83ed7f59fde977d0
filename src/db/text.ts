// Text that Postgres accepts. `text` and `jsonb` refuse NUL, and jsonb refuses unpaired UTF-16
// surrogates (JSON.stringify writes them as lone \uD8xx escapes). Text that docpipe did not write
// itself and must store anyway (a provider's error message, a library's exception) goes through
// here; text from clients is refused at the edge instead (services/text.ts).

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
