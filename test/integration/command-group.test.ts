// Group commit of the worker's commands (createCommandGroup): commands from concurrent jobs share
// one transaction; a refused command is refused alone; a batch that fails as a whole commits
// nothing and its commands run one by one, so each ends as it would have alone.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { createCommandGroup, execute, executeSteps, type CommandContext } from '../../src/documents/commands.ts';
import { DomainError, type DocumentCommand } from '../../src/documents/document.ts';
import type { EventMetadata } from '../../src/events/catalog.ts';
import { uploadCommand } from '../helpers/commands.ts';
import { createQueueDatabase } from '../helpers/db.ts';

const { db, ctx: base } = await createQueueDatabase('test-command-group');
const { sql } = db;
const upload = (id: string): DocumentCommand => uploadCommand(id, 'user-group');
const metadata = (): EventMetadata => ({ correlationId: randomUUID(), causationId: null, actor: 'worker', requestId: null });

async function transactionsOf(ids: string[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(distinct transaction_id)::int as n from docpipe.events where stream_id = any(${ids}::uuid[])`;
  return row!.n;
}

test('concurrent commands share transactions: the first goes alone, the rest together', async () => {
  const ctx: CommandContext = { ...base, group: createCommandGroup(base, { maxBatch: 64, concurrency: 1 }) };
  const ids = Array.from({ length: 20 }, () => randomUUID());
  const results = await Promise.all(ids.map((id) => execute(ctx, id, upload(id), metadata())));
  assert.deepEqual(results.map((r) => r.state.status), ids.map(() => 'uploaded'));
  assert.deepEqual(results.map((r) => r.events.map((e) => e.streamId)), ids.map((id) => [id]));
  assert.equal(await transactionsOf(ids), 2);
  // Each document's projection row and parse job went in with its event.
  const [status] = await sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_status where id = any(${ids}::uuid[]) and status = 'uploaded'`;
  const [jobs] = await sql<{ n: number }[]>`select count(*)::int as n from pgboss.job where name = 'docpipe-parse' and data->>'documentId' = any(${ids})`;
  assert.equal(status!.n, 20);
  assert.equal(jobs!.n, 20);
});

test('a refused command gets its own DomainError; the others in its batch commit', async () => {
  const ctx: CommandContext = { ...base, group: createCommandGroup(base, { maxBatch: 64, concurrency: 1 }) };
  const ids = Array.from({ length: 6 }, () => randomUUID());
  const missing = randomUUID();
  const settled = await Promise.allSettled([
    ...ids.map((id) => execute(ctx, id, upload(id), metadata())),
    execute(ctx, missing, { type: 'StartParse', run: 1, parser: 'local' }, metadata()),
  ]);
  assert.deepEqual(settled.slice(0, 6).map((s) => s.status), ids.map(() => 'fulfilled'));
  const refused = settled[6]!;
  assert.equal(refused.status, 'rejected');
  assert.ok((refused as PromiseRejectedResult).reason instanceof DomainError);
  assert.equal(await transactionsOf(ids), 2);
});

test('a hook that fails takes only its own command down: the batch reruns its commands one by one', async () => {
  const ctx: CommandContext = { ...base, group: createCommandGroup(base, { maxBatch: 64, concurrency: 1 }) };
  const ids = Array.from({ length: 8 }, () => randomUUID());
  const bad = ids[5]!;
  const settled = await Promise.allSettled(
    ids.map((id) =>
      execute(ctx, id, upload(id), metadata(), {
        withEvents: async (tx) => {
          if (id === bad) throw new Error('side table refused');
          await tx`select 1`;
        },
      }),
    ),
  );
  assert.deepEqual(settled.map((s) => s.status), ids.map((id) => (id === bad ? 'rejected' : 'fulfilled')));
  assert.match(String((settled[5] as PromiseRejectedResult).reason), /side table refused/);
  const [events] = await sql<{ n: number }[]>`select count(*)::int as n from docpipe.events where stream_id = ${bad}`;
  const [rows] = await sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_status where id = ${bad}`;
  assert.equal(events!.n, 0, 'nothing of the failed command is left behind');
  assert.equal(rows!.n, 0);
  // The first went alone; the failed batch of 7 committed nothing, then 6 went one by one.
  assert.equal(await transactionsOf(ids.filter((id) => id !== bad)), 7);
});

test('a document the group knows is read from where the group left it, and an outside writer\'s events are folded in', async () => {
  const ctx: CommandContext = { ...base, group: createCommandGroup(base, { maxBatch: 64, concurrency: 1 }) };
  const id = randomUUID();
  await execute(ctx, id, upload(id), metadata());
  // Another process (no group) moves the document on.
  await execute(base, id, { type: 'StartParse', run: 1, parser: 'local' }, metadata());
  const done = await execute(ctx, id, { type: 'CompleteParse', run: 1, parsedKey: `documents/${id}/runs/1/parsed.md`, pages: 1, characters: 5, sha256: 'd'.repeat(64), partial: null }, metadata());
  assert.equal(done.state.status, 'parsed');
  assert.deepEqual(done.events.map((e) => [e.type, e.streamVersion]), [['ParseSucceeded', 3]]);
  // And the group's next command on it sees its own last write.
  await assert.rejects(execute(ctx, id, { type: 'CompleteParse', run: 1, parsedKey: `documents/${id}/runs/1/parsed.md`, pages: 1, characters: 5, sha256: 'd'.repeat(64), partial: null }, metadata()), DomainError);
});

test('executeSteps: one transaction for a sequence; a refused step stops the steps after it, the ones before commit', async () => {
  for (const group of [undefined, createCommandGroup(base, { maxBatch: 64, concurrency: 1 })]) {
    const ctx: CommandContext = { ...base, group };
    const id = randomUUID();
    const complete: DocumentCommand = { type: 'CompleteParse', run: 1, parsedKey: `documents/${id}/runs/1/parsed.md`, pages: 1, characters: 5, sha256: 'd'.repeat(64), partial: null };
    const done = await executeSteps(ctx, id, [{ command: upload(id) }, { command: { type: 'StartParse', run: 1, parser: 'local' } }, { command: complete }], metadata());
    assert.equal(done.state.status, 'parsed');
    assert.equal(await transactionsOf([id]), 1);
    // StartParse of run 2 is refused (the document is at run 1). The CompleteParse after it
    // would succeed on its own (the document is parsing run 1), but must not apply.
    const other = randomUUID();
    await executeSteps(ctx, other, [{ command: upload(other) }, { command: { type: 'StartParse', run: 1, parser: 'local' } }], metadata());
    await assert.rejects(
      executeSteps(ctx, other, [
        { command: { type: 'StartParse', run: 2, parser: 'local' } },
        { command: { ...complete, parsedKey: `documents/${other}/runs/1/parsed.md` } },
      ], metadata()),
      DomainError,
    );
    const types = await sql<{ type: string }[]>`select type from docpipe.events where stream_id = ${other} order by stream_version`;
    assert.deepEqual(types.map((t) => t.type), ['DocumentUploaded', 'ParseStarted'], group ? 'with a group' : 'alone');
  }
});
