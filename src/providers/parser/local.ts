// In-process parser: turns every supported media type into markdown without a network
// call, so development, tests and deployments without a LlamaParse key still run the whole
// pipeline. It trades fidelity for independence (no OCR, no layout analysis: a scanned PDF
// has no text for it). Failures that retrying cannot fix (corrupt, encrypted or text-less
// documents) surface as UnparseableDocumentError so the pipeline fails the document at once.
import mammoth from 'mammoth';
import { NodeHtmlMarkdown } from 'node-html-markdown';
import { extractText, getDocumentProxy } from 'unpdf';
import { UnparseableDocumentError, type MediaType, type ParsedDocument, type SyncParser } from '../types.ts';

/** The separator LlamaParse puts between pages, so both parsers' output chunks alike. */
export const PAGE_SEPARATOR = '\n\n---\n\n';

const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';

export function createLocalParser(): SyncParser {
  const htmlToMarkdown = new NodeHtmlMarkdown(
    {
      maxConsecutiveNewlines: 2,
      // The library's default pattern lacks a group around its alternatives, so its "1. "
      // (ordered-list) escape fires mid-line and every "in 1822. The" becomes "1822\. The",
      // noise in every chunk and embedding. Same pattern, with the line anchor applied to both.
      lineStartEscape: [/^(\s*?)(?:((?:\+\s)|(?:[=>-])|(?:#{1,6}\s))|(\d+)(\.\s))/gm, '$1$3\\$2$4'],
    },
    undefined,
    undefined,
  );

  function fromHtml(html: string): string {
    return normaliseNewlines(htmlToMarkdown.translate(html)).trim();
  }

  return {
    kind: 'local',
    mode: 'sync',

    async parse(bytes: Buffer, mediaType: MediaType): Promise<ParsedDocument> {
      switch (mediaType) {
        case 'text/plain':
        case 'text/markdown':
          return { markdown: requireText(normaliseNewlines(decodeUtf8(bytes)), 'document has no text'), pages: 1 };
        case 'text/html':
          return { markdown: requireText(fromHtml(decodeUtf8(bytes)), 'HTML document has no text'), pages: 1 };
        case 'application/pdf':
          return parsePdf(bytes);
        case DOCX:
          return { markdown: requireText(fromHtml(await docxToHtml(bytes)), 'DOCX document has no text'), pages: 1 };
        default:
          throw new UnparseableDocumentError(`unsupported media type: ${String(mediaType)}`);
      }
    },
  };
}

const utf8 = new TextDecoder('utf-8'); // strips a leading BOM; invalid bytes become U+FFFD

function decodeUtf8(bytes: Buffer): string {
  return utf8.decode(bytes);
}

function normaliseNewlines(text: string): string {
  return text.replace(/\r\n?/g, '\n');
}

function requireText(markdown: string, message: string): string {
  if (markdown.trim() === '') throw new UnparseableDocumentError(message);
  return markdown;
}

async function parsePdf(bytes: Buffer): Promise<ParsedDocument> {
  // pdf.js rejects Node Buffers and may detach the array it is given, so hand it a copy.
  const data = new Uint8Array(bytes);
  let pdf: Awaited<ReturnType<typeof getDocumentProxy>>;
  try {
    // verbosity 0: pdf.js would otherwise print repair warnings for damaged files to stdout.
    pdf = await getDocumentProxy(data, { isEvalSupported: false, verbosity: 0 });
  } catch (err) {
    throw new UnparseableDocumentError(describePdfError(err), { cause: err });
  }
  try {
    let result: { totalPages: number; text: string[] };
    try {
      result = await extractText(pdf, { mergePages: false });
    } catch (err) {
      throw new UnparseableDocumentError(describePdfError(err), { cause: err });
    }
    const pages = result.text.map((page) => normaliseNewlines(page).trim());
    if (pages.every((page) => page === '')) {
      throw new UnparseableDocumentError('PDF has no extractable text (scanned image?)');
    }
    return { markdown: pages.join(PAGE_SEPARATOR), pages: result.totalPages };
  } finally {
    await pdf.destroy().catch(() => undefined);
  }
}

function describePdfError(err: unknown): string {
  const name = (err as { name?: string } | null)?.name ?? '';
  const message = err instanceof Error ? err.message : String(err);
  if (name === 'PasswordException') return 'PDF is encrypted with a password';
  if (name === 'InvalidPDFException') return `PDF is corrupt or not a PDF: ${message}`;
  return `PDF could not be read: ${message}`;
}

async function docxToHtml(bytes: Buffer): Promise<string> {
  try {
    const result = await mammoth.convertToHtml(
      { buffer: bytes },
      // Images would arrive as base64 data URIs that bloat the markdown and embed nothing
      // useful; dropping their src makes the HTML converter skip them.
      { convertImage: mammoth.images.imgElement(async () => ({ src: '' })) },
    );
    return result.value;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new UnparseableDocumentError(`DOCX could not be read: ${message}`, { cause: err });
  }
}
