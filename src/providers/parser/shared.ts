// Helpers the local parser's format modules share: text clean-up and the wording of limit errors,
// so every refusal names what was found, the limit, and the setting that raises it.
import { DocumentLimitError, UnparseableDocumentError, type ParsedDocument } from '../types.ts';

/** The separator LlamaParse puts between pages, so both parsers' output chunks alike. */
export const PAGE_SEPARATOR = '\n\n---\n\n';

const utf8 = new TextDecoder('utf-8'); // strips a leading BOM; invalid bytes become U+FFFD

export function decodeUtf8(bytes: Uint8Array): string {
  return utf8.decode(bytes);
}

export function normaliseNewlines(text: string): string {
  return text.replace(/\r\n?/g, '\n');
}

/** Plain text and markdown: their markdown is their text. */
export function parseText(bytes: Uint8Array): ParsedDocument {
  return { markdown: requireText(normaliseNewlines(decodeUtf8(bytes)), 'document has no text'), pages: 1 };
}

export function requireText(markdown: string, message: string): string {
  if (markdown.trim() === '') throw new UnparseableDocumentError(message);
  return markdown;
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** "64 MiB (67,108,864 bytes)": readable, and exact enough to compare with a setting's value. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return 'an unbounded size';
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${formatCount(n)} bytes`;
  const shown = value >= 100 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(1);
  return `${shown} ${units[unit]} (${formatCount(n)} bytes)`;
}

/** `found` already says what and how much; this adds the limit and the setting. */
export function limitExceeded(setting: string, found: string, limit: string): DocumentLimitError {
  return new DocumentLimitError(setting, `${found}; the limit is ${limit} (${setting} raises it)`);
}
