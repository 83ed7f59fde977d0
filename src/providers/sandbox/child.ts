// The sandbox child's entry (pool.ts forks it): runs the local parser, the chunker and the PDF
// page count on the bytes it is sent, one task at a time, and answers with the result or the
// error it caught.
// It never touches the network, the database or storage, and has an empty environment.
import './child-signals.ts';
import { chunkMarkdown } from '../chunker.ts';
import { createLocalParser } from '../parser/local.ts';
import { countPdfPages } from '../parser/pdf.ts';
import type { ParserLimits, SyncParser } from '../types.ts';
import type { SandboxReply, SandboxRequest } from './pool.ts';
import { serializeError, type SandboxTask } from './tasks.ts';

const parsers = new Map<string, SyncParser>();
const utf8 = new TextDecoder('utf-8');

function parserFor(limits: ParserLimits): SyncParser {
  const key = JSON.stringify(limits);
  let parser = parsers.get(key);
  if (!parser) {
    parser = createLocalParser(limits);
    parsers.set(key, parser);
  }
  return parser;
}

async function run(task: SandboxTask): Promise<unknown> {
  switch (task.kind) {
    case 'parse':
      return parserFor(task.limits).parse(Buffer.from(task.bytes.buffer, task.bytes.byteOffset, task.bytes.byteLength), task.mediaType);
    case 'chunk':
      return chunkMarkdown(utf8.decode(task.markdown), task.options);
    case 'pdf-pages':
      return countPdfPages(task.bytes, task.limits);
  }
}

process.on('message', (request: SandboxRequest) => {
  void run(request.task as SandboxTask).then(
    (result) => reply({ id: request.id, ok: true, result }),
    (err: unknown) => reply({ id: request.id, ok: false, error: serializeError(err) }),
  );
});

function reply(message: SandboxReply): void {
  process.send?.(message);
}

// Modules are loaded: the pool starts the clock of a task from here.
process.send?.({ ready: true } satisfies SandboxReply);
