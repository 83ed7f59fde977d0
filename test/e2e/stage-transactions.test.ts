// How many transactions a document's stages take. A small text document is parsed before its
// parse attempt is opened, and chunked and embedded before its embedding attempt is: each stage
// then opens and closes its attempt in one transaction (group commit shares those with other
// documents). A larger document opens each attempt first, so that `parsing` and `embedding` show
// while the long work runs.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startStack, upload, waitForStatus } from '../helpers/stack.ts';

const stack = await startStack();
after(() => stack.close());

/** The document's event types, grouped by the transaction that appended them. */
async function transactions(id: string): Promise<string[][]> {
  const rows = await stack.db.sql<{ type: string; tx: string }[]>`
    select type, transaction_id::text as tx from docpipe.events where stream_id = ${id} order by stream_version`;
  const groups: string[][] = [];
  let last: string | null = null;
  for (const row of rows) {
    if (row.tx !== last) groups.push([]);
    groups.at(-1)!.push(row.type);
    last = row.tx;
  }
  return groups;
}

test('a small text document: upload, parse and embed stages, one transaction each', async () => {
  const res = await upload(stack, Buffer.from('# Keeper\n\nThe lamp was lit at dusk.\n'), 'small.md');
  assert.equal(res.status, 202);
  const { id } = (await res.json()) as { id: string };
  assert.equal((await waitForStatus(stack, id, ['ready', 'failed'])).status, 'ready');
  assert.deepEqual(await transactions(id), [
    ['DocumentUploaded'],
    ['ParseStarted', 'ParseSucceeded'],
    ['EmbeddingStarted', 'DocumentChunked', 'EmbeddingBatchStored', 'DocumentReady'],
  ]);
  const [chunks] = await stack.db.sql<{ n: number; embedded: number }[]>`
    select count(*)::int as n, count(embedding)::int as embedded from docpipe.document_chunks where document_id = ${id}`;
  assert.ok(chunks!.n >= 1);
  assert.equal(chunks!.embedded, chunks!.n, 'every chunk stored with its vector');
});

test('a document over 1 MiB opens each attempt before its work, so parsing and embedding show', async () => {
  const text = 'The keeper trimmed the wick and wound the clockwork of the lens. '.repeat(17_000); // 1.1 MB
  const res = await upload(stack, Buffer.from(text), 'long.txt');
  const { id } = (await res.json()) as { id: string };
  assert.equal((await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 120_000 })).status, 'ready');
  const groups = await transactions(id);
  assert.deepEqual(groups.slice(0, 3), [['DocumentUploaded'], ['ParseStarted'], ['ParseSucceeded']]);
  assert.deepEqual(groups[3], ['EmbeddingStarted']);
  assert.deepEqual(groups.at(-1), ['DocumentReady']);
});
