// How many pages a document has, for what a remote parser bills and how long its job may take.
// A PDF says so in its page tree (counted in the sandbox: the bytes are the user's); the other
// formats have no pages until a parser lays them out, so they get an estimate that errs high,
// because the count sets docpipe's deadline for the job and a deadline too short would fail a
// document that the provider was still working on (the provider's own time limit, sent with the
// job, uses its true count).
import type { MediaType, ParserLimits, TaskOptions } from '../types.ts';
import { DocumentLimitError } from '../types.ts';

/** A page of plain text, markdown or HTML holds at least this many bytes of it. */
const TEXT_BYTES_PER_PAGE = 1000;
/** DOCX is zipped (text compresses about 3:1): a page is at least this many bytes of the file. */
const DOCX_BYTES_PER_PAGE = 300;

export interface PageCounter {
  /**
   * The document's pages (a PDF's page tree) or an estimate that errs high. A PDF over
   * PDF_MAX_PAGES, or over a stream limit, fails with DocumentLimitError: a remote parser would
   * bill every page. A PDF the local reader cannot open gets the byte estimate: the remote parser
   * may still read it.
   */
  count(bytes: Buffer, mediaType: MediaType, options?: TaskOptions): Promise<number>;
}

export function estimatePages(bytes: number, mediaType: MediaType, limits: Pick<ParserLimits, 'pdfMaxPages'>): number {
  const perPage = mediaType === 'text/plain' || mediaType === 'text/markdown' || mediaType === 'text/html' ? TEXT_BYTES_PER_PAGE : DOCX_BYTES_PER_PAGE;
  return Math.min(limits.pdfMaxPages, Math.max(1, Math.ceil(bytes / perPage)));
}

export function createPageCounter(
  countPdf: (bytes: Buffer, options?: TaskOptions) => Promise<number>,
  limits: Pick<ParserLimits, 'pdfMaxPages'>,
): PageCounter {
  return {
    async count(bytes, mediaType, options) {
      if (mediaType !== 'application/pdf') return estimatePages(bytes.length, mediaType, limits);
      try {
        return await countPdf(bytes, options);
      } catch (err) {
        if (err instanceof DocumentLimitError || options?.signal?.aborted) throw err;
        return estimatePages(bytes.length, mediaType, limits);
      }
    },
  };
}
