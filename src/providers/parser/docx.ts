// DOCX to HTML for the local parser. The zip's central directory is read (yauzl) before anything
// inflates, and the sizes it declares are checked against the limits. Directories can lie, and
// JSZip (inside mammoth) trusts them until it has inflated everything, so mammoth never sees the
// upload: the XML parts are inflated here, each stopped as soon as it passes its declared size
// (yauzl's validateEntrySizes), and mammoth is handed a new archive, stored without compression,
// of exactly those verified bytes. Every other entry (images, fonts, embedded binaries) becomes
// an empty placeholder: the convertImage below never reads an image, and a part that a
// relationship points at but that is not XML would be refused by mammoth either way. So nothing
// mammoth or JSZip reads was not measured first, whatever the archive claims or hides.
import { crc32 } from 'node:zlib';
import mammoth from 'mammoth';
import yauzl from 'yauzl';
import { UnparseableDocumentError, type ParserLimits } from '../types.ts';
import { formatBytes, formatCount, limitExceeded } from './shared.ts';

/** Entries smaller than this are not held to the ratio limit: tiny parts compress wildly. */
const RATIO_MIN_BYTES = 1024 * 1024;

type DocxLimits = Pick<ParserLimits, 'docxMaxXmlBytes' | 'docxMaxCompressionRatio'>;

export async function docxToHtml(bytes: Buffer, limits: DocxLimits): Promise<string> {
  const parts = await readVerifiedParts(bytes, limits);
  try {
    const result = await mammoth.convertToHtml(
      { buffer: storedZip(parts) },
      // Images would arrive as base64 data URIs that bloat the markdown and embed nothing
      // useful; dropping their src makes the HTML converter skip them. The function does not
      // call the element's read(), so the (empty) image bytes are never asked for.
      { convertImage: mammoth.images.imgElement(async () => ({ src: '' })) },
    );
    return result.value;
  } catch (err) {
    throw unreadable(err);
  }
}

/** mammoth reads its parts as XML: word/document.xml, styles, numbering, relationships. */
function isXmlPart(name: string): boolean {
  return /\.(xml|rels)$/i.test(name);
}

async function readVerifiedParts(bytes: Buffer, limits: DocxLimits): Promise<Map<string, Buffer>> {
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.fromBufferPromise(bytes, { lazyEntries: true, validateEntrySizes: true });
  } catch (err) {
    throw unreadable(err);
  }
  const xml: yauzl.Entry[] = [];
  const others: string[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('entry', (entry: yauzl.Entry) => {
        if (isXmlPart(entry.fileName)) xml.push(entry);
        else if (!entry.fileName.endsWith('/')) others.push(entry.fileName);
        zip.readEntry();
      });
      zip.once('end', resolve);
      zip.once('error', reject);
      zip.readEntry();
    });
  } catch (err) {
    throw unreadable(err);
  }

  // The directory's word, before inflating a byte of it.
  const declared = xml.reduce((sum, e) => sum + e.uncompressedSize, 0);
  if (declared > limits.docxMaxXmlBytes) {
    throw limitExceeded('DOCX_MAX_XML_BYTES', `the DOCX's XML parts inflate to ${formatBytes(declared)}`, formatBytes(limits.docxMaxXmlBytes));
  }
  for (const entry of xml) {
    const ratio = entry.uncompressedSize / Math.max(1, entry.compressedSize);
    if (entry.uncompressedSize > RATIO_MIN_BYTES && ratio > limits.docxMaxCompressionRatio) {
      throw limitExceeded(
        'DOCX_MAX_COMPRESSION_RATIO',
        `DOCX entry ${entry.fileName} is compressed ${formatCount(Math.round(ratio * 10) / 10)}:1 (${formatBytes(entry.compressedSize)} inflating to ${formatBytes(entry.uncompressedSize)})`,
        `${formatCount(limits.docxMaxCompressionRatio)}:1 for entries over 1 MiB`,
      );
    }
  }

  const parts = new Map<string, Buffer>();
  for (const name of others) parts.set(name, Buffer.alloc(0));
  for (const entry of xml) parts.set(entry.fileName, await inflateEntry(zip, entry));
  return parts;
}

/** The entry's bytes; yauzl stops the stream once it passes the size the directory declared. */
async function inflateEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    const stream = await zip.openReadStreamPromise(entry);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      size += chunk.length;
      chunks.push(chunk);
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (/too many bytes|too few bytes/.test(message)) {
      throw new UnparseableDocumentError(
        `DOCX entry ${entry.fileName} does not inflate to the ${formatBytes(entry.uncompressedSize)} its zip directory declares (${message}): the archive is corrupt or forged`,
        { cause: err },
      );
    }
    throw unreadable(err);
  }
  return Buffer.concat(chunks, size);
}

/** A zip of `parts`, stored without compression, for mammoth (no zip64: the limit keeps it small). */
function storedZip(parts: Map<string, Buffer>): Buffer {
  const out: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [fileName, data] of parts) {
    const name = Buffer.from(fileName);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // names are UTF-8
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    const entry = Buffer.alloc(46);
    entry.writeUInt32LE(0x02014b50, 0);
    entry.writeUInt16LE(20, 4);
    entry.writeUInt16LE(20, 6);
    entry.writeUInt16LE(0x0800, 8);
    entry.writeUInt32LE(crc, 16);
    entry.writeUInt32LE(data.length, 20);
    entry.writeUInt32LE(data.length, 24);
    entry.writeUInt16LE(name.length, 28);
    entry.writeUInt32LE(offset, 42);
    out.push(local, name, data);
    central.push(entry, name);
    offset += local.length + name.length + data.length;
  }
  const centralSize = central.reduce((sum, b) => sum + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Math.min(parts.size, 0xffff), 8);
  end.writeUInt16LE(Math.min(parts.size, 0xffff), 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...out, ...central, end]);
}

function unreadable(err: unknown): UnparseableDocumentError {
  if (err instanceof UnparseableDocumentError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new UnparseableDocumentError(`DOCX could not be read: ${message}`, { cause: err });
}
