// The local parser, the chunker and the PDF page count as the worker uses them: each call is a task in the sandbox
// (pool.ts), so a hostile document costs a child process, never the worker.
import { parseText } from '../parser/shared.ts';
import { createPageCounter, type PageCounter } from '../parser/pages.ts';
import type { Chunk, ChunkOptions, Chunker, MediaType, ParsedDocument, ParserLimits, SyncParser } from '../types.ts';
import { SandboxTaskError, type RunOptions, type Sandbox } from './pool.ts';
import { rebuildError, type SandboxTask } from './tasks.ts';

async function runTask<T>(sandbox: Sandbox, task: SandboxTask, options?: RunOptions): Promise<T> {
  try {
    return await sandbox.run<T>(task, options);
  } catch (err) {
    if (err instanceof SandboxTaskError) throw rebuildError(err.error);
    throw err;
  }
}

/**
 * Plain text and markdown parse in the worker itself: their parse is a UTF-8 decode and one
 * linear newline pass, nothing a document can make slow or large beyond its own size (which the
 * worker's document budget bounds), and a round trip to a child costs more CPU than the parse.
 * Every other format, whose parser a crafted document can make explode, runs in the sandbox.
 */
const IN_PROCESS: ReadonlySet<MediaType> = new Set(['text/plain', 'text/markdown']);

export function createSandboxedParser(sandbox: Sandbox, limits: ParserLimits): SyncParser {
  return {
    kind: 'local',
    mode: 'sync',
    inline: (mediaType: MediaType) => IN_PROCESS.has(mediaType),
    parse: (bytes: Buffer, mediaType: MediaType, options?: RunOptions) =>
      IN_PROCESS.has(mediaType) ? Promise.resolve().then(() => parseText(bytes)) : runTask<ParsedDocument>(sandbox, { kind: 'parse', bytes, mediaType, limits }, options),
  };
}

export function createSandboxedChunker(sandbox: Sandbox): Chunker {
  return {
    chunk: (markdown: Uint8Array, options: ChunkOptions, runOptions?: RunOptions) =>
      runTask<Chunk[]>(sandbox, { kind: 'chunk', markdown, options }, runOptions),
  };
}

export function createSandboxedPageCounter(sandbox: Sandbox, limits: ParserLimits): PageCounter {
  return createPageCounter((bytes, options) => runTask<number>(sandbox, { kind: 'pdf-pages', bytes, limits }, options));
}
