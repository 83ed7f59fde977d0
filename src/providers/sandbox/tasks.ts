// The work the sandbox runs, as plain data (it crosses a process boundary by structured clone),
// and how the caller turns a child's failure back into the error the pipeline acts on.
import type { ChunkOptions, MediaType, ParserLimits } from '../types.ts';
import { DocumentLimitError, DocumentTooComplexError, UnparseableDocumentError } from '../types.ts';
import type { SerializedError } from './pool.ts';

export type SandboxTask =
  | { kind: 'parse'; bytes: Uint8Array; mediaType: MediaType; limits: ParserLimits }
  | { kind: 'chunk'; markdown: Uint8Array; options: ChunkOptions }
  | { kind: 'pdf-pages'; bytes: Uint8Array; limits: ParserLimits };

/** What a child sends back for an error it caught: enough to rebuild its class. */
export function serializeError(err: unknown): SerializedError {
  const e = err as { name?: unknown; message?: unknown; code?: unknown; setting?: unknown };
  return {
    name: typeof e?.name === 'string' ? e.name : 'Error',
    message: typeof e?.message === 'string' ? e.message : String(err),
    ...(typeof e?.code === 'string' ? { code: e.code } : {}),
    ...(typeof e?.setting === 'string' ? { setting: e.setting } : {}),
  };
}

/**
 * A child's error as the pipeline must see it. Everything thrown inside the sandbox is a
 * property of the document (the same bytes fail the same way), so it is permanent: limits and
 * unreadable documents keep their codes; a stack overflow or a failed allocation is
 * DOCUMENT_TOO_COMPLEX; anything else is an unreadable document.
 */
export function rebuildError(error: SerializedError): Error {
  switch (error.name) {
    case 'DocumentLimitError':
      return new DocumentLimitError(error.setting ?? 'unknown', error.message);
    case 'DocumentTooComplexError':
      return new DocumentTooComplexError('memory', error.message);
    case 'UnparseableDocumentError':
      return new UnparseableDocumentError(error.message);
    case 'RangeError':
      if (/call stack/i.test(error.message)) {
        return new DocumentTooComplexError('stack', 'the document is nested too deeply to process (the parser ran out of stack)');
      }
      return new DocumentTooComplexError('memory', `the document is too large to process: ${error.message}`);
    default:
      return new UnparseableDocumentError(`the document could not be processed: ${error.message}`);
  }
}
