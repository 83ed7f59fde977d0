// Generators of the hostile documents that broke the local parser (and of the realistic ones the
// limits must let through). Deterministic, fast and small in memory: a compressed bomb is built
// from one compressed block repeated, never by compressing (or holding) its inflated size.
// Each returns the whole document as a Buffer (htmlNested: a string); the largest,
// pdfWithPages(200_000), is 45 MB. Sizes and times below were measured on the 2-core machine.
import { createCipheriv, createHash } from 'node:crypto';
import { constants, crc32, deflateRawSync, deflateSync } from 'node:zlib';
import { PDFDocument, StandardFonts } from 'pdf-lib';
import { Document, HeadingLevel, Packer, Paragraph, TextRun } from 'docx';

const MiB = 1024 * 1024;
const WORD_NS = 'http://schemas.openxmlformats.org/wordprocessingml/2006/main';

// --- prose -----------------------------------------------------------------------------------

const WORDS = (
  'the keeper climbed spiral stair at dusk to light lamp while fog rolled in from grey sea and ' +
  'ships far out on the sound waited for beam that swept across water every twenty seconds lens ' +
  'of polished glass turned on bath of mercury clockwork wound by hand through long winter nights'
).split(' ');

/** Deterministic prose: sentence `seed` of an endless lighthouse manual. */
function sentence(seed: number, words = 14): string {
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(WORDS[(seed * 31 + i * 17 + ((seed * i) % 7)) % WORDS.length]!);
  const text = out.join(' ');
  return `${text[0]!.toUpperCase()}${text.slice(1)}.`;
}

// --- deflate without the inflated bytes ---------------------------------------------------------

/**
 * Raw deflate of `prefix + unit * (repeat) + suffix` totalling exactly `size` bytes (the unit
 * repeated and cut to fit), plus the CRC-32 and Adler-32 of that data. One MiB of the repeated
 * unit is compressed once, sync-flushed so it ends byte-aligned and refers to nothing before it,
 * and that block is repeated: memory stays at a few MiB whatever `size` is.
 */
function deflatedRepeat(prefix: string, unit: string, suffix: string, size: number): { raw: Buffer; crc: number; adler: number } {
  const head = Buffer.from(prefix);
  const tail = Buffer.from(suffix);
  const bodySize = size - head.length - tail.length;
  if (bodySize < 0) throw new Error(`size ${size} is smaller than the document's frame`);
  const unitBytes = Buffer.from(unit);
  const chunk = Buffer.alloc(Math.floor(MiB / unitBytes.length) * unitBytes.length);
  for (let at = 0; at < chunk.length; at += unitBytes.length) unitBytes.copy(chunk, at);
  const whole = Math.floor(bodySize / chunk.length);
  // The remainder: whole units, then spaces, so the document stays well-formed at any size.
  const restSize = bodySize - whole * chunk.length;
  const restUnits = Math.floor(restSize / unitBytes.length) * unitBytes.length;
  const rest = Buffer.concat([chunk.subarray(0, restUnits), Buffer.alloc(restSize - restUnits, 0x20)]);

  const flush = { level: 9, finishFlush: constants.Z_SYNC_FLUSH };
  const chunkDeflated = deflateRawSync(chunk, flush);
  const parts = [deflateRawSync(head, flush)];
  for (let i = 0; i < whole; i++) parts.push(chunkDeflated);
  parts.push(deflateRawSync(rest, flush), deflateRawSync(tail, { level: 9 })); // the last one is the final block

  let crc = crc32(head);
  for (let i = 0; i < whole; i++) crc = crc32(chunk, crc);
  crc = crc32(tail, crc32(rest, crc));
  const chunkAdler = adler32(chunk);
  let adler = adler32(head);
  adler = adler32Combine(adler, adler32Repeat(chunkAdler, chunk.length, whole), chunk.length * whole);
  adler = adler32Combine(adler, adler32(rest), rest.length);
  adler = adler32Combine(adler, adler32(tail), tail.length);
  return { raw: Buffer.concat(parts), crc, adler };
}

/** zlib format (what PDF's FlateDecode reads): header, raw deflate, Adler-32. */
function zlibRepeat(prefix: string, unit: string, suffix: string, size: number): Buffer {
  const { raw, adler } = deflatedRepeat(prefix, unit, suffix, size);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32BE(adler);
  return Buffer.concat([Buffer.from([0x78, 0xda]), raw, trailer]);
}

const ADLER_BASE = 65521;

function adler32(data: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length; ) {
    const end = Math.min(i + 3800, data.length); // no overflow before the modulo
    for (; i < end; i++) {
      a += data[i]!;
      b += a;
    }
    a %= ADLER_BASE;
    b %= ADLER_BASE;
  }
  return ((b << 16) | a) >>> 0;
}

/** Adler-32 of A followed by B from adler(A), adler(B) and B's length (zlib's adler32_combine). */
function adler32Combine(adler1: number, adler2: number, len2: number): number {
  const rem = len2 % ADLER_BASE;
  let sum1 = adler1 & 0xffff;
  let sum2 = (rem * sum1) % ADLER_BASE;
  sum1 += (adler2 & 0xffff) + ADLER_BASE - 1;
  sum2 += ((adler1 >>> 16) & 0xffff) + ((adler2 >>> 16) & 0xffff) + ADLER_BASE - rem;
  sum1 %= ADLER_BASE;
  sum2 %= ADLER_BASE;
  return ((sum2 << 16) | sum1) >>> 0;
}

/** Adler-32 of `times` copies of a block of `length` bytes, by doubling. */
function adler32Repeat(blockAdler: number, length: number, times: number): number {
  let result = 1; // adler32 of nothing
  let power = blockAdler;
  let powerLength = length;
  for (let n = times; n > 0; n >>= 1) {
    if (n & 1) result = adler32Combine(result, power, powerLength);
    power = adler32Combine(power, power, powerLength);
    powerLength = (powerLength * 2) % ADLER_BASE; // adler32Combine only uses the length modulo BASE
  }
  return result;
}

// --- PDF ---------------------------------------------------------------------------------------

/** A minimal PDF writer: numbered objects, a classic xref table, a trailer. */
class RawPdf {
  private readonly parts: Buffer[] = [];
  // Text is gathered as latin1 strings and turned into Buffers in batches: far faster than a
  // Buffer per object when a document has 400,000 of them.
  private pending: string[] = ['%PDF-1.7\n%\xe2\xe3\xcf\xd3\n'];
  private length = this.pending[0]!.length;
  private readonly offsets: number[] = [];

  /** Reserves an object number, to refer to an object before it is written. */
  reserve(): number {
    this.offsets.push(-1);
    return this.offsets.length;
  }

  /** `stream`: binary data, or latin1 text. */
  write(num: number, body: string, stream?: Buffer | string): void {
    this.offsets[num - 1] = this.length;
    if (stream === undefined) {
      this.text(`${num} 0 obj\n${body}\nendobj\n`);
      return;
    }
    if (typeof stream === 'string') {
      this.text(`${num} 0 obj\n${body}\nstream\n${stream}\nendstream\nendobj\n`);
      return;
    }
    this.text(`${num} 0 obj\n${body}\nstream\n`);
    this.flush();
    this.parts.push(stream);
    this.length += stream.length;
    this.text('\nendstream\nendobj\n');
  }

  add(body: string, stream?: Buffer | string): number {
    const num = this.reserve();
    this.write(num, body, stream);
    return num;
  }

  /** `trailer`: more trailer entries, such as /Encrypt and /ID. */
  finish(root: number, trailer = ''): Buffer {
    const start = this.length;
    this.text(`xref\n0 ${this.offsets.length + 1}\n0000000000 65535 f \n`);
    for (const off of this.offsets) this.text(`${String(off).padStart(10, '0')} 00000 n \n`);
    this.text(`trailer\n<< /Size ${this.offsets.length + 1} /Root ${root} 0 R ${trailer}>>\nstartxref\n${start}\n%%EOF\n`);
    this.flush();
    return Buffer.concat(this.parts);
  }

  private text(s: string): void {
    this.pending.push(s);
    this.length += s.length; // latin1: one byte per character
    if (this.pending.length >= 4096) this.flush();
  }

  private flush(): void {
    this.parts.push(Buffer.from(this.pending.join(''), 'latin1'));
    this.pending = [];
  }
}

const HELVETICA = '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>';

/**
 * Reproduces "a 32 MB PDF with 200,000 real pages" (unpdf's extractText extracted every page at
 * once: RSS 7.9 GB, heap out of memory). Real pages, each with its own content stream and a
 * line of text, in a two-level page tree as producers write them. 200,000 pages: 44.7 MB, ~0.4 s.
 */
export function pdfWithPages(pages: number): Buffer {
  const pdf = new RawPdf();
  const catalog = pdf.reserve();
  const root = pdf.reserve();
  const font = pdf.add(HELVETICA);
  const perNode = 500;
  const nodes: number[] = [];
  for (let first = 1; first <= pages; first += perNode) {
    const node = pdf.reserve();
    nodes.push(node);
    const kids: number[] = [];
    for (let p = first; p < Math.min(first + perNode, pages + 1); p++) {
      const content = `BT/F1 12 Tf 72 720 Td(Register page ${p})Tj ET`;
      const contents = pdf.add(`<</Length ${content.length}>>`, content);
      kids.push(pdf.add(`<</Type/Page/Parent ${node} 0 R/Contents ${contents} 0 R>>`));
    }
    pdf.write(node, `<< /Type /Pages /Parent ${root} 0 R /Count ${kids.length} /Kids [${kids.map((k) => `${k} 0 R`).join(' ')}] >>`);
  }
  pdf.write(
    root,
    `<< /Type /Pages /Count ${pages} /Kids [${nodes.map((n) => `${n} 0 R`).join(' ')}] /MediaBox [0 0 612 792] ` +
      `/Resources << /Font << /F1 ${font} 0 R >> >> >>`,
  );
  pdf.write(catalog, `<< /Type /Catalog /Pages ${root} 0 R >>`);
  return pdf.finish(catalog);
}

/**
 * Reproduces "a 1 MB PDF whose content stream inflates to 1 GB" (today: ends ready, RSS +2 GB
 * kept, event loop stalled 2.9 s). One page: a line of real text, then `inflatedBytes` in all of
 * spaces, FlateDecode at deflate's best ratio (~1010:1). 1 GiB: a 1.06 MB file in ~0.25 s.
 */
export async function pdfWithInflatingStream(inflatedBytes: number): Promise<Buffer> {
  return pdfWithContentStream(inflatedBytes, '/Filter /FlateDecode');
}

/**
 * The same page with the bomb declared an image (`/Subtype /Image`) and also used as the page's
 * content stream: pdf.js decodes a content stream whatever its dictionary says, so a scan that
 * skips images by their declared subtype would be blind to this one.
 */
export async function pdfWithDisguisedContent(inflatedBytes: number): Promise<Buffer> {
  return pdfWithContentStream(inflatedBytes, '/Filter /FlateDecode /Type /XObject /Subtype /Image /Width 1 /Height 1 /BitsPerComponent 8 /ColorSpace /DeviceGray');
}

async function pdfWithContentStream(inflatedBytes: number, dictionary: string): Promise<Buffer> {
  const text = 'BT /F1 14 Tf 72 720 Td (Quarterly report of the Bell Rock light: all lamps lit.) Tj ET\n';
  const data = zlibRepeat(text, ' '.repeat(64), '\n', inflatedBytes);
  const pdf = new RawPdf();
  const font = pdf.add(HELVETICA);
  const contents = pdf.add(`<< /Length ${data.length} ${dictionary} >>`, data);
  const pages = pdf.reserve();
  const page = pdf.add(`<< /Type /Page /Parent ${pages} 0 R /Contents ${contents} 0 R >>`);
  pdf.write(pages, `<< /Type /Pages /Count 1 /Kids [${page} 0 R] /MediaBox [0 0 612 792] /Resources << /Font << /F1 ${font} 0 R >> >> >>`);
  return pdf.finish(pdf.add(`<< /Type /Catalog /Pages ${pages} 0 R >>`));
}

/**
 * A content stream zlib refuses but pdf.js inflates: its deflate data opens with a back-reference
 * to before the start of the output ("invalid distance too far back" for zlib; pdf.js reads
 * zeros and carries on), then repeats 258-byte matches in fixed Huffman codes (~159:1). A scan
 * that trusted zlib's answer would count nothing. `rawBytes` of deflate data: 1 MiB inflates to
 * ~160 MiB in pdf.js.
 */
export function pdfWithLenientFlate(rawBytes: number): Buffer {
  const out = Buffer.alloc(rawBytes + 16);
  let byte = 0;
  let bit = 0;
  let n = 2;
  out[0] = 0x78;
  out[1] = 0x01;
  const put = (code: number, length: number) => {
    for (let i = length - 1; i >= 0; i--) {
      // Huffman codes go most significant bit first, into bytes filled from their low bit.
      byte |= ((code >> i) & 1) << bit;
      if (++bit === 8) {
        out[n++] = byte;
        byte = bit = 0;
      }
    }
  };
  put(0b1, 1); // BFINAL
  put(0b10, 2); // BTYPE 01 (fixed codes), its bits reversed as single-bit fields
  while (n < rawBytes) {
    put(0b11000101, 8); // length code 285: 258 bytes
    put(0, 5); // distance code 0: distance 1
  }
  put(0, 7); // end of block
  if (bit) out[n++] = byte;
  const data = out.subarray(0, n);
  const pdf = new RawPdf();
  const font = pdf.add(HELVETICA);
  const text = pdf.add('<< /Length 62 >>', 'BT /F1 12 Tf 72 720 Td (The lamp was trimmed at dusk.) Tj ET  ');
  const bomb = pdf.add(`<< /Length ${data.length} /Filter /FlateDecode >>`, data);
  const pages = pdf.reserve();
  const page = pdf.add(`<< /Type /Page /Parent ${pages} 0 R /Contents [${text} 0 R ${bomb} 0 R] >>`);
  pdf.write(pages, `<< /Type /Pages /Count 1 /Kids [${page} 0 R] /MediaBox [0 0 612 792] /Resources << /Font << /F1 ${font} 0 R >> >> >>`);
  return pdf.finish(pdf.add(`<< /Type /Catalog /Pages ${pages} 0 R >>`));
}

/**
 * A one-page PDF whose content stream is LZWDecode (as 1990s producers wrote them): a line of
 * text, then `paddingBytes` spaces, which LZW codes in sequences growing by one byte per code
 * (1 MiB of spaces in ~2 KB, 100 MiB in 79 KB, ~1 s). EarlyChange 1, the default.
 */
export function pdfWithLzwStream(paddingBytes: number): Buffer {
  function* plain(): Generator<Buffer> {
    yield Buffer.from('BT /F1 12 Tf 72 720 Td (Logged in the old format.) Tj ET\n');
    const spaces = Buffer.alloc(64 * 1024, 0x20);
    for (let left = paddingBytes; left > 0; left -= spaces.length) yield spaces.subarray(0, Math.min(left, spaces.length));
  }
  const data = lzwEncode(plain());
  const pdf = new RawPdf();
  const font = pdf.add(HELVETICA);
  const contents = pdf.add(`<< /Length ${data.length} /Filter /LZWDecode >>`, data);
  const pages = pdf.reserve();
  const page = pdf.add(`<< /Type /Page /Parent ${pages} 0 R /Contents ${contents} 0 R >>`);
  pdf.write(pages, `<< /Type /Pages /Count 1 /Kids [${page} 0 R] /MediaBox [0 0 612 792] /Resources << /Font << /F1 ${font} 0 R >> >> >>`);
  return pdf.finish(pdf.add(`<< /Type /Catalog /Pages ${pages} 0 R >>`));
}

/** PDF's LZW (EarlyChange 1): a clear code first, 9 to 12-bit codes, a new table when full. */
function lzwEncode(chunks: Iterable<Buffer>): Buffer {
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  let width = 9;
  const emit = (code: number) => {
    acc = (acc << width) | code;
    bits += width;
    while (bits >= 8) {
      bits -= 8;
      out.push((acc >>> bits) & 0xff);
    }
    acc &= (1 << bits) - 1;
  };
  // The table as a trie: child[code * 256 + byte] is the code of (code's string + byte), or 0.
  const child = new Uint16Array(4096 * 256);
  let next = 258;
  emit(256);
  let w = -1;
  for (const data of chunks) {
    for (const byte of data) {
      if (w < 0) {
        w = byte;
        continue;
      }
      const known = child[w * 256 + byte]!;
      if (known) {
        w = known;
        continue;
      }
      emit(w);
      child[w * 256 + byte] = next++;
      w = byte;
      // The decoder adds each entry a code later, and EarlyChange widens its codes one entry
      // early: together, the encoder widens when its next entry reaches a power of two.
      if (next >= 4094) {
        emit(256);
        child.fill(0);
        next = 258;
        width = 9;
      } else if (next === 1 << width) width++;
    }
  }
  if (w >= 0) emit(w);
  if (++next === 1 << width && width < 12) width++; // the decoder adds an entry for the last code too
  emit(257);
  if (bits > 0) out.push((acc << (8 - bits)) & 0xff);
  return Buffer.from(out);
}

/**
 * A one-page PDF with ordinary text and an image XObject whose FlateDecode data inflates to
 * `inflatedBytes` (declared as a grey image of that many pixels), drawn on the page. The
 * experiment behind skipping images in the stream scan: getTextContent never decodes it.
 */
export function pdfWithImageBomb(inflatedBytes: number): Buffer {
  const width = 16384;
  const height = Math.ceil(inflatedBytes / width);
  const data = zlibRepeat('', '\0'.repeat(64), '', width * height);
  const pdf = new RawPdf();
  const font = pdf.add(HELVETICA);
  const image = pdf.add(
    `<< /Type /XObject /Subtype /Image /Width ${width} /Height ${height} /ColorSpace /DeviceGray /BitsPerComponent 8 ` +
      `/Filter /FlateDecode /Length ${data.length} >>`,
    data,
  );
  const content = 'q 200 0 0 200 72 400 cm /Im1 Do Q BT /F1 12 Tf 72 720 Td (A page with a picture of the lamp room.) Tj ET';
  const contents = pdf.add(`<< /Length ${content.length} >>`, content);
  const pages = pdf.reserve();
  const page = pdf.add(`<< /Type /Page /Parent ${pages} 0 R /Contents ${contents} 0 R >>`);
  pdf.write(
    pages,
    `<< /Type /Pages /Count 1 /Kids [${page} 0 R] /MediaBox [0 0 612 792] ` +
      `/Resources << /Font << /F1 ${font} 0 R >> /XObject << /Im1 ${image} 0 R >> >> >>`,
  );
  return pdf.finish(pdf.add(`<< /Type /Catalog /Pages ${pages} 0 R >>`));
}

/**
 * A page whose text is set in a Type3 font whose one glyph paints an image XObject: a 16384 x
 * ceil(n / 16384) grey image whose FlateDecode data inflates to `inflatedBytes`. getTextContent
 * runs a Type3 glyph's procedure, and that decodes the images it paints: the image case the
 * parser must neutralise.
 */
export function pdfWithType3ImageBomb(inflatedBytes: number): Buffer {
  const width = 16384;
  const height = Math.ceil(inflatedBytes / width);
  const data = zlibRepeat('', '\0'.repeat(64), '', width * height);
  const pdf = new RawPdf();
  const font = pdf.add(HELVETICA);
  const image = pdf.add(
    `<< /Type /XObject /Subtype /Image /Width ${width} /Height ${height} /ColorSpace /DeviceGray /BitsPerComponent 8 ` +
      `/Filter /FlateDecode /Length ${data.length} >>`,
    data,
  );
  const glyph = pdf.add('<< >>', '1000 0 0 0 1000 1000 d1 q 1000 0 0 1000 0 0 cm /Im1 Do Q');
  const type3 = pdf.add(
    `<< /Type /Font /Subtype /Type3 /FontBBox [0 0 1000 1000] /FontMatrix [0.001 0 0 0.001 0 0] /CharProcs << /a ${glyph} 0 R >> ` +
      `/Encoding << /Type /Encoding /Differences [97 /a] >> /FirstChar 97 /LastChar 97 /Widths [1000] ` +
      `/Resources << /XObject << /Im1 ${image} 0 R >> >> >>`,
  );
  const content = 'BT /T3 12 Tf 72 760 Td (aaa) Tj ET BT /F1 12 Tf 72 720 Td (The log is kept in a picture font.) Tj ET';
  const contents = pdf.add(`<< /Length ${content.length} >>`, content);
  const pages = pdf.reserve();
  const page = pdf.add(`<< /Type /Page /Parent ${pages} 0 R /Contents ${contents} 0 R >>`);
  pdf.write(
    pages,
    `<< /Type /Pages /Count 1 /Kids [${page} 0 R] /MediaBox [0 0 612 792] /Resources << /Font << /F1 ${font} 0 R /T3 ${type3} 0 R >> >> >>`,
  );
  return pdf.finish(pdf.add(`<< /Type /Catalog /Pages ${pages} 0 R >>`));
}

export interface EncryptionOptions {
  /** Standard security handler revision: 2 (RC4 40-bit), 3 (RC4 128-bit), 4 (AES-128), 6 (AES-256). */
  revision?: 2 | 3 | 4 | 6;
  /** Empty by default, as in most "protected" PDFs: anyone can open them, pdf.js included. */
  userPassword?: string;
  /** Spaces after the text in the content stream, FlateDecode: an encrypted bomb. */
  paddingBytes?: number;
}

/**
 * A PDF encrypted as most "protected" PDFs are: an owner password, an empty user password, the
 * standard security handler at `revision`. One page whose FlateDecode content stream shows
 * `lines` lines of text (8,000 lines: 84 KiB of ciphertext inflating to 0.6 MB). Deterministic
 * (fixed IVs and salts).
 */
export function pdfEncrypted(lines: number, options: EncryptionOptions = {}): Buffer {
  const { revision = 2, userPassword = '', paddingBytes = 0 } = options;
  const id = Buffer.from('d0c7b7e3a1f24b5c9e8d7f6a5b4c3d2e', 'hex');
  const permissions = -44;
  const text = Array.from({ length: lines }, (_, i) => `BT /F1 9 Tf 40 ${780 - (i % 80) * 9} Td (${sentence(i + 3)}) Tj ET`).join('\n');
  const plain = paddingBytes > 0 ? zlibRepeat(`${text}\n`, ' '.repeat(64), '\n', text.length + 2 + paddingBytes) : deflateSync(Buffer.from(text));
  const security = standardSecurity(revision, userPassword, 'owner-secret', permissions, id);

  const pdf = new RawPdf();
  const font = pdf.add(HELVETICA);
  const contents = pdf.reserve();
  const data = security.encrypt(contents, plain);
  pdf.write(contents, `<< /Length ${data.length} /Filter /FlateDecode >>`, data);
  const pages = pdf.reserve();
  const page = pdf.add(`<< /Type /Page /Parent ${pages} 0 R /Contents ${contents} 0 R >>`);
  pdf.write(pages, `<< /Type /Pages /Count 1 /Kids [${page} 0 R] /MediaBox [0 0 612 792] /Resources << /Font << /F1 ${font} 0 R >> >> >>`);
  const catalog = pdf.add(`<< /Type /Catalog /Pages ${pages} 0 R >>`);
  const encrypt = pdf.add(security.dictionary);
  return pdf.finish(catalog, `/Encrypt ${encrypt} 0 R /ID [<${id.toString('hex')}> <${id.toString('hex')}>] `);
}

const PASSWORD_PAD = Buffer.from('28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a', 'hex');

/** The encryption side of the standard security handler (ISO 32000-2 7.6.4), for test files. */
function standardSecurity(revision: 2 | 3 | 4 | 6, user: string, owner: string, permissions: number, id: Buffer): { dictionary: string; encrypt(num: number, data: Buffer): Buffer } {
  const md5 = (...parts: Buffer[]) => createHash('md5').update(Buffer.concat(parts)).digest();
  const hex = (b: Buffer) => `<${b.toString('hex')}>`;
  const p = Buffer.alloc(4);
  p.writeInt32LE(permissions);
  const iv = (num: number) => md5(Buffer.from(`iv ${num}`)); // deterministic, as a test file should be
  const aesCbc = (key: Buffer, ivBytes: Buffer, data: Buffer, padding = true) => {
    const cipher = createCipheriv(key.length === 32 ? 'aes-256-cbc' : 'aes-128-cbc', key, ivBytes);
    cipher.setAutoPadding(padding);
    return Buffer.concat([cipher.update(data), cipher.final()]);
  };

  if (revision === 6) {
    const fileKey = md5(Buffer.from('file key a')).subarray(0, 16);
    const key = Buffer.concat([fileKey, md5(Buffer.from('file key b'))]);
    const [uvs, uks, ovs, oks] = ['uvs', 'uks', 'ovs', 'oks'].map((salt) => md5(Buffer.from(salt)).subarray(0, 8)) as [Buffer, Buffer, Buffer, Buffer];
    const pw = (s: string) => Buffer.from(s, 'utf8').subarray(0, 127);
    const u = Buffer.concat([hashR6(pw(user), uvs, Buffer.alloc(0)), uvs, uks]);
    const ue = aesCbc(hashR6(pw(user), uks, Buffer.alloc(0)), Buffer.alloc(16), key, false);
    const o = Buffer.concat([hashR6(pw(owner), ovs, u), ovs, oks]);
    const oe = aesCbc(hashR6(pw(owner), oks, u), Buffer.alloc(16), key, false);
    const permsBlock = Buffer.concat([p, Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from('Tadb'), Buffer.from('0000')]);
    const ecb = createCipheriv('aes-256-ecb', key, null);
    ecb.setAutoPadding(false);
    const perms = Buffer.concat([ecb.update(permsBlock), ecb.final()]);
    return {
      dictionary:
        `<< /Filter /Standard /V 5 /R 6 /Length 256 /CF << /StdCF << /CFM /AESV3 /AuthEvent /DocOpen /Length 32 >> >> /StmF /StdCF /StrF /StdCF ` +
        `/O ${hex(o)} /U ${hex(u)} /OE ${hex(oe)} /UE ${hex(ue)} /P ${permissions} /Perms ${hex(perms)} >>`,
      encrypt: (num, data) => Buffer.concat([iv(num), aesCbc(key, iv(num), data)]),
    };
  }

  const length = revision === 2 ? 5 : 16;
  const padded = (s: string) => Buffer.concat([Buffer.from(s, 'latin1'), PASSWORD_PAD]).subarray(0, 32);
  // /O: the padded user password, encrypted with a key from the owner password.
  let ownerKey = md5(padded(owner));
  if (revision >= 3) for (let i = 0; i < 50; i++) ownerKey = md5(ownerKey);
  ownerKey = ownerKey.subarray(0, length);
  let o = rc4(ownerKey, padded(user));
  if (revision >= 3) for (let i = 1; i <= 19; i++) o = rc4(ownerKey.map((b) => b ^ i), o);
  // The file key, from the user password, /O, /P and the /ID.
  let key = md5(padded(user), o, p, id);
  if (revision >= 3) for (let i = 0; i < 50; i++) key = md5(key.subarray(0, length));
  key = key.subarray(0, length);
  let u: Buffer;
  if (revision === 2) u = rc4(key, PASSWORD_PAD);
  else {
    u = rc4(key, md5(PASSWORD_PAD, id));
    for (let i = 1; i <= 19; i++) u = rc4(key.map((b) => b ^ i), u);
    u = Buffer.concat([u, Buffer.alloc(16)]);
  }
  const objectKey = (num: number, aes: boolean) =>
    md5(key, Buffer.from([num & 0xff, (num >> 8) & 0xff, (num >> 16) & 0xff, 0, 0]), aes ? Buffer.from('sAlT') : Buffer.alloc(0)).subarray(0, Math.min(length + 5, 16));
  const common = `/O ${hex(o)} /U ${hex(u)} /P ${permissions}`;
  if (revision === 4) {
    return {
      dictionary: `<< /Filter /Standard /V 4 /R 4 /Length 128 /CF << /StdCF << /CFM /AESV2 /AuthEvent /DocOpen /Length 16 >> >> /StmF /StdCF /StrF /StdCF ${common} >>`,
      encrypt: (num, data) => Buffer.concat([iv(num), aesCbc(objectKey(num, true), iv(num), data)]),
    };
  }
  return {
    dictionary: `<< /Filter /Standard /V ${revision === 2 ? 1 : 2} /R ${revision} /Length ${length * 8} ${common} >>`,
    encrypt: (num, data) => rc4(objectKey(num, false), data),
  };
}

/** ISO 32000-2 algorithm 2.B (revision 6's password hash). */
function hashR6(password: Buffer, salt: Buffer, userKey: Buffer): Buffer {
  let k = createHash('sha256').update(Buffer.concat([password, salt, userKey])).digest();
  let e = Buffer.alloc(1);
  for (let round = 0; round < 64 || e.at(-1)! > round - 32; round++) {
    const k1 = Buffer.concat(new Array<Buffer>(64).fill(Buffer.concat([password, k, userKey])));
    const cipher = createCipheriv('aes-128-cbc', k.subarray(0, 16), k.subarray(16, 32));
    cipher.setAutoPadding(false);
    e = Buffer.concat([cipher.update(k1), cipher.final()]);
    let sum = 0;
    for (let i = 0; i < 16; i++) sum += e[i]!;
    k = createHash(['sha256', 'sha384', 'sha512'][sum % 3]!).update(e).digest();
  }
  return k.subarray(0, 32);
}

function rc4(key: Uint8Array, data: Uint8Array): Buffer {
  const s = Uint8Array.from({ length: 256 }, (_, i) => i);
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + s[i]! + key[i % key.length]!) & 0xff;
    [s[i], s[j]] = [s[j]!, s[i]!];
  }
  const out = Buffer.alloc(data.length);
  for (let k = 0, i = 0, j = 0; k < data.length; k++) {
    i = (i + 1) & 0xff;
    j = (j + s[i]!) & 0xff;
    [s[i], s[j]] = [s[j]!, s[i]!];
    out[k] = data[k]! ^ s[(s[i]! + s[j]!) & 0xff]!;
  }
  return out;
}

/**
 * A realistic long document for the "real documents pass" checks: a manual of `pages` pages,
 * each a heading and six paragraphs of prose (about 3 KB of text), written by pdf-lib with its
 * defaults (FlateDecode content streams, object and cross-reference streams). Page n's heading
 * is "Chapter n: ...". 1,000 pages: 1.3 MB in ~1.6 s (6 MB of inflated streams).
 */
export async function pdfManual(pages: number): Promise<Buffer> {
  const doc = await PDFDocument.create();
  const font = await doc.embedFont(StandardFonts.TimesRoman);
  const bold = await doc.embedFont(StandardFonts.TimesRomanBold);
  for (let p = 1; p <= pages; p++) {
    const page = doc.addPage([595, 842]);
    page.drawText(`Chapter ${p}: servicing the lantern`, { x: 56, y: 780, size: 16, font: bold });
    for (let para = 0; para < 6; para++) {
      const lines = Array.from({ length: 6 }, (_, line) => sentence(p * 100 + para * 10 + line, 12));
      page.drawText(lines.join('\n'), { x: 56, y: 750 - para * 88, size: 10, lineHeight: 13, font });
    }
  }
  const epoch = new Date('2024-01-01T00:00:00Z');
  doc.setCreationDate(epoch);
  doc.setModificationDate(epoch);
  return Buffer.from(await doc.save());
}

// --- logs ------------------------------------------------------------------------------------

const LEVELS = ['INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'ERROR'];
const SERVICES = ['api', 'worker', 'webhook', 'scheduler', 'billing', 'auth'];
const MESSAGES = [
  'request completed',
  'connection pool exhausted, waiting for a free connection',
  'job finished',
  'retrying after upstream timeout',
  'cache miss for key',
  'user session refreshed',
  'payment webhook received',
  'slow query detected',
];

/** About `bytes` of an application log: timestamps, levels, ids, key=value pairs, one event per line. */
export function realLog(bytes: number): string {
  let state = 42;
  const next = (n: number) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
  const lines: string[] = [];
  let size = 0;
  let ms = Date.UTC(2026, 10, 1);
  while (size < bytes) {
    ms += next(2_000);
    const line =
      `${new Date(ms).toISOString()} ${LEVELS[next(LEVELS.length)]} [${SERVICES[next(SERVICES.length)]}] ` +
      `${MESSAGES[next(MESSAGES.length)]} request_id=${next(0xffffff).toString(16).padStart(6, '0')}-${next(0xffff).toString(16)} ` +
      `user=${next(100_000)} duration_ms=${next(5_000)} status=${[200, 200, 201, 204, 400, 404, 500][next(7)]} path=/v1/items/${next(10_000)}`;
    lines.push(line);
    size += line.length + 1;
  }
  return lines.join('\n') + '\n';
}

// --- DOCX --------------------------------------------------------------------------------------

const CONTENT_TYPES =
  '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' +
  '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">' +
  '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>' +
  '<Default Extension="xml" ContentType="application/xml"/>' +
  '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>' +
  '</Types>';
const ROOT_RELS =
  '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' +
  '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' +
  '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>' +
  '</Relationships>';
const DOCUMENT_HEAD = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<w:document xmlns:w="${WORD_NS}"><w:body>`;
const DOCUMENT_TAIL = '</w:body></w:document>';

interface ZipEntry {
  name: string;
  /** Raw deflate data (method 8), or the bytes stored as they are (method 0). */
  data: Buffer;
  method: 0 | 8;
  crc: number;
  uncompressedSize: number;
  /** What the directories claim, when it is a lie. */
  declaredSize?: number;
}

function deflatedEntry(name: string, text: string): ZipEntry {
  const bytes = Buffer.from(text);
  return { name, data: deflateRawSync(bytes), method: 8, crc: crc32(bytes), uncompressedSize: bytes.length };
}

/** A zip archive of `entries` (no zip64: every size here is under 4 GiB). */
function zip(entries: ZipEntry[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const size = e.declaredSize ?? e.uncompressedSize;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(e.method, 8);
    local.writeUInt32LE(0x00210000, 10); // 1980-01-01 00:00
    local.writeUInt32LE(e.crc, 14);
    local.writeUInt32LE(e.data.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(e.method, 10);
    central.writeUInt32LE(0x00210000, 12);
    central.writeUInt32LE(e.crc, 16);
    central.writeUInt32LE(e.data.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, e.data);
    centrals.push(central, name);
    offset += local.length + name.length + e.data.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, ...centrals, end]);
}

/** word/document.xml of exactly `size` bytes: paragraphs of one repeated sentence. */
function bombDocumentEntry(size: number): ZipEntry {
  // A long run of one short word per paragraph: its repeats are 4 bytes apart, which deflate
  // codes without extra bits, ~1000:1 (a repeated sentence would only reach ~250:1).
  const unit = `<w:p><w:r><w:t xml:space="preserve">${'lit '.repeat(4000)}</w:t></w:r></w:p>`;
  const { raw, crc } = deflatedRepeat(`${DOCUMENT_HEAD}<w:p><w:r><w:t>The keeper's log, continued.</w:t></w:r></w:p>`, unit, DOCUMENT_TAIL, size);
  return { name: 'word/document.xml', data: raw, method: 8, crc, uncompressedSize: size };
}

/**
 * Reproduces "a 610 KB DOCX whose word/document.xml inflates to 300 MB" (heap out of memory
 * after 30 s) and "a 1.2 MB DOCX inflating to 1.2 GB" (RSS up to 2.9 GB): a structurally valid
 * DOCX ([Content_Types].xml, _rels/.rels, word/document.xml of `xmlInflatedBytes` bytes of
 * paragraphs) with honest sizes and CRCs. ~860:1: 300 MiB in a 367 KB file (~0.1 s), 1.2 GiB
 * in 1.46 MB (~0.25 s).
 */
export async function docxBomb(xmlInflatedBytes: number): Promise<Buffer> {
  return zip([deflatedEntry('[Content_Types].xml', CONTENT_TYPES), deflatedEntry('_rels/.rels', ROOT_RELS), bombDocumentEntry(xmlInflatedBytes)]);
}

/**
 * A DOCX whose zip directories lie: word/document.xml declares `declaredBytes` (small, within
 * every limit) but inflates to `inflatedBytes`. A reader that trusts the central directory (as
 * JSZip does until it has inflated everything) inflates it all.
 */
export async function docxLyingSizes(inflatedBytes = 1024 * MiB, declaredBytes = 64 * 1024): Promise<Buffer> {
  const document = { ...bombDocumentEntry(inflatedBytes), declaredSize: declaredBytes };
  return zip([deflatedEntry('[Content_Types].xml', CONTENT_TYPES), deflatedEntry('_rels/.rels', ROOT_RELS), document]);
}

/**
 * A DOCX with ordinary text and an image whose media entry is a zip bomb (`mediaInflatedBytes`
 * of zeros, ~1000:1). With images dropped, the parser must never inflate it.
 */
export async function docxWithMediaBomb(mediaInflatedBytes: number): Promise<Buffer> {
  const contentTypes = CONTENT_TYPES.replace('<Default Extension="xml"', '<Default Extension="png" ContentType="image/png"/><Default Extension="xml"');
  const documentRels =
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' +
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">' +
    '<Relationship Id="rIdImg" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image" Target="media/lamp.png"/>' +
    '</Relationships>';
  const drawing =
    '<w:drawing><wp:inline xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"><wp:docPr id="1" name="lamp" descr="the lamp"/>' +
    '<a:graphic xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">' +
    '<pic:pic xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture"><pic:blipFill>' +
    '<a:blip xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" r:embed="rIdImg"/>' +
    '</pic:blipFill></pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing>';
  const document = `${DOCUMENT_HEAD}<w:p><w:r><w:t>The lamp room, photographed.</w:t></w:r></w:p><w:p><w:r>${drawing}</w:r></w:p>${DOCUMENT_TAIL}`;
  const { raw, crc } = deflatedRepeat('', '\0'.repeat(64), '', mediaInflatedBytes);
  return zip([
    deflatedEntry('[Content_Types].xml', contentTypes),
    deflatedEntry('_rels/.rels', ROOT_RELS),
    deflatedEntry('word/document.xml', document),
    deflatedEntry('word/_rels/document.xml.rels', documentRels),
    { name: 'word/media/lamp.png', data: raw, method: 8, crc, uncompressedSize: mediaInflatedBytes },
  ]);
}

/**
 * A realistic long DOCX for the "real documents pass" checks, written by the docx package: a
 * heading every 25 paragraphs, each paragraph four sentences (about 330 characters), with some
 * bold runs. Paragraph n starts "Entry n.". 2,000 paragraphs: 0.9 MB of document.xml in a 54 KB
 * zip (~0.2 s); 20,000: 9.1 MB in 441 KB (~1.3 s). Compressed ~20:1.
 */
export async function docxLong(paragraphs: number): Promise<Buffer> {
  const children: Paragraph[] = [];
  for (let n = 1; n <= paragraphs; n++) {
    if (n % 25 === 1) children.push(new Paragraph({ heading: HeadingLevel.HEADING_2, children: [new TextRun(`Section ${Math.ceil(n / 25)}`)] }));
    children.push(
      new Paragraph({
        children: [
          new TextRun({ text: `Entry ${n}. `, bold: true }),
          new TextRun(`${sentence(n)} ${sentence(n + 1)} ${sentence(n + 2)} ${sentence(n + 3)}`),
        ],
      }),
    );
  }
  const doc = new Document({ creator: 'docpipe tests', title: 'The keepers log', sections: [{ children }] });
  return Packer.toBuffer(doc);
}

// --- HTML --------------------------------------------------------------------------------------

/**
 * Reproduces "HTML nested 100,000 deep" (node-html-markdown recursed into a stack overflow).
 * `depth` counts every element on the path to the innermost one, <html> and <body> included,
 * so htmlNested(512) is exactly as deep as HTML_MAX_DEPTH allows by default. Closed properly:
 * an unclosed chain is flattened by the HTML parser and would not be deep at all.
 */
export function htmlNested(depth: number): string {
  if (depth < 3) throw new Error('depth counts <html> and <body>: at least 3');
  const inner = depth - 2;
  return `<!DOCTYPE html>\n<html><body>${'<div>'.repeat(inner)}The innermost keeper's note.${'</div>'.repeat(inner)}</body></html>\n`;
}
