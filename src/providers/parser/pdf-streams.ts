// Bounds what pdf.js can inflate, before it sees the bytes. One linear pass finds every stream
// object in the raw file; each stream pdf.js may decode while extracting text (content, Form,
// font, CMap and object streams: every stream that is not an image) has its filter chain decoded
// here with the output counted and dropped, stopping as soon as a limit passes. Images are not
// decoded by text extraction (pdf.ts sets maxImageSize 0, which keeps pdf.js from decoding the
// images a Type3 glyph paints) and their data is blanked in the copy handed to pdf.js, so a
// stream that merely *says* it is an image but is used as page content decodes to nothing.
//
// Decisions, each the conservative reading of what pdf.js would do with the same bytes:
// - Object streams (/Type /ObjStm) hold objects pdf.js inflates on demand: counted like content.
// - /Length is trusted only when `endstream` follows it, as pdf.js does; otherwise the data runs
//   to the first `endstream`, which is where pdf.js's own search stops. A /Length pointing into an
//   object stream cannot be read from the raw file: such a stream is decoded up to the end of the
//   file (its filters stop at their own end marker), so a fake `endstream` inside it hides nothing.
// - Predictors (PNG, TIFF) never lengthen data, but pdf.js allocates and fills a whole row even
//   for a short stream, so each stream with a predictor also counts two rows (/Columns can be huge).
// - FlateDecode is inflated by zlib, which is stricter than pdf.js's inflater (pdf.js accepts a
//   distance pointing before the output's start, and bad Huffman tables, and keeps going). When
//   zlib stops on such an error, the input it had not consumed is counted at deflate's maximum
//   ratio (1032:1), because pdf.js may still inflate it. A truncated stream is no error: both stop.
// - LZWDecode, RunLengthDecode, ASCIIHexDecode and ASCII85Decode are decoded here in a few lines
//   each (LZW exactly as pdf.js decodes it, with its quirks).
//   BrotliDecode (pdf.js 5 reads it) is decompressed by zlib's brotli. An unknown filter is passed
//   through by pdf.js, so its input counts as is. A stream whose chain has an image codec (DCT,
//   JPX, JBIG2, CCITT) is image data whatever its dictionary says, and is treated as an image.
// - Encrypted files: pdf.js opens them only when the empty user password does (an owner password
//   alone restricts printing or copying), and so does this scan (pdf-crypt.ts, revisions 2 to 6),
//   decrypting each stream before decoding it. When it cannot (another password: pdf.js will not
//   open the file either; an unknown handler; a stream with its own /Crypt filter), each stream
//   counts at its filter chain's worst case, raw length x 1032 for FlateDecode: small files pass
//   (and fail in pdf.js), larger ones fail with the limit and a message saying why.
import { constants as bufferConstants } from 'node:buffer';
import { Readable } from 'node:stream';
import { constants, createBrotliDecompress, createInflateRaw, inflateRawSync, type BrotliDecompress, type InflateRaw } from 'node:zlib';
import { UnparseableDocumentError, type ParserLimits } from '../types.ts';
import { emptyPasswordDecryptor, type Chunks, type StreamCipher } from './pdf-crypt.ts';
import { formatBytes, limitExceeded } from './shared.ts';

type StreamLimits = Pick<ParserLimits, 'pdfMaxStreamBytes' | 'pdfMaxInflatedBytes'>;

export interface PreparedPdf {
  /** The copy of the file pdf.js should read: image data blanked. */
  data: Uint8Array;
  /** What was measured: streams counted, their inflated bytes, the largest, images blanked. */
  streams: number;
  inflatedBytes: number;
  largestStreamBytes: number;
  images: number;
}

/** Checks every stream against the limits before pdf.js sees the file. */
export async function preparePdfBytes(bytes: Uint8Array, limits: StreamLimits): Promise<PreparedPdf> {
  const file = new PdfFile(bytes);
  // pdf.js rejects Node Buffers and may detach the array it is given: it gets a copy anyway.
  const copy = new Uint8Array(bytes);
  // A classic trailer says at once whether the file is encrypted; a cross-reference stream says
  // it in its own dictionary, found during the pass, which then starts again, decrypting.
  let encryption = file.trailerEncryption();
  for (;;) {
    const budget = new Budget(limits);
    let streams = 0;
    let images = 0;
    let restart = false;
    // Streams are found again rather than kept: a 200,000-page file has 200,000 dictionaries.
    for (const stream of file.streams()) {
      const info = file.describe(stream);
      if (info.xref && info.encrypt && !encryption) {
        encryption = file.encryptionOf(stream.dict!);
        restart = true;
        break;
      }
      if (info.image) {
        copy.fill(0x20, stream.dataStart, info.end);
        images++;
        continue;
      }
      await countStream(file, stream, info, encryption, budget);
      streams++;
    }
    if (!restart) return { data: copy, streams, inflatedBytes: budget.total, largestStreamBytes: budget.largest, images };
  }
}

/** An encrypted file: how to decrypt an object's streams, or null when this scan cannot. */
interface Encryption {
  decrypt: ((num: number, gen: number) => StreamCipher | null) | null;
}

// --- accounting ---------------------------------------------------------------------------------

class Budget {
  total = 0;
  largest = 0;
  constructor(readonly limits: StreamLimits) {}

  /**
   * A counter for one stream: throws as soon as the stream or the file passes its limit. `why`
   * marks an amount that is a worst case rather than measured, and says why.
   */
  forStream(label: string): (n: number, why?: string) => void {
    let own = 0;
    return (n, why) => {
      own += n;
      this.total += n;
      this.largest = Math.max(this.largest, own);
      const { pdfMaxStreamBytes: streamLimit, pdfMaxInflatedBytes: totalLimit } = this.limits;
      if (own > streamLimit) {
        const found = why ? `PDF ${label} could inflate to ${formatBytes(own)}: ${why}` : `PDF ${label} inflates to more than ${formatBytes(streamLimit)}`;
        throw limitExceeded('PDF_MAX_STREAM_BYTES', found, `${formatBytes(streamLimit)} for one stream`);
      }
      if (this.total > totalLimit) {
        const found = `the PDF's streams ${why ? 'could inflate' : 'inflate'} to more than ${formatBytes(totalLimit)} together (reached at ${label}${why ? `: ${why}` : ''})`;
        throw limitExceeded('PDF_MAX_INFLATED_BYTES', found, `${formatBytes(totalLimit)} for all streams`);
      }
    };
  }
}

/** Worst-case output per input byte of each filter (deflate's 1032:1, LZW's 2560:1, ...). */
const WORST_RATIO: Record<string, number> = { FlateDecode: 1032, LZWDecode: 2560, RunLengthDecode: 128, ASCII85Decode: 4, ASCIIHexDecode: 0.5, BrotliDecode: Infinity };
const FILTER_ALIASES: Record<string, string> = { Fl: 'FlateDecode', LZW: 'LZWDecode', RL: 'RunLengthDecode', A85: 'ASCII85Decode', AHx: 'ASCIIHexDecode', DCT: 'DCTDecode', JPX: 'JPXDecode', CCF: 'CCITTFaxDecode' };
const IMAGE_CODECS = new Set(['DCTDecode', 'JPXDecode', 'JBIG2Decode', 'CCITTFaxDecode']);
const ratioOf = (filter: string) => WORST_RATIO[filter] ?? 1; // pdf.js passes unknown filters through

async function countStream(file: PdfFile, stream: RawStream, info: StreamInfo, encryption: Encryption | null, budget: Budget): Promise<void> {
  const label = `stream${stream.objNum === null ? '' : ` object ${stream.objNum}`}${info.filters.length ? ` (${info.filters.join(', ')})` : ''}`;
  const add = budget.forStream(label);
  for (const rowBytes of info.predictorRows) add(2 * rowBytes, 'its predictor rows');
  const data = file.bytes.subarray(stream.dataStart, info.end);
  let decrypt: StreamCipher | null = null;
  // pdf.js reads cross-reference streams before it sets up decryption: they are never encrypted.
  if (encryption && !info.xref) {
    // A stream with its own /Crypt filter, or one outside any object, cannot be told its key.
    const cipher = encryption.decrypt && stream.objNum !== null && !info.filters.includes('Crypt') ? encryption.decrypt(stream.objNum, stream.gen) : undefined;
    if (cipher === undefined) {
      const bound = data.length * info.filters.reduce((r, f) => r * ratioOf(f), 1);
      const why =
        `the file is encrypted and the scan cannot decrypt this stream (it tries the empty user password, the only one pdf.js tries), ` +
        `so its ${formatBytes(data.length)} count at the filters' worst case (${info.filters.map((f) => `${ratioOf(f)}:1`).join(' x ') || '1:1'})`;
      return add(bound, why);
    }
    decrypt = cipher;
  }
  if (info.filters.length === 0) return add(data.length);
  if (!decrypt && info.filters.length === 1 && info.filters[0] === 'FlateDecode' && data.length <= SMALL_STREAM) {
    return add(...inflateSmall(data, budget));
  }
  await decodeCounting(data, info.filters, info.earlyChange, add, decrypt);
}

/** Below this, a FlateDecode stream is inflated in one call: at most ~8 MiB, and no stream set-up. */
const SMALL_STREAM = 8 * 1024;

function inflateSmall(data: Uint8Array, budget: Budget): [number, string?] {
  if (!flateHeaderOk(data)) return [0];
  const room = Math.max(1, Math.min(budget.limits.pdfMaxStreamBytes, budget.limits.pdfMaxInflatedBytes - budget.total, bufferConstants.MAX_LENGTH - 1) + 1);
  try {
    // Raw inflate after the two header bytes: pdf.js never checks the Adler-32 trailer (often
    // wrong in sloppy files), so zlib must not stop on it either.
    return [inflateRawSync(data.subarray(2), { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: room }).length];
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') return [room];
    return [data.length * WORST_RATIO.FlateDecode!, 'zlib cannot inflate it, so it counts at 1032:1, since pdf.js may still inflate it'];
  }
}

/** pdf.js's own checks of a zlib header: a stream failing them decodes to nothing in pdf.js. */
function flateHeaderOk(data: Uint8Array): boolean {
  if (data.length < 2) return false;
  const cmf = data[0]!;
  const flg = data[1]!;
  return (cmf & 0x0f) === 8 && ((cmf << 8) + flg) % 31 === 0 && (flg & 0x20) === 0;
}

// --- decoding, counted and dropped -----------------------------------------------------------

const CHUNK = 64 * 1024;

class StageFailure extends Error {
  constructor(
    readonly stage: number,
    readonly unconsumed: number,
    cause: unknown,
  ) {
    super('stage failed', { cause });
  }
}

async function decodeCounting(
  data: Uint8Array,
  filters: string[],
  earlyChange: Array<number | undefined>,
  add: (n: number, why?: string) => void,
  decrypt: StreamCipher | null,
): Promise<void> {
  // maxIn[i]: most bytes stage i can be given (the raw length through the stages before it).
  const maxIn: number[] = [];
  let bound = data.length;
  for (const f of filters) {
    maxIn.push(bound);
    bound *= ratioOf(f);
  }
  const after = (i: number) => filters.slice(i + 1).reduce((r, f) => r * ratioOf(f), 1);

  let chunks: Chunks = decrypt ? decrypt(source(data)) : source(data);
  for (const [i, filter] of filters.entries()) {
    switch (filter) {
      case 'FlateDecode':
        chunks = inflating(chunks, 'flate', i, maxIn[i]!);
        break;
      case 'BrotliDecode':
        chunks = inflating(chunks, 'brotli', i, maxIn[i]!);
        break;
      case 'ASCIIHexDecode':
        chunks = asciiHex(chunks);
        break;
      case 'ASCII85Decode':
        chunks = ascii85(chunks);
        break;
      case 'RunLengthDecode':
        chunks = runLength(chunks);
        break;
      case 'LZWDecode':
        chunks = lzw(chunks, earlyChange[i] ?? 1);
        break;
      default: // Crypt (identity in an unencrypted file) and filters pdf.js does not know
        break;
    }
  }
  try {
    for await (const chunk of chunks) add(chunk.length);
  } catch (err) {
    if (!(err instanceof StageFailure)) throw err;
    const filter = filters[err.stage]!;
    add(err.unconsumed * ratioOf(filter) * after(err.stage), `zlib cannot decode its ${filter} data, so the rest counts at ${ratioOf(filter)}:1, since pdf.js may still inflate it`);
  }
}

async function* source(data: Uint8Array): Chunks {
  for (let at = 0; at < data.length; at += CHUNK) yield data.subarray(at, at + CHUNK);
}

/**
 * LZW as pdf.js decodes it (its lzw_stream.js, step for step: 9- to 12-bit codes, EarlyChange,
 * a dictionary that stops growing at 4,096 entries), streamed: the output is produced to be
 * counted (or fed to the next filter) and dropped, however long its sequences.
 */
async function* lzw(input: Chunks, earlyChange: number): Chunks {
  const values = new Uint8Array(4096);
  const lengths = new Uint16Array(4096);
  const prevCodes = new Uint16Array(4096);
  for (let i = 0; i < 256; i++) {
    values[i] = i;
    lengths[i] = 1;
  }
  const sequence = new Uint8Array(4096);
  let sequenceLength = 0;
  let nextCode = 258;
  let codeLength = 9;
  let prevCode = 0;
  let cached = 0;
  let bits = 0;
  let out = new Uint8Array(CHUNK + 8192);
  let n = 0;
  for await (const chunk of input) {
    for (const byte of chunk) {
      cached = ((cached << 8) | byte) & 0xffffff;
      bits += 8;
      while (bits >= codeLength) {
        bits -= codeLength;
        const code = (cached >>> bits) & ((1 << codeLength) - 1);
        const hasPrev = sequenceLength > 0;
        if (code < 256) {
          sequence[0] = code;
          sequenceLength = 1;
        } else if (code >= 258) {
          if (code < nextCode) {
            sequenceLength = lengths[code]!;
            for (let j = sequenceLength - 1, q = code; j >= 0; j--) {
              sequence[j] = values[q]!;
              q = prevCodes[q]!;
            }
          } else {
            sequence[sequenceLength++] = sequence[0]!; // past 4,096 the write is lost, as in pdf.js
          }
        } else if (code === 256) {
          codeLength = 9;
          nextCode = 258;
          sequenceLength = 0;
          continue;
        } else {
          if (n > 0) yield out.subarray(0, n);
          return;
        }
        if (hasPrev) {
          prevCodes[nextCode] = prevCode;
          lengths[nextCode] = lengths[prevCode]! + 1;
          values[nextCode] = sequence[0]!;
          nextCode++;
          const next = nextCode + earlyChange;
          if ((next & (next - 1)) === 0) codeLength = Math.min(Math.log2(next) + 1, 12) | 0;
        }
        prevCode = code;
        if (n + sequenceLength > out.length) {
          yield out.subarray(0, n);
          out = new Uint8Array(Math.max(CHUNK + 8192, sequenceLength));
          n = 0;
        }
        out.set(sequence.subarray(0, Math.min(sequenceLength, 4096)), n);
        n += sequenceLength; // zeros past 4,096, as pdf.js writes them
      }
      if (n >= CHUNK) {
        yield out.subarray(0, n);
        out = new Uint8Array(CHUNK + 8192);
        n = 0;
      }
    }
  }
  if (n > 0) yield out.subarray(0, n);
  // pdf.js turns the rest of the block it was reading when the data ran out into zero bytes.
  yield new Uint8Array(512);
}

/** zlib inflate or brotli, streamed: at most a chunk or two in memory, whatever the ratio. */
async function* inflating(input: Chunks, kind: 'flate' | 'brotli', stage: number, maxInput: number): Chunks {
  const iterator = input[Symbol.asyncIterator]();
  let head: Uint8Array = new Uint8Array(0);
  while (head.length < 2) {
    const next = await iterator.next();
    if (next.done) break;
    head = head.length === 0 ? next.value : Buffer.concat([head, next.value]);
  }
  if (kind === 'flate') {
    if (!flateHeaderOk(head)) {
      await iterator.return?.();
      return;
    }
    head = head.subarray(2); // raw inflate from here: see inflateSmall
  }
  async function* rest(): Chunks {
    if (head.length) yield head;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value;
  }
  const engine: InflateRaw | BrotliDecompress = kind === 'flate' ? createInflateRaw({ finishFlush: constants.Z_SYNC_FLUSH }) : createBrotliDecompress();
  const feed = Readable.from(rest(), { objectMode: false, highWaterMark: CHUNK });
  feed.on('error', (err) => engine.destroy(err));
  feed.pipe(engine);
  try {
    for await (const chunk of engine) yield chunk as Buffer;
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('Z_') || (err as { code?: string }).code?.startsWith('ERR_BROTLI') || (err as { errno?: number }).errno !== undefined) {
      // bytesWritten counts the input the engine took, including the chunk it failed in.
      throw new StageFailure(stage, Math.max(0, maxInput - Math.max(0, engine.bytesWritten - CHUNK)), err);
    }
    throw err;
  } finally {
    feed.unpipe(engine);
    feed.destroy();
    engine.destroy();
  }
}

const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX['0123456789abcdef'.charCodeAt(i)] = i;
  HEX['0123456789ABCDEF'.charCodeAt(i)] = i;
}

async function* asciiHex(input: Chunks): Chunks {
  let pending = -1;
  for await (const chunk of input) {
    const out = new Uint8Array(Math.ceil(chunk.length / 2) + 1);
    let n = 0;
    for (const c of chunk) {
      if (c === 0x3e) {
        if (pending >= 0) out[n++] = pending << 4;
        yield out.subarray(0, n);
        return;
      }
      const v = HEX[c]!;
      if (v < 0) continue;
      if (pending < 0) pending = v;
      else {
        out[n++] = (pending << 4) | v;
        pending = -1;
      }
    }
    yield out.subarray(0, n);
  }
  if (pending >= 0) yield Uint8Array.of(pending << 4);
}

async function* ascii85(input: Chunks): Chunks {
  const group: number[] = [];
  const flushGroup = (out: Uint8Array, n: number): number => {
    const len = group.length;
    while (group.length < 5) group.push(84); // 'u' pads a short final group
    let value = 0;
    for (const d of group) value = value * 85 + d;
    for (let k = 0; k < len - 1; k++) out[n++] = (value >>> (24 - 8 * k)) & 0xff;
    group.length = 0;
    return n;
  };
  for await (const chunk of input) {
    const out = new Uint8Array(chunk.length * 4 + 4);
    let n = 0;
    for (const c of chunk) {
      if (c === 0x7e) {
        if (group.length > 1) n = flushGroup(out, n);
        yield out.subarray(0, n);
        return;
      }
      if (c === 0x7a && group.length === 0) {
        n += 4; // 'z': four zero bytes (the array is zero-filled)
        continue;
      }
      if (c < 0x21 || c > 0x75) continue;
      group.push(c - 0x21);
      if (group.length === 5) n = flushGroup(out, n);
    }
    yield out.subarray(0, n);
  }
  if (group.length > 1) {
    const out = new Uint8Array(4);
    yield out.subarray(0, flushGroup(out, 0));
  }
}

async function* runLength(input: Chunks): Chunks {
  let literal = 0; // bytes still to copy of a literal run
  let repeat = 0; // copies of the next byte, when a repeat run is waiting for it
  for await (const chunk of input) {
    const out: Uint8Array[] = [];
    let size = 0;
    for (let i = 0; i < chunk.length; ) {
      if (literal > 0) {
        const piece = chunk.subarray(i, i + literal);
        out.push(piece);
        size += piece.length;
        literal -= piece.length;
        i += piece.length;
      } else if (repeat > 0) {
        out.push(new Uint8Array(repeat).fill(chunk[i++]!));
        size += repeat;
        repeat = 0;
      } else {
        const length = chunk[i++]!;
        if (length === 128) {
          yield Buffer.concat(out, size);
          return;
        }
        if (length < 128) literal = length + 1;
        else repeat = 257 - length;
      }
      if (size >= CHUNK) {
        yield Buffer.concat(out, size);
        out.length = 0;
        size = 0;
      }
    }
    yield Buffer.concat(out, size);
  }
}

// --- the raw file: objects, dictionaries, streams ------------------------------------------------

type PdfValue = number | boolean | null | Name | Ref | PdfDict | PdfValue[] | StringValue | Keyword;
class Name {
  constructor(readonly name: string) {}
}
class Ref {
  constructor(
    readonly num: number,
    readonly gen: number,
  ) {}
}
class PdfDict {
  readonly map = new Map<string, PdfValue>();
  get(key: string): PdfValue | undefined {
    return this.map.get(key);
  }
}
class StringValue {
  constructor(readonly bytes: Uint8Array) {}
}
class Keyword {
  constructor(readonly word: string) {}
}

interface RawStream {
  /** Offset of the `stream` keyword. */
  keyword: number;
  dataStart: number;
  objNum: number | null;
  gen: number;
  dict: PdfDict | null;
}

interface StreamInfo {
  /** Where the data pdf.js may decode ends. */
  end: number;
  image: boolean;
  xref: boolean;
  /** A cross-reference stream naming an /Encrypt dictionary. */
  encrypt: boolean;
  filters: string[];
  /** Row sizes of the predictors in the chain. */
  predictorRows: number[];
  /** Each filter's /EarlyChange (LZWDecode). */
  earlyChange: Array<number | undefined>;
}

const WHITE = new Uint8Array(256);
for (const c of [0x00, 0x09, 0x0a, 0x0c, 0x0d, 0x20]) WHITE[c] = 1;
const DELIM = new Uint8Array(256);
for (const c of '()<>[]{}/%') DELIM[c.charCodeAt(0)] = 1;
const isRegular = (c: number | undefined) => c !== undefined && !WHITE[c] && !DELIM[c];

/** Most nested arrays and dictionaries a dictionary may have before the scan gives up on it. */
const MAX_NESTING = 64;
/** Longest object the scan reads: stream dictionaries and trailers are a few hundred bytes. */
const MAX_OBJECT_BYTES = 1024 * 1024;

class PdfFile {
  /** A Buffer view of the bytes (no copy), for native search. */
  private readonly buf: Buffer;
  /** `N G obj` headers in file order: where each starts, where its body starts, its number. */
  private headerAt = new Float64Array(1024);
  private headerBody = new Float64Array(1024);
  private headerNum = new Float64Array(1024);
  private headerGen = new Float64Array(1024);
  private headerCount = 0;
  /** Header indices sorted by object number, then position: built on the first reference. */
  private byNumber: Uint32Array | null = null;
  private readonly parsed = new Map<number, { value: PdfValue; end: number } | null>();

  constructor(readonly bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (const obj of this.keywords('obj')) {
      // Back over `N ws G ws` (no comments: pdf.js's own recovery scan allows none either).
      const genEnd = this.whiteBefore(obj);
      const gen = genEnd < obj ? this.digitsBefore(genEnd) : null;
      const numEnd = gen ? this.whiteBefore(gen.start) : -1;
      const num = gen && numEnd < gen.start ? this.digitsBefore(numEnd) : null;
      if (!num || isRegular(this.bytes[num.start - 1])) continue;
      if (this.headerCount === this.headerAt.length) {
        const grow = (a: Float64Array) => {
          const bigger = new Float64Array(a.length * 2);
          bigger.set(a);
          return bigger;
        };
        this.headerAt = grow(this.headerAt);
        this.headerBody = grow(this.headerBody);
        this.headerNum = grow(this.headerNum);
        this.headerGen = grow(this.headerGen);
      }
      this.headerAt[this.headerCount] = num.start;
      this.headerBody[this.headerCount] = obj + 3;
      this.headerNum[this.headerCount] = num.value;
      this.headerGen[this.headerCount] = gen!.value;
      this.headerCount++;
    }
  }

  /** Offsets of `word` standing as a keyword: delimited on both sides, as the lexer reads it. */
  private *keywords(word: string): Generator<number> {
    for (let at = this.buf.indexOf(word); at >= 0; at = this.buf.indexOf(word, at + 1)) {
      if (!isRegular(this.bytes[at - 1]) && !isRegular(this.bytes[at + word.length])) yield at;
    }
  }

  private whiteBefore(pos: number): number {
    while (pos > 0 && WHITE[this.bytes[pos - 1]!]) pos--;
    return pos;
  }

  private digitsBefore(pos: number): { start: number; value: number } | null {
    let start = pos;
    while (start > 0 && pos - start < 10 && this.bytes[start - 1]! >= 0x30 && this.bytes[start - 1]! <= 0x39) start--;
    return start === pos ? null : { start, value: Number(this.buf.toString('latin1', start, pos)) };
  }

  *streams(): Generator<RawStream> {
    const headers = this.headerAt;
    const count = this.headerCount;
    let h = 0;
    let parsedHeader = -1;
    let obj: { value: PdfValue; end: number } | null = null;
    let dictEnd = -1;
    for (const at of this.keywords('stream')) {
      while (h + 1 < count && headers[h + 1]! < at) h++;
      const hasHeader = h < count && headers[h]! < at;
      let dict: PdfDict | null = null;
      let objNum: number | null = null;
      let gen = 0;
      if (hasHeader) {
        // Several keywords after one header (inside its data) parse its dictionary once.
        if (parsedHeader !== h) {
          obj = this.parseObject(this.headerBody[h]!);
          dictEnd = obj ? this.skipSpace(obj.end) : -1;
          parsedHeader = h;
        }
        // The dictionary must end right at this keyword; otherwise the keyword sits in some
        // other object's data (or in one this scan cannot parse) and is handled without one.
        if (obj && obj.value instanceof PdfDict && dictEnd === at) {
          dict = obj.value;
          objNum = this.headerNum[h]!;
          gen = this.headerGen[h]!;
        }
      }
      yield { keyword: at, dataStart: this.lineAfter(at + 6), objNum, gen, dict };
    }
  }

  describe(stream: RawStream): StreamInfo {
    const { dict } = stream;
    if (!dict) {
      // Unknown dictionary: whatever pdf.js makes of it, zlib data is inflated and anything else
      // counts as raw bytes, up to the first endstream.
      const end = this.firstEndstream(stream.dataStart);
      const filters = flateHeaderOk(this.bytes.subarray(stream.dataStart, stream.dataStart + 2)) ? ['FlateDecode'] : [];
      return { end, image: false, xref: false, encrypt: false, filters, predictorRows: [], earlyChange: [] };
    }
    const filterValue = this.resolve(dict.get('F') ?? dict.get('Filter')); // pdf.js reads /F first
    const parmsValue = this.resolve(dict.get('DP') ?? dict.get('DecodeParms'));
    const names = filterValue instanceof Name ? [filterValue] : Array.isArray(filterValue) ? filterValue.map((v) => this.resolve(v)) : [];
    const filters = names.map((n) => (n instanceof Name ? (FILTER_ALIASES[n.name] ?? n.name) : 'FlateDecode')); // an unreadable name: assume the worst common one
    const parms = filters.map((_, i) => this.resolve(Array.isArray(parmsValue) ? parmsValue[i] : i === 0 ? parmsValue : undefined));
    const predictorRows: number[] = [];
    for (const [i, p] of parms.entries()) {
      if (!(p instanceof PdfDict) || !['FlateDecode', 'LZWDecode'].includes(filters[i]!)) continue;
      const predictor = this.number(p.get('Predictor')) ?? 1;
      if (predictor <= 1) continue;
      const columns = this.number(p.get('Columns')) ?? 1;
      const colors = this.number(p.get('Colors')) ?? 1;
      const bits = this.number(p.get('BitsPerComponent')) ?? 8;
      predictorRows.push(Math.ceil((Math.abs(columns) * Math.abs(colors) * Math.abs(bits)) / 8));
    }
    const type = this.resolve(dict.get('Type'));
    const subtype = this.resolve(dict.get('Subtype'));

    const length = this.resolve(dict.get('Length'));
    let end: number;
    let exact = true;
    if (typeof length === 'number' && Number.isInteger(length) && length >= 0 && this.endstreamAt(stream.dataStart + length)) {
      end = stream.dataStart + length;
    } else if (dict.get('Length') instanceof Ref && length === undefined && filters.length > 0) {
      // The length lives in an object stream: decode to the end of the file (see the header).
      end = this.bytes.length;
      exact = false;
    } else {
      end = this.firstEndstream(stream.dataStart);
    }
    const image = exact && ((subtype instanceof Name && subtype.name === 'Image') || filters.some((f) => IMAGE_CODECS.has(f)));
    const xref = type instanceof Name && type.name === 'XRef';
    const earlyChange = parms.map((p) => (p instanceof PdfDict ? this.number(p.get('EarlyChange')) : undefined));
    return { end, image, xref, encrypt: xref && dict.get('Encrypt') !== undefined, filters, predictorRows, earlyChange };
  }

  /** A trailer dictionary, or a cross-reference stream's, names an /Encrypt dictionary. */
  /** The encryption the newest classic trailer names, or null. */
  trailerEncryption(): Encryption | null {
    let trailer: PdfDict | null = null;
    for (const at of this.keywords('trailer')) {
      const obj = this.parseObject(at + 7);
      if (obj?.value instanceof PdfDict && obj.value.get('Encrypt') !== undefined) trailer = obj.value;
    }
    return trailer ? this.encryptionOf(trailer) : null;
  }

  /** Reads the /Encrypt dictionary and /ID a trailer (or cross-reference stream) names. */
  encryptionOf(trailer: PdfDict): Encryption {
    const dict = this.resolve(trailer.get('Encrypt'));
    if (!(dict instanceof PdfDict)) return { decrypt: null };
    const bytesOf = (v: PdfValue | undefined) => {
      const r = this.resolve(v);
      return r instanceof StringValue ? r.bytes : new Uint8Array(0);
    };
    const nameOf = (v: PdfValue | undefined) => {
      const r = this.resolve(v);
      return r instanceof Name ? r.name : null;
    };
    const ids = this.resolve(trailer.get('ID'));
    const v = this.number(dict.get('V')) ?? 0;
    const stmf = nameOf(dict.get('StmF')) ?? 'Identity';
    const cf = this.resolve(dict.get('CF'));
    const filter = cf instanceof PdfDict && stmf !== 'Identity' ? this.resolve(cf.get(stmf)) : undefined;
    const cfLength = filter instanceof PdfDict ? this.number(filter.get('Length')) : undefined;
    return {
      decrypt: emptyPasswordDecryptor({
        filter: nameOf(dict.get('Filter')),
        v,
        r: this.number(dict.get('R')) ?? 0,
        lengthBits: this.number(dict.get('Length')) ?? (v >= 4 ? (cfLength ?? 128) : null),
        o: bytesOf(dict.get('O')),
        u: bytesOf(dict.get('U')),
        ue: dict.get('UE') === undefined ? null : bytesOf(dict.get('UE')),
        p: this.number(dict.get('P')) ?? 0,
        encryptMetadata: this.resolve(dict.get('EncryptMetadata')) !== false,
        streamMethod: stmf === 'Identity' ? null : filter instanceof PdfDict ? (nameOf(filter.get('CFM')) ?? 'None') : 'None',
        id0: Array.isArray(ids) ? bytesOf(ids[0]) : new Uint8Array(0),
      }),
    };
  }

  private number(value: PdfValue | undefined): number | undefined {
    const v = this.resolve(value);
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  }

  /** Follows a reference to the object's last definition in the file; undefined when absent. */
  private resolve(value: PdfValue | undefined, depth = 0): PdfValue | undefined {
    if (!(value instanceof Ref) || depth > 8) return value instanceof Ref ? undefined : value;
    const index = this.lastHeaderOf(value.num);
    if (index < 0) return undefined;
    return this.resolve(this.objectAt(this.headerBody[index]!)?.value ?? undefined, depth + 1);
  }

  /** The last header of object `num` (the latest revision, as a cross-reference table says), or -1. */
  private lastHeaderOf(num: number): number {
    if (!this.byNumber) {
      const order = new Uint32Array(this.headerCount);
      for (let i = 0; i < order.length; i++) order[i] = i;
      order.sort((a, b) => this.headerNum[a]! - this.headerNum[b]! || a - b);
      this.byNumber = order;
    }
    const order = this.byNumber;
    let lo = 0;
    let hi = order.length; // first position whose number is greater than num
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.headerNum[order[mid]!]! <= num) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && this.headerNum[order[lo - 1]!] === num ? order[lo - 1]! : -1;
  }

  private objectAt(body: number): { value: PdfValue; end: number } | null {
    let obj = this.parsed.get(body);
    if (obj === undefined) {
      obj = this.parseObject(body);
      this.parsed.set(body, obj);
    }
    return obj;
  }

  private endstreamAt(pos: number): boolean {
    const at = this.skipSpace(pos);
    return this.buf.toString('latin1', at, at + 9) === 'endstream' && !isRegular(this.bytes[at + 9]);
  }

  // Searches forward from increasing positions reuse their last answer: many keywords on one long
  // line, or many streams before one endstream, would otherwise make the scan quadratic.
  private nextEndstream = { from: -1, at: -1 };
  private nextEol = { from: -1, at: -1 };

  private firstEndstream(from: number): number {
    const memo = this.nextEndstream;
    if (!(from >= memo.from && (memo.at < 0 || from <= memo.at))) {
      memo.from = from;
      memo.at = this.buf.indexOf('endstream', from);
    }
    return memo.at < 0 ? this.bytes.length : memo.at;
  }

  /** pdf.js starts stream data after the end of the line the `stream` keyword is on. */
  private lineAfter(pos: number): number {
    const b = this.bytes;
    const memo = this.nextEol;
    if (!(pos >= memo.from && pos <= memo.at)) {
      let at = pos;
      while (at < b.length && b[at] !== 0x0a && b[at] !== 0x0d) at++;
      memo.from = pos;
      memo.at = at;
    }
    const eol = memo.at;
    if (b[eol] === 0x0d && b[eol + 1] === 0x0a) return eol + 2;
    return Math.min(eol + 1, b.length);
  }

  /**
   * One object at `pos` (after white space), parsed within MAX_OBJECT_BYTES and charged to a
   * budget of a few times the file's size: dictionaries are small, and crafted syntax (say a
   * million `trailer (` with no closing parenthesis) must not turn the scan quadratic.
   */
  private parseObject(pos: number): { value: PdfValue; end: number } | null {
    const start = this.skipSpace(pos);
    this.parseEnd = Math.min(this.bytes.length, start + MAX_OBJECT_BYTES);
    const obj = this.parseValue(start, 0);
    this.parseWork += (obj ? obj.end : this.parseEnd) - start;
    if (this.parseWork > 4 * this.bytes.length + MAX_OBJECT_BYTES) {
      throw new UnparseableDocumentError('PDF structure could not be scanned: its objects overlap too much to be read in one pass');
    }
    return obj;
  }

  private parseEnd = 0;
  private parseWork = 0;

  private skipSpace(pos: number): number {
    const b = this.bytes;
    while (pos < b.length) {
      if (WHITE[b[pos]!]) pos++;
      else if (b[pos] === 0x25) {
        while (pos < b.length && b[pos] !== 0x0a && b[pos] !== 0x0d) pos++;
      } else break;
    }
    return pos;
  }

  /** One PDF object at `pos` (no streams): enough of the syntax to read stream dictionaries. */
  private parseValue(pos: number, depth: number): { value: PdfValue; end: number } | null {
    const b = this.bytes;
    const c = b[pos];
    if (c === undefined || depth > MAX_NESTING) return null;
    if (c === 0x3c && b[pos + 1] === 0x3c) {
      const dict = new PdfDict();
      let at = this.skipSpace(pos + 2);
      while (at < this.parseEnd && !(b[at] === 0x3e && b[at + 1] === 0x3e)) {
        const key = this.parseValue(at, depth + 1);
        if (!key) return null;
        at = this.skipSpace(key.end);
        if (!(key.value instanceof Name)) continue; // pdf.js skips what is not a key
        if (b[at] === 0x3e && b[at + 1] === 0x3e) break;
        const value = this.parseValue(at, depth + 1);
        if (!value) return null;
        dict.map.set(key.value.name, value.value);
        at = this.skipSpace(value.end);
      }
      return at < this.parseEnd ? { value: dict, end: at + 2 } : null;
    }
    if (c === 0x5b) {
      const items: PdfValue[] = [];
      let at = this.skipSpace(pos + 1);
      while (at < this.parseEnd && b[at] !== 0x5d) {
        const item = this.parseValue(at, depth + 1);
        if (!item) return null;
        items.push(item.value);
        at = this.skipSpace(item.end);
      }
      return at < this.parseEnd ? { value: items, end: at + 1 } : null;
    }
    if (c === 0x2f) {
      let at = pos + 1;
      while (at < this.parseEnd && isRegular(b[at])) at++;
      const raw = this.buf.toString('latin1', pos + 1, at);
      const name = raw.includes('#') ? raw.replace(/#([0-9a-fA-F]{2})/g, (_: string, hex: string) => String.fromCharCode(parseInt(hex, 16))) : raw;
      return { value: new Name(name), end: at };
    }
    if (c === 0x28) {
      // Escapes decoded as pdf.js's lexer decodes them: /O, /U and /ID are binary strings.
      const out: number[] = [];
      let nest = 1;
      for (let at = pos + 1; at < this.parseEnd; at++) {
        const ch = b[at]!;
        if (ch === 0x28) nest++;
        else if (ch === 0x29 && --nest === 0) return { value: new StringValue(Uint8Array.from(out)), end: at + 1 };
        if (ch !== 0x5c) {
          out.push(ch);
          continue;
        }
        const e = b[++at];
        if (e === undefined) break;
        const simple: Record<number, number> = { 0x6e: 0x0a, 0x72: 0x0d, 0x74: 0x09, 0x62: 0x08, 0x66: 0x0c };
        if (simple[e] !== undefined) out.push(simple[e]);
        else if (e >= 0x30 && e <= 0x37) {
          let value = e & 7;
          for (let k = 0; k < 2 && b[at + 1]! >= 0x30 && b[at + 1]! <= 0x37; k++) value = (value << 3) + (b[++at]! & 7);
          out.push(value & 0xff);
        } else if (e === 0x0d) {
          if (b[at + 1] === 0x0a) at++;
        } else if (e !== 0x0a) out.push(e);
      }
      return null;
    }
    if (c === 0x3c) {
      const close = this.buf.subarray(pos, this.parseEnd).indexOf(0x3e);
      if (close < 0) return null;
      const digits = this.buf.toString('latin1', pos + 1, pos + close).replace(/[^0-9a-fA-F]/g, '');
      return { value: new StringValue(Buffer.from(digits.length % 2 ? `${digits}0` : digits, 'hex')), end: pos + close + 1 };
    }
    let at = pos;
    while (at < this.parseEnd && isRegular(b[at])) at++;
    if (at === pos) return { value: new Keyword(String.fromCharCode(c)), end: pos + 1 }; // a stray delimiter
    const word = this.buf.toString('latin1', pos, at);
    if (/^[+-]?(\d+\.?\d*|\.\d+)$/.test(word)) {
      const num = Number(word);
      // `n g R` is a reference; look ahead without committing.
      if (/^\d+$/.test(word)) {
        const genAt = this.skipSpace(at);
        let genEnd = genAt;
        while (b[genEnd]! >= 0x30 && b[genEnd]! <= 0x39) genEnd++;
        if (genEnd > genAt && !isRegular(b[genEnd])) {
          const rAt = this.skipSpace(genEnd);
          if (b[rAt] === 0x52 && !isRegular(b[rAt + 1])) return { value: new Ref(num, Number(this.buf.toString('latin1', genAt, genEnd))), end: rAt + 1 };
        }
      }
      return { value: num, end: at };
    }
    if (word === 'true' || word === 'false') return { value: word === 'true', end: at };
    if (word === 'null') return { value: null, end: at };
    return { value: new Keyword(word), end: at };
  }
}
