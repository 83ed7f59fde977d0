// `docpipe status` (src/ops/status.ts), the real CLI as a child process against a database with
// two documents, one ready and one failed: the text report (aligned columns), the --json object,
// and a bad flag (exit 2).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, test } from 'node:test';
import { formatAge, parseStatusArgs } from '../../src/ops/status.ts';
import { QUEUES } from '../../src/queue/jobs.ts';
import { runToExit, type Exit } from '../helpers/process.ts';
import { startStack, upload, waitForStatus } from '../helpers/stack.ts';

type Json = Record<string, any>;

const stack = await startStack();

async function uploadTo(bytes: Buffer, fileName: string, final: 'ready' | 'failed'): Promise<string> {
  const res = await upload(stack, bytes, fileName);
  assert.equal(res.status, 202, await res.clone().text());
  const { id } = (await res.json()) as { id: string };
  const doc = await waitForStatus(stack, id, ['ready', 'failed'], { timeoutMs: 30_000 });
  assert.equal(doc.status, final, JSON.stringify(doc.error));
  return id;
}

await uploadTo(Buffer.from('The keeper lit the lamp at dusk and logged the weather at every watch.\n'.repeat(20)), 'logbook.txt', 'ready');
// Sniffs as a PDF, parses as nothing: fails at once with UNPARSEABLE_DOCUMENT.
await uploadTo(Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.from('not a PDF object table\n'.repeat(8)), randomBytes(64)]), 'broken.pdf', 'failed');

function status(...args: string[]): Promise<Exit> {
  return runToExit(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), 'status', ...args], {
    env: { ...process.env, ...stack.env },
    timeoutMs: 60_000,
  });
}

const QUEUE_NAMES = Object.values(QUEUES).map((q) => q.replace(/^docpipe-/, ''));

describe('docpipe status', () => {
  test('the text report: queues, documents, the last hour\'s failures, usage today, connections', async () => {
    const run = await status();
    assert.equal(run.code, 0, run.stderr);
    const out = run.stdout;
    assert.match(out, /^docpipe status at \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z/);

    // Queues: a header and one row per queue, every row as wide as the header (right-aligned numbers).
    const lines = out.split('\n');
    const header = lines.findIndex((l) => /^\s+queue\s+waiting\s+scheduled\s+active\s+oldest waiting$/.test(l));
    assert.ok(header > 0, out);
    const rows = lines.slice(header + 1, header + 1 + QUEUE_NAMES.length);
    assert.deepEqual(rows.map((r) => r.trim().split(/\s+/)[0]), QUEUE_NAMES);
    for (const row of rows) {
      assert.equal(row.length, lines[header]!.length, `aligned: ${JSON.stringify(row)}`);
      assert.match(row, /^\s+\S+\s+\d+\s+\d+\s+\d+\s+(?:-|\d+[smhd]\S*)$/);
    }

    assert.match(out, /^\s+ready\s+1$/m);
    assert.match(out, /^\s+failed\s+1$/m);
    assert.match(out, /^\s+uploaded\s+0$/m);
    assert.match(out, /^failures in the last hour: 1$/m);
    assert.match(out, /^\s+UNPARSEABLE_DOCUMENT\s+1$/m);
    assert.match(out, /^usage today \(\d{4}-\d{2}-\d{2}, UTC\): 1 owner$/m);
    assert.match(out, /^\s+documents\s+2$/m);
    assert.match(out, /^estimated cost today: \$0\.0000 \(parser \$0\.0000, embedder \$0\.0000\)$/m, 'the local parser and embedder cost nothing');
    assert.match(out, /^\s+all but deleted\s+2$/m);
    assert.match(out, /^database connections: \d+ of max_connections \d+/m);
  });

  test('--json: the same as one object', async () => {
    const run = await status('--json');
    assert.equal(run.code, 0, run.stderr);
    const s = JSON.parse(run.stdout) as Json;
    assert.ok(!Number.isNaN(Date.parse(s.at)));
    assert.deepEqual(s.queues.map((q: Json) => q.queue), Object.values(QUEUES));
    for (const q of s.queues) for (const field of ['waiting', 'scheduled', 'active', 'oldestWaitingSeconds']) assert.equal(typeof q[field], 'number', `${q.queue}.${field}`);
    assert.deepEqual(s.documents, { uploaded: 0, parsing: 0, parsed: 0, embedding: 0, ready: 1, failed: 1, deleted: 0 });
    assert.deepEqual(s.failuresLastHour, [{ code: 'UNPARSEABLE_DOCUMENT', count: 1 }]);
    assert.equal(s.usageToday.owners, 1);
    assert.equal(s.usageToday.documents, 2);
    assert.ok(s.usageToday.bytes > 0);
    assert.deepEqual(s.usageToday.estimatedCost, { parserDollars: 0, embedderDollars: 0, totalDollars: 0 });
    assert.ok(s.connections.max > 0 && s.connections.total > 0, JSON.stringify(s.connections));
  });

  test('a bad flag exits 2 with the usage; --help exits 0', async () => {
    const bad = await status('--bogus');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /docpipe status: unknown flag "--bogus"/);
    assert.match(bad.stderr, /usage: docpipe status \[--json\]/);
    assert.equal(bad.stdout, '');
    const help = await status('--help');
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^usage: docpipe status \[--json\]/);
  });
});

describe('parts', () => {
  test('parseStatusArgs', () => {
    assert.deepEqual(parseStatusArgs([]), { json: false, help: false });
    assert.deepEqual(parseStatusArgs(['--json']), { json: true, help: false });
    assert.deepEqual(parseStatusArgs(['-h']), { json: false, help: true });
    assert.throws(() => parseStatusArgs(['--jsn']), /unknown flag "--jsn"/);
    assert.throws(() => parseStatusArgs(['queues']), /unexpected argument "queues"/);
  });

  test('formatAge', () => {
    assert.deepEqual([0, 0.4, 42, 125, 7300, 200_000].map(formatAge), ['-', '0s', '42s', '2m05s', '2h01m', '2d07h']);
  });
});
