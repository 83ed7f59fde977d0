// PDF to text for the local parser: the stream scan (pdf-streams.ts) bounds what pdf.js may
// inflate, the page count is checked from the page tree before any page is extracted, and pages
// are then extracted one at a time, each released before the next, so memory follows the
// largest page rather than the whole document.
import { getDocumentProxy } from 'unpdf';
import { UnparseableDocumentError, type ParsedDocument, type ParserLimits } from '../types.ts';
import { preparePdfBytes } from './pdf-streams.ts';
import { formatCount, limitExceeded, normaliseNewlines, PAGE_SEPARATOR } from './shared.ts';

type PdfDocument = Awaited<ReturnType<typeof getDocumentProxy>>;

export async function parsePdf(bytes: Uint8Array, limits: ParserLimits): Promise<ParsedDocument> {
  return withPdf(bytes, limits, async (pdf) => {
    const pages: string[] = [];
    for (let n = 1; n <= pdf.numPages; n++) pages.push(normaliseNewlines(await pageText(pdf, n)).trim());
    if (pages.every((page) => page === '')) {
      throw new UnparseableDocumentError('PDF has no extractable text (scanned image?)');
    }
    return { markdown: pages.join(PAGE_SEPARATOR), pages: pdf.numPages };
  });
}

/**
 * The page count alone, from the page tree, under the same limits and without extracting a
 * page: what a remote parser will bill and how long it may take.
 */
export async function countPdfPages(bytes: Uint8Array, limits: ParserLimits): Promise<number> {
  return withPdf(bytes, limits, async (pdf) => pdf.numPages);
}

/** Opens the PDF with the stream limits applied and the page limit checked, runs `use`, releases it. */
async function withPdf<T>(bytes: Uint8Array, limits: ParserLimits, use: (pdf: PdfDocument) => Promise<T>): Promise<T> {
  const { data } = await preparePdfBytes(bytes, limits);
  let pdf: PdfDocument;
  try {
    pdf = await getDocumentProxy(data, {
      isEvalSupported: false,
      // pdf.js would otherwise print repair warnings for damaged files to stdout.
      verbosity: 0,
      // Text extraction needs no image, but pdf.js decodes (in the background, after
      // getTextContent has returned) every image a Type3 glyph paints: a 1 MB file made it
      // inflate a 1 GiB image. Any image larger than 0 pixels is dropped before decoding.
      maxImageSize: 0,
    });
  } catch (err) {
    throw new UnparseableDocumentError(describePdfError(err), { cause: err });
  }
  try {
    // numPages comes from the page tree (/Count, which pdf.js re-counts when the last page it
    // names is missing), before any page is parsed.
    if (pdf.numPages > limits.pdfMaxPages) {
      throw limitExceeded('PDF_MAX_PAGES', `PDF has ${formatCount(pdf.numPages)} pages`, `${formatCount(limits.pdfMaxPages)} pages`);
    }
    return await use(pdf);
  } finally {
    await pdf.destroy().catch(() => undefined);
  }
}

/** One page's text, built exactly as unpdf's extractText builds it, so outputs do not change. */
async function pageText(pdf: PdfDocument, pageNumber: number): Promise<string> {
  let page: Awaited<ReturnType<PdfDocument['getPage']>> | undefined;
  try {
    page = await pdf.getPage(pageNumber);
    const content = await page.getTextContent();
    return content.items
      .filter((item) => 'str' in item && item.str != null)
      .map((item) => {
        const text = item as { str: string; hasEOL?: boolean };
        return text.str + (text.hasEOL ? '\n' : '');
      })
      .join('');
  } catch (err) {
    throw new UnparseableDocumentError(describePdfError(err), { cause: err });
  } finally {
    page?.cleanup();
  }
}

function describePdfError(err: unknown): string {
  const name = (err as { name?: string } | null)?.name ?? '';
  const message = err instanceof Error ? err.message : String(err);
  if (name === 'PasswordException') return 'PDF is encrypted with a password';
  if (name === 'InvalidPDFException') return `PDF is corrupt or not a PDF: ${message}`;
  return `PDF could not be read: ${message}`;
}
