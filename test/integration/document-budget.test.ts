// The worker's document budget against a real Postgres, storage and sandboxed chunker: two large
// documents whose embed jobs run at once hold their chunks one after the other when both do not
// fit (WORKER_DOCUMENT_BUDGET_MB), a small one (under 1 MiB, exempt) is not held up behind them,
// and every one ends ready. The chunker is wrapped only to observe how many documents it holds at once.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { execute } from '../../src/documents/commands.ts';
import { parsedKey, runEmbedStage, type PipelineDeps } from '../../src/documents/pipeline.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import type { Chunker } from '../../src/providers/types.ts';
import { createByteBudget } from '../../src/util/byte-budget.ts';
import { startStack } from '../helpers/stack.ts';

const stack = await startStack({ worker: false });
const log = createLogger('silent');
const meta = { correlationId: randomUUID(), causationId: null, actor: 'test', requestId: null };
const MB = 1024 * 1024;

/** A document parsed into `characters` of markdown, its embed job not yet run. */
async function parsedDocument(characters: number): Promise<string> {
  const id = randomUUID();
  const ctx = stack.runtime.ctx;
  const storage = stack.runtime.providers.storage;
  const original = await storage.put(`documents/${id}/original`, Readable.from([Buffer.from('x')]));
  await execute(ctx, id, { type: 'Upload', ownerId: 'user-a', fileName: 'a.txt', mediaType: 'text/plain', size: original.size, sha256: original.sha256, storageKey: original.key, idempotencyKey: null }, meta);
  await execute(ctx, id, { type: 'StartParse', run: 1, parser: 'local' }, meta);
  const markdown = 'The keeper climbed the stair. '.repeat(Math.ceil(characters / 30)).slice(0, characters);
  const stored = await storage.put(parsedKey(id, 1), Readable.from([Buffer.from(markdown)]));
  await execute(ctx, id, { type: 'CompleteParse', run: 1, parsedKey: stored.key, pages: 1, characters, sha256: stored.sha256, partial: null }, meta);
  return id;
}

test('large documents take turns within the budget; small ones are not held up; all end ready', { timeout: 120_000 }, async () => {
  let holding = 0;
  let maxHoldingLarge = 0;
  const finishedAt = new Map<string, number>();
  const sandboxed = stack.runtime.providers.chunker;
  const observed: Chunker = {
    async chunk(markdown, options, taskOptions) {
      holding += markdown.length >= MB ? 1 : 0;
      maxHoldingLarge = Math.max(maxHoldingLarge, holding);
      try {
        return await sandboxed.chunk(markdown, options, taskOptions);
      } finally {
        if (markdown.length >= MB) holding--;
      }
    },
  };
  const deps: PipelineDeps = {
    ctx: stack.runtime.ctx,
    storage: stack.runtime.providers.storage,
    parser: stack.runtime.providers.parser,
    chunker: observed,
    pages: stack.runtime.providers.pages,
    embedder: createLocalEmbedder({ dimensions: 16 }),
    chunking: { maxTokens: 256, overlapTokens: 16 },
    embedBatchSize: 256,
    memory: createByteBudget(3 * MB),
    remoteParse: { webhookBaseUrl: undefined, webhookSecret: undefined, pollAfterSeconds: 1 },
  };
  const large = [await parsedDocument(2 * MB), await parsedDocument(2 * MB)];
  const small = await parsedDocument(10_000);
  const job = (documentId: string) => ({ documentId, run: 1, correlationId: meta.correlationId, causationId: randomUUID(), requestId: null });

  const started = [...large, small].map((id) =>
    runEmbedStage(deps, job(id), { log }).then((outcome) => {
      finishedAt.set(id, performance.now());
      return outcome;
    }),
  );
  assert.deepEqual(await Promise.all(started), ['done', 'done', 'done']);
  assert.ok(finishedAt.get(small)! < finishedAt.get(large[1]!)!, 'the small document did not wait for the second large one');
  assert.equal(maxHoldingLarge, 1, 'the two large documents never held their text at the same time');
  assert.equal(deps.memory.inUse(), 0, 'everything was given back');
  for (const id of [...large, small]) {
    const [row] = await stack.db.sql<{ status: string }[]>`select status from docpipe.document_status where id = ${id}`;
    assert.equal(row?.status, 'ready');
  }
});
