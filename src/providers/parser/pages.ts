// How many pages a document has, for what a remote parser bills and how long its job may take.
// A PDF says so in its page tree (counted in the sandbox: the bytes are the user's); the other
// formats have no pages until a parser lays them out, so they get an estimate that errs high,
// because the count sets docpipe's deadline for the job and a deadline too short would fail a
// document that the provider was still working on (the provider's own time limit, sent with the
// job, uses its true count).
import type { MediaType, TaskOptions } from '../types.ts';
import { DocumentLimitError } from '../types.ts';

/** A page of plain text, markdown or HTML holds at most this many bytes of it... */
const TEXT_BYTES_PER_PAGE = 1000;
/** ...and at most this many lines (short lines: code, verse, lists). */
const TEXT_LINES_PER_PAGE = 40;
/** DOCX is zipped (text compresses about 3:1): a page is at least this many bytes of the file. */
const DOCX_BYTES_PER_PAGE = 300;
const NEWLINE = 0x0a;
const FORM_FEED = 0x0c;

export interface PageCounter {
  /**
   * The document's pages (a PDF's page tree) or an estimate that errs high. A PDF over
   * PDF_MAX_PAGES fails with DocumentLimitError: a remote parser would bill every page. A PDF the
   * local reader cannot open, or will not (its stream limits protect the local parser, not the
   * bill), gets the byte estimate: the remote parser may still read it.
   */
  count(bytes: Buffer, mediaType: MediaType, options?: TaskOptions): Promise<number>;
}

export function estimatePages(bytes: Uint8Array, mediaType: MediaType): number {
  const estimate = pageEstimate(mediaType);
  estimate.add(bytes);
  return estimate.pages();
}

/** estimatePages over a document that streams by in pieces: the same answer, without holding it. */
export function pageEstimate(mediaType: MediaType): { add(bytes: Uint8Array): void; pages(): number } {
  const text = mediaType === 'text/plain' || mediaType === 'text/markdown' || mediaType === 'text/html';
  let size = 0;
  let lines = 0;
  let formFeeds = 0;
  return {
    add(bytes) {
      size += bytes.length;
      if (!text) return;
      for (const byte of bytes) {
        if (byte === NEWLINE) lines++;
        else if (byte === FORM_FEED) formFeeds++;
      }
    },
    pages() {
      if (!text) return Math.max(1, Math.ceil(size / DOCX_BYTES_PER_PAGE));
      return Math.max(1, Math.ceil(size / TEXT_BYTES_PER_PAGE), Math.ceil(lines / TEXT_LINES_PER_PAGE), formFeeds + 1);
    },
  };
}

export function createPageCounter(countPdf: (bytes: Buffer, options?: TaskOptions) => Promise<number>): PageCounter {
  return {
    async count(bytes, mediaType, options) {
      if (mediaType !== 'application/pdf') return estimatePages(bytes, mediaType);
      try {
        return await countPdf(bytes, options);
      } catch (err) {
        if ((err instanceof DocumentLimitError && err.setting === 'PDF_MAX_PAGES') || options?.signal?.aborted) throw err;
        return estimatePages(bytes, mediaType);
      }
    },
  };
}
