// In-process parser: turns every supported media type into markdown without a network
// call, so development, tests and deployments without a LlamaParse key still run the whole
// pipeline. It trades fidelity for independence (no OCR, no layout analysis: a scanned PDF
// has no text for it). Failures that retrying cannot fix (corrupt, encrypted or text-less
// documents) surface as UnparseableDocumentError, and documents past a limit (pages, inflated
// size, nesting) as DocumentLimitError, checked before the work the limit bounds; either way
// the pipeline fails the document at once. One module per format; this one dispatches.
import { DEFAULT_PARSER_LIMITS, UnparseableDocumentError, type MediaType, type ParsedDocument, type ParserLimits, type SyncParser } from '../types.ts';
import { docxToHtml } from './docx.ts';
import { createHtmlConverter } from './html.ts';
import { parsePdf } from './pdf.ts';
import { decodeUtf8, parseText, requireText } from './shared.ts';

export { PAGE_SEPARATOR } from './shared.ts';

const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';

export function createLocalParser(limits: ParserLimits = DEFAULT_PARSER_LIMITS): SyncParser {
  const html = createHtmlConverter(limits);
  return {
    kind: 'local',
    mode: 'sync',

    async parse(bytes: Buffer, mediaType: MediaType): Promise<ParsedDocument> {
      switch (mediaType) {
        case 'text/plain':
        case 'text/markdown':
          return parseText(bytes);
        case 'text/html':
          return { markdown: requireText(html.toMarkdown(decodeUtf8(bytes)), 'HTML document has no text'), pages: 1 };
        case 'application/pdf':
          return parsePdf(bytes, limits);
        case DOCX:
          return { markdown: requireText(html.toMarkdown(await docxToHtml(bytes, limits)), 'DOCX document has no text'), pages: 1 };
        default:
          throw new UnparseableDocumentError(`unsupported media type: ${String(mediaType)}`);
      }
    },
  };
}
