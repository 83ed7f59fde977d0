// Decides a document's media type from its first bytes, so the pipeline never trusts a
// client-supplied Content-Type or extension for anything that reaches a parser. Binary
// formats are recognised by magic numbers (file-type); everything else must be UTF-8 text,
// and is classified as HTML, markdown or plain text by cheap structural heuristics. The
// file name is only a tie-breaker between markdown and plain text, where a wrong guess
// costs nothing because both are passed through unchanged. An upload's first bytes are kept
// as they stream to storage (captureHead), never read back from it.
import { Transform } from 'node:stream';
import { fileTypeFromBuffer } from 'file-type';
import type { MediaType } from '../types.ts';

/** How much of the object callers should read for sniffing. */
export const SNIFF_BYTES = 64 * 1024;

const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';

export interface HeadCapture {
  /**
   * A pass-through stream that keeps the first bytes of what flows through it. (A stream, not
   * an async generator: `for await` over a Readable joins the chunks it finds buffered into one
   * new Buffer, a copy of the upload's bytes.)
   */
  readonly stream: Transform;
  /** Keeps the first bytes of `chunk`, for a caller that reads the chunks itself. */
  observe(chunk: Uint8Array): void;
  /** The first `limit` bytes seen so far (all of them, for a shorter stream). */
  head(): Buffer;
}

/**
 * Keeps the first `limit` bytes of a stream as it flows to storage, so an upload is sniffed
 * from the bytes it sent instead of being read back from storage afterwards (a second open
 * and read of the file, or an HTTP range request to Supabase). A body that arrives in one
 * chunk (a small upload) is kept by reference: no copy. Otherwise the bytes are copied into
 * one buffer of at most `limit` bytes, whatever the chunks' sizes: a trickle of 1-byte chunks
 * holds no more than a single large one would. The first chunk is held by reference until a
 * second one comes, so the source must not reuse its buffers (an HTTP body's chunks are fresh
 * Buffers; busboy's are views of them).
 */
export function captureHead(limit = SNIFF_BYTES): HeadCapture {
  let first: Buffer | null = null;
  let copied: Buffer | null = null;
  let held = 0;
  const observe = (part: Uint8Array) => {
    if (held >= limit || part.length === 0) return;
    const chunk = Buffer.isBuffer(part) ? part : Buffer.from(part.buffer, part.byteOffset, part.byteLength);
    if (first === null && copied === null) {
      first = chunk.length > limit ? chunk.subarray(0, limit) : chunk;
      held = first.length;
      return;
    }
    if (copied === null) {
      copied = Buffer.allocUnsafe(limit);
      first!.copy(copied, 0);
      first = null;
    }
    held += chunk.copy(copied, held, 0, Math.min(chunk.length, limit - held));
  };
  return {
    stream: new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        observe(chunk);
        callback(null, chunk);
      },
    }),
    observe,
    head() {
      return copied ? copied.subarray(0, held) : (first ?? Buffer.alloc(0));
    },
  };
}

export async function sniffMediaType(head: Buffer, fileName?: string): Promise<MediaType | null> {
  if (head.length === 0) return null;
  const bytes = head.subarray(0, SNIFF_BYTES);

  const detected = await fileTypeFromBuffer(bytes);
  if (detected) {
    if (detected.mime === 'application/pdf') return 'application/pdf';
    if (detected.mime === DOCX) return DOCX;
    // file-type also recognises a few text formats (XML, including XHTML); let those fall
    // through to the text checks instead of rejecting them as unsupported binaries.
    if (detected.mime !== 'application/xml' && !detected.mime.startsWith('text/')) return null;
  }

  const text = decodeUtf8Head(bytes);
  if (text === null || !looksLikeText(text)) return null;
  const body = text.replace(/^\uFEFF/, '');
  if (body.trim() === '') return null;

  if (looksLikeHtml(body)) return 'text/html';
  if (fileName !== undefined && /\.(md|markdown)$/i.test(fileName)) return 'text/markdown';
  if (looksLikeMarkdown(body)) return 'text/markdown';
  return 'text/plain';
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Strict UTF-8 decode that forgives one incomplete sequence at the very end, since the head
 * is usually a prefix of a longer file cut at an arbitrary byte.
 */
function decodeUtf8Head(bytes: Buffer): string | null {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    const cut = incompleteTailStart(bytes);
    if (cut === bytes.length) return null;
    try {
      return strictUtf8.decode(bytes.subarray(0, cut));
    } catch {
      return null;
    }
  }
}

/** Index where a trailing, truncated multibyte sequence starts, or bytes.length if none. */
function incompleteTailStart(bytes: Buffer): number {
  for (let back = 1; back <= 3 && back <= bytes.length; back++) {
    const b = bytes[bytes.length - back]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const needed = b >= 0xf0 && b <= 0xf4 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 0;
    return needed > back ? bytes.length - back : bytes.length;
  }
  return bytes.length;
}

/**
 * Binary data that happens to be valid UTF-8 (or UTF-16 ASCII, full of NULs) is rejected
 * by its control characters; tab, newlines, form feed and the odd stray escape are normal.
 */
function looksLikeText(text: string): boolean {
  let suspicious = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0) return false;
    if ((c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d && c !== 0x0c && c !== 0x1b) || (c >= 0x7f && c <= 0x9f)) {
      suspicious++;
    }
  }
  return suspicious <= text.length / 1000;
}

function looksLikeHtml(text: string): boolean {
  // Skip leading whitespace, an XML prolog and comments, which legitimately precede markup.
  const start = text.replace(/^(?:\s+|<\?xml[^>]*\?>|<!--[\s\S]*?-->)*/i, '');
  if (/^<!doctype\s+html[\s>]/i.test(start) || /^<html[\s>]/i.test(start)) return true;
  // A fragment without <html> still counts if it opens with markup and has <head>/<body>
  // near the top; requiring the leading '<' keeps markdown that quotes HTML out.
  return start.startsWith('<') && /<(?:head|body)[\s>]/i.test(start.slice(0, 2048));
}

/** Scores markdown-only syntax; plain prose rarely has any of it, let alone two kinds. */
function looksLikeMarkdown(text: string): boolean {
  const sample = text.slice(0, 16 * 1024);
  let score = 0;
  if (/^#{1,6}[ \t]+\S/m.test(sample)) score += 2; // ATX heading
  if (/^ {0,3}(?:```|~~~)/m.test(sample)) score += 2; // fenced code
  if (/\[[^\]\n]+\]\([^)\s]+(?:\s+"[^"]*")?\)/.test(sample)) score += 2; // inline link or image
  if (/^ {0,3}\|?.*\|.*\n {0,3}\|?\s*:?-{3,}:?\s*\|/m.test(sample)) score += 2; // table header rule
  if (/^\S.*\n(?:=+|-+)[ \t]*$/m.test(sample)) score += 1; // setext heading
  if ((sample.match(/^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+\S/gm) ?? []).length >= 2) score += 1; // lists
  if (/(?:\*\*|__)\S[^\n]*?\S(?:\*\*|__)/.test(sample)) score += 1; // strong emphasis
  if (/`[^`\n]+`/.test(sample)) score += 1; // inline code
  if (/^ {0,3}>[ \t]?\S/m.test(sample)) score += 1; // blockquote
  return score >= 2;
}
