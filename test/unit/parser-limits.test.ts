// The local parser's limits: each hostile document is refused with the setting that bounds it,
// quickly and without doing the work first (the process's RSS barely moves), realistic documents
// pass at the defaults, and custom limits trip exactly at their boundary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLocalParser, PAGE_SEPARATOR } from '../../src/providers/parser/local.ts';
import { DEFAULT_PARSER_LIMITS, DocumentLimitError, UnparseableDocumentError, type MediaType, type ParserLimits } from '../../src/providers/types.ts';
import {
  docxBomb,
  docxLong,
  docxLyingSizes,
  docxWithMediaBomb,
  htmlNested,
  pdfManual,
  pdfWithDisguisedContent,
  pdfWithImageBomb,
  pdfWithInflatingStream,
  pdfWithPages,
  pdfWithType3ImageBomb,
  pdfEncrypted,
  pdfWithLenientFlate,
  pdfWithLzwStream,
} from '../hostile/bombs.ts';

const DOCX: MediaType = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';
const PDF: MediaType = 'application/pdf';
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const parser = createLocalParser();

/** The work a limit guards against would cost gigabytes and many seconds: a check before it costs neither. */
const MAX_RSS_GROWTH_MB = 150;

interface Measured<T> {
  result?: T;
  error?: unknown;
  ms: number;
  rssGrowthMb: number;
}

/** Runs `work`, sampling the process's RSS every 5 ms (and for `settleMs` after, for work pdf.js defers). */
async function measure<T>(work: () => Promise<T>, settleMs = 0): Promise<Measured<T>> {
  const before = process.memoryUsage.rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5);
  const started = performance.now();
  const out: Measured<T> = { ms: 0, rssGrowthMb: 0 };
  try {
    out.result = await work();
  } catch (err) {
    out.error = err;
  }
  out.ms = performance.now() - started;
  if (settleMs) await sleep(settleMs);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage.rss());
  out.rssGrowthMb = (peak - before) / 1e6;
  return out;
}

function assertRefused(m: Measured<unknown>, setting: string, message: RegExp, maxMs: number): void {
  assert.ok(m.error instanceof DocumentLimitError, `expected DocumentLimitError ${setting}, got ${String(m.error ?? 'success')}`);
  assert.equal(m.error.setting, setting, m.error.message);
  assert.equal(m.error.code, 'DOCUMENT_LIMIT_EXCEEDED');
  assert.match(m.error.message, message);
  assert.match(m.error.message, new RegExp(`${setting} raises it`));
  assertCheap(m, maxMs);
}

function assertCheap(m: Measured<unknown>, maxMs: number): void {
  assert.ok(m.ms < maxMs, `took ${m.ms.toFixed(0)} ms (limit ${maxMs})`);
  assert.ok(m.rssGrowthMb < MAX_RSS_GROWTH_MB, `RSS grew ${m.rssGrowthMb.toFixed(0)} MB`);
}

const withLimits = (limits: Partial<ParserLimits>) => createLocalParser({ ...DEFAULT_PARSER_LIMITS, ...limits });

// --- bombs at the default limits -------------------------------------------------------------

test('a PDF with 200,000 real pages: PDF_MAX_PAGES, before any page is extracted', async () => {
  const pdf = pdfWithPages(200_000);
  const m = await measure(() => parser.parse(pdf, PDF));
  assertRefused(m, 'PDF_MAX_PAGES', /PDF has 200,000 pages; the limit is 5,000 pages/, 8_000);
});

test('a 1 MB PDF whose content stream inflates to 1 GiB: PDF_MAX_STREAM_BYTES, nothing held', async () => {
  const pdf = await pdfWithInflatingStream(GiB);
  assert.ok(pdf.length < 1.2 * MiB, `${pdf.length} bytes`);
  const m = await measure(() => parser.parse(pdf, PDF));
  assertRefused(m, 'PDF_MAX_STREAM_BYTES', /stream object \d+ \(FlateDecode\) inflates to more than 64 MiB/, 3_000);
});

test('streams that each fit but together do not: PDF_MAX_INFLATED_BYTES', async () => {
  const pdf = await pdfWithInflatingStream(48 * MiB);
  const m = await measure(() => withLimits({ pdfMaxInflatedBytes: 32 * MiB }).parse(pdf, PDF));
  assertRefused(m, 'PDF_MAX_INFLATED_BYTES', /streams inflate to more than 32 MiB \(33,554,432 bytes\) together/, 3_000);
});

test('FlateDecode data zlib refuses but pdf.js inflates: the rest counts at 1032:1', async () => {
  // pdf.js alone: 256 KiB of it took 2.9 s and +131 MB; 1 MiB inflates to ~160 MiB.
  const pdf = pdfWithLenientFlate(MiB);
  const m = await measure(() => parser.parse(pdf, PDF));
  assertRefused(m, 'PDF_MAX_STREAM_BYTES', /could inflate to 1\.0 GiB .*: zlib cannot decode its FlateDecode data, so the rest counts at 1032:1/, 2_000);
});

test('an LZWDecode content stream of 79 KB that decodes to 100 MiB: PDF_MAX_STREAM_BYTES, decoded as pdf.js would', async () => {
  const pdf = pdfWithLzwStream(100 * MiB);
  assert.ok(pdf.length < 100_000, `${pdf.length} bytes`);
  const m = await measure(() => parser.parse(pdf, PDF));
  assertRefused(m, 'PDF_MAX_STREAM_BYTES', /stream object \d+ \(LZWDecode\) inflates to more than 64 MiB/, 3_000);
});

test('a content stream that calls itself an image is blanked, not inflated', async () => {
  // pdf.js decodes a page's content stream whatever its dictionary says; the scan does not count
  // images, so it blanks their data instead: the page decodes to nothing.
  const pdf = await pdfWithDisguisedContent(GiB);
  const m = await measure(() => parser.parse(pdf, PDF), 500);
  assert.ok(m.error instanceof UnparseableDocumentError, String(m.error));
  assert.match(m.error.message, /no extractable text/);
  assertCheap(m, 3_000);
});

test('an image XObject inflating to 1 GiB on a page of text: the text, the image never decoded', async () => {
  const pdf = pdfWithImageBomb(GiB);
  const m = await measure(() => parser.parse(pdf, PDF), 500);
  assert.ifError(m.error);
  assert.match(m.result!.markdown, /A page with a picture of the lamp room\./);
  assertCheap(m, 3_000);
});

test('a Type3 glyph painting a 1 GiB image: the text, the image never decoded (maxImageSize 0)', async () => {
  // Without maxImageSize, pdf.js decodes this image in the background after getTextContent
  // returns (RSS +630 MB and climbing in the experiment); hence the settle time.
  const pdf = pdfWithType3ImageBomb(GiB);
  const m = await measure(() => parser.parse(pdf, PDF), 1_000);
  assert.ifError(m.error);
  assert.match(m.result!.markdown, /The log is kept in a picture font\./);
  assertCheap(m, 4_000);
});

test('encrypted PDFs (RC4 40 and 128, AES-128, AES-256) with the empty user password: decrypted and measured', async () => {
  for (const revision of [2, 3, 4, 6] as const) {
    // 84 KiB of ciphertext: 84.5 MiB at deflate's worst case, over the limit, had it not been decrypted.
    const { markdown } = await parser.parse(pdfEncrypted(8000, { revision }), PDF);
    assert.match(markdown, /^Mercury fog every wound/, `revision ${revision}`);
    const bomb = pdfEncrypted(20, { revision, paddingBytes: GiB });
    const m = await measure(() => parser.parse(bomb, PDF));
    assertRefused(m, 'PDF_MAX_STREAM_BYTES', /stream object \d+ \(FlateDecode\) inflates to more than 64 MiB/, 3_000);
  }
});

test('an encrypted PDF the empty password does not open: pdf.js refuses it, and the scan counts worst cases', async () => {
  await assert.rejects(parser.parse(pdfEncrypted(20, { userPassword: 'lamp' }), PDF), /PDF is encrypted with a password/);
  const m = await measure(() => parser.parse(pdfEncrypted(8000, { userPassword: 'lamp' }), PDF));
  assertRefused(m, 'PDF_MAX_STREAM_BYTES', /could inflate to 84\.5 MiB .*: the file is encrypted and the scan cannot decrypt this stream .* count at the filters' worst case \(1032:1\)/, 2_000);
});

test('a DOCX whose document.xml inflates to 300 MiB (and one to 1.2 GiB): DOCX_MAX_XML_BYTES from the directory', async () => {
  for (const size of [300 * MiB, 1200 * MiB]) {
    const docx = await docxBomb(size);
    const m = await measure(() => parser.parse(docx, DOCX));
    assertRefused(m, 'DOCX_MAX_XML_BYTES', /XML parts inflate to [\d.]+ [MG]iB \([\d,]+ bytes\); the limit is 32 MiB/, 2_000);
  }
});

test('a DOCX within the XML limit but compressed 800:1: DOCX_MAX_COMPRESSION_RATIO', async () => {
  const docx = await docxBomb(24 * MiB);
  const m = await measure(() => parser.parse(docx, DOCX));
  assertRefused(m, 'DOCX_MAX_COMPRESSION_RATIO', /word\/document\.xml is compressed \d{3},?\d*(\.\d)?:1/, 2_000);
});

test('a DOCX whose zip directories understate the size: refused once it passes the declared size, nothing more inflated', async () => {
  const docx = await docxLyingSizes(GiB, 64 * 1024);
  const m = await measure(() => parser.parse(docx, DOCX));
  assert.ok(m.error instanceof UnparseableDocumentError, String(m.error));
  assert.match(m.error.message, /word\/document\.xml does not inflate to the 64 KiB .* its zip directory declares.*corrupt or forged/);
  assertCheap(m, 2_000);
});

test('a DOCX whose image entry is a 1 GiB zip bomb: the text, the image never inflated', async () => {
  const docx = await docxWithMediaBomb(GiB);
  const m = await measure(() => parser.parse(docx, DOCX));
  assert.ifError(m.error);
  assert.match(m.result!.markdown, /The lamp room, photographed\./);
  assertCheap(m, 2_000);
});

test('HTML nested 100,000 deep: HTML_MAX_DEPTH, no stack overflow', async () => {
  const m = await measure(() => parser.parse(Buffer.from(htmlNested(100_000)), 'text/html'));
  assertRefused(m, 'HTML_MAX_DEPTH', /nested more than 512 deep; the limit is 512 levels/, 3_000);
});

// --- realistic documents at the defaults -------------------------------------------------------

test('a 1,000-page PDF manual: every page extracted', async () => {
  const pdf = await pdfManual(1000);
  const { markdown, pages } = await parser.parse(pdf, PDF);
  assert.equal(pages, 1000);
  const parts = markdown.split(PAGE_SEPARATOR);
  assert.equal(parts.length, 1000);
  for (const [i, part] of parts.entries()) assert.match(part, new RegExp(`^Chapter ${i + 1}: servicing the lantern\\n`), `page ${i + 1}`);
});

test('a long DOCX (2,000 paragraphs, ~70 pages): every paragraph', async () => {
  // Not longer: node-html-markdown's time grows with the square of its output (2,000 paragraphs
  // take ~3 s to translate, 4,000 take ~10 s), whatever the limits.
  const docx = await docxLong(2000);
  const { markdown } = await parser.parse(docx, DOCX);
  assert.match(markdown, /^## Section 1$/m);
  assert.match(markdown, /^\*\*Entry 1\.\*\* /m);
  assert.match(markdown, /^\*\*Entry 2000\.\*\* /m);
  assert.equal(markdown.match(/^\*\*Entry \d+\.\*\*/gm)?.length, 2000);
});

test('HTML nested 512 deep converts at the default limit, within the default stack', async () => {
  const { markdown } = await parser.parse(Buffer.from(htmlNested(512)), 'text/html');
  assert.match(markdown, /The innermost keeper's note\./);
});

// --- custom limits trip exactly at the boundary ------------------------------------------------

test('PDF_MAX_PAGES: n pages pass at n, fail at n - 1', async () => {
  const pdf = pdfWithPages(12);
  const ok = await withLimits({ pdfMaxPages: 12 }).parse(pdf, PDF);
  assert.equal(ok.pages, 12);
  assert.match(ok.markdown, /Register page 12/);
  await assert.rejects(withLimits({ pdfMaxPages: 11 }).parse(pdf, PDF), (err: unknown) => {
    assert.ok(err instanceof DocumentLimitError);
    assert.equal(err.setting, 'PDF_MAX_PAGES');
    assert.match(err.message, /PDF has 12 pages; the limit is 11 pages \(PDF_MAX_PAGES raises it\)/);
    return true;
  });
});

test('PDF stream limits: a stream of n bytes passes at n, fails at n - 1 (one-call and streamed inflation)', async () => {
  // 1 MiB deflates to ~1 KB (inflated in one call); 20 MiB to ~20 KB (streamed).
  for (const size of [MiB + 7, 20 * MiB + 7]) {
    const pdf = await pdfWithInflatingStream(size);
    for (const [key, setting] of [
      ['pdfMaxStreamBytes', 'PDF_MAX_STREAM_BYTES'],
      ['pdfMaxInflatedBytes', 'PDF_MAX_INFLATED_BYTES'],
    ] as const) {
      const ok = await withLimits({ [key]: size }).parse(pdf, PDF);
      assert.match(ok.markdown, /Quarterly report of the Bell Rock light/);
      await assert.rejects(withLimits({ [key]: size - 1 }).parse(pdf, PDF), (err: unknown) => {
        assert.ok(err instanceof DocumentLimitError, String(err));
        assert.equal(err.setting, setting, err.message);
        return true;
      });
    }
  }
});

test('PDF_MAX_STREAM_BYTES for LZWDecode: a stream of n bytes passes at n, fails at n - 1', async () => {
  const pdf = pdfWithLzwStream(MiB);
  const size = MiB + 'BT /F1 12 Tf 72 720 Td (Logged in the old format.) Tj ET\n'.length;
  assert.match((await withLimits({ pdfMaxStreamBytes: size }).parse(pdf, PDF)).markdown, /Logged in the old format\./);
  await assert.rejects(withLimits({ pdfMaxStreamBytes: size - 1 }).parse(pdf, PDF), (err: unknown) => {
    assert.ok(err instanceof DocumentLimitError, String(err));
    assert.equal(err.setting, 'PDF_MAX_STREAM_BYTES');
    return true;
  });
});

test('DOCX_MAX_XML_BYTES: the XML parts pass at their size, fail a byte under', async () => {
  const docx = await docxBomb(2 * MiB);
  const xmlBytes = 2 * MiB + (await xmlFrameBytes());
  const ok = await withLimits({ docxMaxXmlBytes: xmlBytes, docxMaxCompressionRatio: 100_000 }).parse(docx, DOCX);
  assert.match(ok.markdown, /The keeper's log, continued\./);
  await assert.rejects(withLimits({ docxMaxXmlBytes: xmlBytes - 1, docxMaxCompressionRatio: 100_000 }).parse(docx, DOCX), (err: unknown) => {
    assert.ok(err instanceof DocumentLimitError, String(err));
    assert.equal(err.setting, 'DOCX_MAX_XML_BYTES');
    return true;
  });
});

test('DOCX_MAX_COMPRESSION_RATIO: an entry passes at its ratio, fails under it; entries up to 1 MiB are exempt', async () => {
  const docx = await docxBomb(2 * MiB);
  const ratio = await documentRatio(docx);
  await withLimits({ docxMaxCompressionRatio: Math.ceil(ratio) }).parse(docx, DOCX);
  await assert.rejects(withLimits({ docxMaxCompressionRatio: Math.floor(ratio) }).parse(docx, DOCX), (err: unknown) => {
    assert.ok(err instanceof DocumentLimitError, String(err));
    assert.equal(err.setting, 'DOCX_MAX_COMPRESSION_RATIO');
    assert.match(err.message, /the limit is \d+:1 for entries over 1 MiB \(DOCX_MAX_COMPRESSION_RATIO raises it\)/);
    return true;
  });
  // 1 MiB exactly, far more compressed than the limit: not held to it.
  await withLimits({ docxMaxCompressionRatio: 2 }).parse(await docxBomb(MiB), DOCX);
});

test('HTML_MAX_DEPTH: depth n passes at n, fails at n - 1', async () => {
  const html = Buffer.from(htmlNested(40));
  assert.match((await withLimits({ htmlMaxDepth: 40 }).parse(html, 'text/html')).markdown, /innermost/);
  await assert.rejects(withLimits({ htmlMaxDepth: 39 }).parse(html, 'text/html'), (err: unknown) => {
    assert.ok(err instanceof DocumentLimitError);
    assert.equal(err.setting, 'HTML_MAX_DEPTH');
    return true;
  });
});

test('HTML depth is the parsed tree: unclosed paragraphs and list items do not nest', async () => {
  const sloppy = `<html><body>${'<p>A paragraph left open.'.repeat(2000)}<ul>${'<li>an item'.repeat(2000)}</ul></body></html>`;
  const { markdown } = await withLimits({ htmlMaxDepth: 16 }).parse(Buffer.from(sloppy), 'text/html');
  assert.match(markdown, /A paragraph left open\./);
});

// --- helpers reading the generated archives ----------------------------------------------------

async function entries(docx: Buffer): Promise<Array<{ name: string; compressed: number; uncompressed: number }>> {
  const yauzl = (await import('yauzl')).default;
  const zip = await yauzl.fromBufferPromise(docx, { lazyEntries: true });
  const out: Array<{ name: string; compressed: number; uncompressed: number }> = [];
  await new Promise<void>((resolve, reject) => {
    zip.on('entry', (e: { fileName: string; compressedSize: number; uncompressedSize: number }) => {
      out.push({ name: e.fileName, compressed: e.compressedSize, uncompressed: e.uncompressedSize });
      zip.readEntry();
    });
    zip.once('end', resolve);
    zip.once('error', reject);
    zip.readEntry();
  });
  return out;
}

/** Bytes of the XML parts of a docxBomb other than document.xml. */
async function xmlFrameBytes(): Promise<number> {
  return (await entries(await docxBomb(MiB))).filter((e) => e.name !== 'word/document.xml').reduce((n, e) => n + e.uncompressed, 0);
}

async function documentRatio(docx: Buffer): Promise<number> {
  const doc = (await entries(docx)).find((e) => e.name === 'word/document.xml')!;
  return doc.uncompressed / doc.compressed;
}
