// The limits must let real documents through at their defaults (docs/LIMITS.md): a 1,000-page
// PDF manual and a 50 MB application log go through `docpipe all` to ready, every page and line
// accounted for, with /healthz answering within 1 s meanwhile.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertSurvived, attack } from './attack.ts';
import { pdfManual, realLog } from './bombs.ts';
import { startAll } from './harness.ts';

// Embedding batches of 512 instead of 64: the limits are under test here, not the embedder, and
// a 50 MB log makes 41,882 chunks.
const all = await startAll({ EMBED_BATCH_SIZE: '512' });

test('a 1,000-page PDF manual: ready, all pages parsed', { timeout: 300_000 }, async (t) => {
  const pdf = await pdfManual(1_000);
  const result = await attack(all, pdf, 'manual.pdf', 240_000);
  t.diagnostic(`${(pdf.length / 1e6).toFixed(1)} MB: ${result.bomb.status} in ${result.seconds.toFixed(1)} s, ${result.bomb.chunkCount} chunks, /healthz max ${result.health.maxMs.toFixed(0)} ms, sandbox ${result.memory.startChildrenMb} -> ${result.memory.peakChildrenMb} MB`);
  assertSurvived(result, 'manual');
  assert.equal(result.bomb.status, 'ready', JSON.stringify(result.bomb.error));
  const [row] = await all.db.sql<{ pages: number }[]>`
    select (data->>'pages')::int as pages from docpipe.events where stream_id = ${result.bomb.id} and type = 'ParseSucceeded'`;
  assert.equal(row?.pages, 1_000);
  const [last] = await all.db.sql<{ n: number }[]>`
    select count(*)::int as n from docpipe.document_chunks where document_id = ${result.bomb.id} and content like '%Chapter 1000:%'`;
  assert.ok(last!.n >= 1, 'the last page made it into a chunk');
});

test('a 50 MB application log: ready, every line in a chunk', { timeout: 600_000 }, async (t) => {
  const log = Buffer.from(realLog(50_000_000));
  const result = await attack(all, log, 'app.log', 540_000);
  t.diagnostic(`${(log.length / 1e6).toFixed(0)} MB: ${result.bomb.status} in ${result.seconds.toFixed(0)} s, ${result.bomb.chunkCount} chunks, /healthz max ${result.health.maxMs.toFixed(0)} ms, RSS main ${result.memory.startMainMb} -> ${result.memory.peakMainMb} MB, sandbox ${result.memory.startChildrenMb} -> ${result.memory.peakChildrenMb} MB`);
  assertSurvived(result, 'log');
  assert.equal(result.bomb.status, 'ready', JSON.stringify(result.bomb.error));
  const lastLine = log.toString('utf8').trimEnd().split('\n').at(-1)!;
  const [found] = await all.db.sql<{ n: number }[]>`
    select count(*)::int as n from docpipe.document_chunks where document_id = ${result.bomb.id} and position(${lastLine} in content) > 0`;
  assert.ok(found!.n >= 1, 'the last line made it into a chunk');
});
