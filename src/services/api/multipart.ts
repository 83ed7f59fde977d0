// Strict multipart for POST /v1/documents: the body is exactly one part, a file in the field
// "file". busboy (through @fastify/multipart) extracts the file's bytes, but it does not apply
// a field-name limit to multipart bodies, drops header lines past its headerPairs limit and
// parts without a usable Content-Disposition silently, and reads a whole form field before
// reporting it. So PartScanner reads the same chunks alongside it and judges every part by its
// header block the moment that arrives: a second part, a form field, a file under another
// name, an oversized field name, header block or preamble are refused at once, with a
// message that names the rule (the refused part's body is never read).
import type { Readable } from 'node:stream';
import { addAbortSignal } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { HttpError } from '../errors.ts';
import { untilAborted } from './upload-guard.ts';

export const FILE_FIELD = 'file';

export const MULTIPART_LIMITS = {
  /** Bytes of a part's field name (busboy's fieldNameSize default, which it applies to urlencoded forms only). */
  fieldNameBytes: 100,
  /** Header lines of one part (busboy's headerPairs, which it enforces by dropping the rest). */
  headerPairs: 16,
  /** Bytes of one part's header block; room for a file name of a few thousand characters. */
  headerBytes: 16 * 1024,
  /** Bytes before the first boundary (browsers and curl send none). */
  preambleBytes: 16 * 1024,
  /** RFC 2046: a boundary is 1 to 70 characters. */
  boundaryLength: 70,
} as const;

const CRLF = Buffer.from('\r\n');
const DASH = 0x2d;
const HEADER_END = '\r\n\r\n';

const invalid = (message: string) => new HttpError(400, 'INVALID_MULTIPART', message);
const unexpected = (message: string) => new HttpError(400, 'UNEXPECTED_FIELD', message);

/** A field name for a message: decoded as UTF-8 (parts' headers are read as bytes), quoted, bounded. */
function shown(name: string): string {
  return JSON.stringify(Buffer.from(name, 'latin1').toString('utf8').slice(0, 100));
}

/** The boundary parameter of a multipart Content-Type, or an INVALID_MULTIPART error. */
export function boundaryOf(contentType: string | undefined): string {
  const match = /;\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/i.exec(contentType ?? '');
  const boundary = match ? (match[1]?.replace(/\\(.)/g, '$1') ?? match[2]!) : '';
  if (!boundary) throw invalid('malformed multipart body: the Content-Type has no boundary parameter');
  if (boundary.length > MULTIPART_LIMITS.boundaryLength) {
    throw invalid(`malformed multipart body: the boundary is longer than ${MULTIPART_LIMITS.boundaryLength} characters (RFC 2046)`);
  }
  return boundary;
}

interface PartHeader {
  lines: number;
  disposition: string | null;
  name: string | undefined;
  fileName: boolean;
  contentType: string | undefined;
}

/** The parameters of a Content-Disposition value, names lowercased, `name*` read as `name`. */
function dispositionParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /;\s*([^\s=;*]+)(\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"?|([^;]*))/g;
  for (let m; (m = re.exec(value)); ) {
    const key = m[1]!.toLowerCase();
    let v = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[4]!.trim();
    if (m[2]) v = v.replace(/^[^']*'[^']*'/, '');
    if (!params.has(key)) params.set(key, v);
  }
  return params;
}

function readHeader(block: string): PartHeader {
  const lines: string[] = [];
  for (const line of block.split('\r\n')) {
    if (line === '') continue;
    // A folded line continues the previous header, as busboy reads it.
    if ((line[0] === ' ' || line[0] === '\t') && lines.length > 0) lines[lines.length - 1] += line;
    else lines.push(line);
  }
  const value = (name: string) => {
    const line = lines.find((l) => l.slice(0, name.length + 1).toLowerCase() === `${name}:`);
    return line === undefined ? null : line.slice(name.length + 1).trim();
  };
  const disposition = value('content-disposition');
  const params = disposition !== null && /^form-data\s*(;|$)/i.test(disposition) ? dispositionParams(disposition) : null;
  return {
    lines: lines.length,
    disposition: params ? disposition : null,
    name: params?.get('name'),
    fileName: params?.has('filename') ?? false,
    contentType: value('content-type')?.split(';')[0]!.trim().toLowerCase(),
  };
}

/**
 * Scans a multipart body for its part boundaries and header blocks, the way busboy's parser
 * (Dicer) does, and applies the one-file rule to each header as it completes. `signal` is
 * aborted with the HttpError at the first violation.
 */
export class PartScanner {
  private readonly needle: Buffer;
  private readonly needleText: string;
  private readonly controller = new AbortController();
  private state: 'preamble' | 'boundary' | 'header' | 'body' | 'done' = 'preamble';
  /** The last bytes before the chunk being scanned, for a boundary split across chunks; Dicer starts as if after a CRLF. */
  private tail: Buffer = CRLF;
  private preamble = 0;
  private dashes = 0;
  private header = '';
  parts = 0;

  constructor(boundary: string) {
    this.needleText = `\r\n--${boundary}`;
    this.needle = Buffer.from(this.needleText, 'latin1');
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get error(): HttpError | null {
    return this.controller.signal.aborted ? (this.controller.signal.reason as HttpError) : null;
  }

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && this.state !== 'done' && !this.controller.signal.aborted) {
      if (this.state === 'preamble' || this.state === 'body') {
        const end = this.findBoundary(chunk, i);
        if (this.state === 'preamble' && (this.preamble += (end === -1 ? chunk.length : end) - i) > MULTIPART_LIMITS.preambleBytes + this.needle.length) {
          return this.fail(invalid(`malformed multipart body: no boundary in the first ${MULTIPART_LIMITS.preambleBytes} bytes`));
        }
        if (end === -1) {
          this.keepTail(chunk, i);
          return;
        }
        this.state = 'boundary';
        this.dashes = 0;
        this.tail = Buffer.alloc(0);
        i = end;
      } else if (this.state === 'boundary') {
        // "--" right after a boundary closes the body; anything else starts a part's header.
        if (chunk[i] === DASH && this.dashes < 2) {
          i++;
          if (++this.dashes === 2) this.state = 'done';
          continue;
        }
        this.state = 'header';
        this.header = this.dashes === 1 ? '-' : '';
        this.parts++;
      } else {
        const before = this.header.length;
        const room = MULTIPART_LIMITS.headerBytes + HEADER_END.length + 2 - before;
        const take = Math.min(chunk.length - i, room);
        this.header += chunk.toString('latin1', i, i + take);
        const at = this.header.indexOf(HEADER_END, Math.max(0, before - HEADER_END.length + 1));
        // Dicer ends a part at a boundary even inside its header (and then drops the part).
        const cut = this.header.indexOf(this.needleText, Math.max(0, before - this.needleText.length + 1));
        if (cut !== -1 && (at === -1 || cut < at)) {
          return this.fail(invalid(`malformed multipart body: part ${this.parts} ends before its header block does`));
        }
        if (at === -1) {
          if (take === room) return this.fail(this.oversizedHeader());
          return;
        }
        i += at + HEADER_END.length - before;
        const verdict = this.judge(readHeader(this.header.slice(0, at)));
        if (verdict) return this.fail(verdict);
        this.header = '';
        this.state = 'body';
        // The terminator's last CRLF can begin the next boundary (an empty body), as Dicer reads it.
        this.tail = CRLF;
      }
    }
  }

  private fail(error: HttpError): void {
    this.controller.abort(error);
  }

  /** Index just past the first boundary at or after `from` (possibly begun in the tail), or -1. */
  private findBoundary(chunk: Buffer, from: number): number {
    const n = this.needle.length;
    if (this.tail.length > 0) {
      const joined = Buffer.concat([this.tail, chunk.subarray(from, from + n - 1)]);
      const at = joined.indexOf(this.needle);
      if (at !== -1) return from + at + n - this.tail.length;
    }
    const at = chunk.indexOf(this.needle, from);
    return at === -1 ? -1 : at + n;
  }

  private keepTail(chunk: Buffer, from: number): void {
    const keep = this.needle.length - 1;
    const rest = chunk.subarray(from);
    // Copied, so that a 64 KiB chunk is not kept alive for its last few bytes.
    this.tail = rest.length >= keep ? Buffer.from(rest.subarray(rest.length - keep)) : Buffer.concat([this.tail, rest]).subarray(-keep);
  }

  private oversizedHeader(): HttpError {
    const name = dispositionParams(/content-disposition:([^\r\n]*)/i.exec(this.header)?.[1] ?? '').get('name');
    if (name !== undefined && name.length > MULTIPART_LIMITS.fieldNameBytes) return this.longName();
    return invalid(`part ${this.parts} has a header block larger than ${MULTIPART_LIMITS.headerBytes} bytes (multipart limit: headerSize)`);
  }

  private longName(): HttpError {
    return invalid(`part ${this.parts} has a field name longer than ${MULTIPART_LIMITS.fieldNameBytes} bytes (multipart limit: fieldNameSize); the file goes in a field named "${FILE_FIELD}"`);
  }

  /** The one-file rule, applied to a complete part header; null when the part may be read. */
  private judge(h: PartHeader): HttpError | null {
    if (h.lines > MULTIPART_LIMITS.headerPairs) {
      return invalid(`part ${this.parts} has more than ${MULTIPART_LIMITS.headerPairs} header lines (multipart limit: headerPairs)`);
    }
    if (h.name !== undefined && h.name.length > MULTIPART_LIMITS.fieldNameBytes) return this.longName();
    // busboy's own rule: a part with a file name, or of type application/octet-stream, is a file.
    const isFile = h.fileName || h.contentType === 'application/octet-stream';
    if (this.parts > 1) {
      if (h.disposition === null) {
        return invalid(`too many parts (multipart limit: parts = 1): part ${this.parts} has no Content-Disposition: form-data header; send exactly one part, the file in a field named "${FILE_FIELD}"`);
      }
      if (isFile) return new HttpError(400, 'TOO_MANY_FILES', `send exactly one file per upload: part ${this.parts} is a second file`);
      return unexpected(`unexpected form field ${shown(h.name ?? '')}: no form fields are accepted, send only the file in a field named "${FILE_FIELD}"`);
    }
    if (h.disposition === null) {
      return invalid(`part 1 has no Content-Disposition: form-data header; send the file in a field named "${FILE_FIELD}"`);
    }
    if (!isFile) {
      return unexpected(`unexpected form field ${shown(h.name ?? '')}: no form fields are accepted, send only the file in a field named "${FILE_FIELD}"`);
    }
    if (h.name !== FILE_FIELD) {
      return unexpected(
        h.name === undefined
          ? `the file part has no field name: send it in a field named "${FILE_FIELD}"`
          : `unexpected file field ${shown(h.name)}: send the file in a field named "${FILE_FIELD}"`,
      );
    }
    return null;
  }
}

/** busboy's and @fastify/multipart's errors as our codes; anything else unchanged. */
function multipartError(err: unknown): unknown {
  if (err instanceof HttpError) return err;
  const e = err as { code?: string; message?: string };
  switch (e?.code) {
    case 'FST_FILES_LIMIT':
      return new HttpError(400, 'TOO_MANY_FILES', 'send exactly one file per upload');
    case 'FST_FIELDS_LIMIT':
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return unexpected(`no form fields are accepted: send only the file in a field named "${FILE_FIELD}"`);
    case 'FST_PROTO_VIOLATION':
      return unexpected(`a part has a reserved field name: send only the file in a field named "${FILE_FIELD}"`);
    case 'FST_PARTS_LIMIT':
      return invalid(`too many parts (multipart limit: parts = 1): send exactly one part, the file in a field named "${FILE_FIELD}"`);
    default:
      if (/Unexpected end of (form|multipart)|Malformed part header|Boundary not found|terminated early|Unsupported Content-Type/i.test(e?.message ?? '')) {
        return invalid(`malformed multipart body: ${e.message}`);
      }
      return err;
  }
}

export interface ReceivedFile<T> {
  /** The file name the client gave, unclean. */
  fileName: string | undefined;
  stored: T;
}

/**
 * Reads a multipart body that must be exactly one file in the field "file" and hands the file
 * stream to `store` (which must consume it to the end). Throws the HttpError of the first
 * violation, or `signal`'s reason when it is aborted (the file stream is destroyed then, so
 * `store` fails), and then reads no more of the body (`request.raw.complete` stays false: the
 * caller should close the connection). Whatever `store` kept must be removed by the caller.
 */
export async function receiveSingleFile<T>(
  request: FastifyRequest,
  options: { maxBytes: number; signal: AbortSignal; /** Told the length of every body chunk read. */ received?: (bytes: number) => void },
  store: (file: Readable & { truncated?: boolean }) => Promise<T>,
): Promise<ReceivedFile<T>> {
  const scanner = new PartScanner(boundaryOf(request.headers['content-type']));
  const stop = AbortSignal.any([options.signal, scanner.signal]);
  // busboy's limits are a backstop only, looser than the scanner's rules, so that its
  // errors never pre-empt the scanner's more precise ones.
  const parts = request.parts({ limits: { fileSize: options.maxBytes, files: 2, fields: 1, fieldSize: 1024, parts: 3 } });
  // The first next() pipes the request into busboy synchronously; the scanner listens only
  // after that, so that adding a 'data' listener cannot start the flow before busboy is there.
  let pending = parts.next();
  const counted = options.received;
  const onData = (chunk: Buffer) => {
    counted?.(chunk.length);
    scanner.push(chunk);
  };
  request.raw.on('data', onData);
  let received: ReceivedFile<T> | null = null;
  try {
    for (;;) {
      const step = await untilAborted(pending, stop);
      // The scanner has seen every chunk busboy has: its verdict comes first.
      if (scanner.error) throw scanner.error;
      if (step.done) break;
      const part = step.value;
      if (received) throw part.type === 'file' ? new HttpError(400, 'TOO_MANY_FILES', 'send exactly one file per upload') : unexpected(`no form fields are accepted: send only the file in a field named "${FILE_FIELD}"`);
      if (part.type !== 'file' || part.fieldname !== FILE_FIELD) {
        throw unexpected(`unexpected ${part.type === 'file' ? 'file ' : 'form '}field ${shown(part.fieldname ?? '')}: send only the file, in a field named "${FILE_FIELD}"`);
      }
      addAbortSignal(options.signal, part.file);
      received = { fileName: part.filename, stored: await store(part.file) };
      pending = parts.next();
    }
    if (!received) throw new HttpError(400, 'MISSING_FILE', `the multipart body has no file part: send the document in a field named "${FILE_FIELD}"`);
    return received;
  } catch (err) {
    // Stop reading: busboy would otherwise go on consuming (and discarding) the rest of a
    // refused body. The caller closes the connection instead.
    request.raw.unpipe();
    request.raw.pause();
    if (options.signal.aborted) throw options.signal.reason;
    throw multipartError(err);
  } finally {
    request.raw.off('data', onData);
  }
}
