// The bench's bookkeeping: which flags `--before` passes to an older bench (it may not know the
// newer ones), and bench:spread's min / median / max and per-run verdicts over several runs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { filterArgs, flagsOfUsage, forwardedArgs } from '../../scripts/bench/before.ts';
import { spread } from '../../scripts/bench/spread.ts';
import type { VerdictRow } from '../../scripts/bench/verdicts.ts';

const OLD_USAGE = `usage: npm run bench -- [options]

  --quick                  3 s per HTTP measurement
  --docs <n>               documents in the pipeline run (default 200)
  --skip-webhook           skip the webhook phase
  --json <file>            also write every figure as JSON
`;
const NEW_USAGE = `${OLD_USAGE}  --fleet-docs <n>         documents of each worker-fleet run
  --skip-fleet             skip the worker-fleet phases
`;

test('usage text: each flag, and whether it takes a value', () => {
  assert.deepEqual([...flagsOfUsage(NEW_USAGE)], [
    ['--quick', false],
    ['--docs', true],
    ['--skip-webhook', false],
    ['--json', true],
    ['--fleet-docs', true],
    ['--skip-fleet', false],
  ]);
});

test('--before passes on only the flags the older bench knows, with their values', () => {
  const argv = ['--quick', '--fleet-docs', '50', '--docs', '40', '--skip-fleet', '--fleet-docs=9', '--before', 'HEAD~1', '--json', 'x.json'];
  const forwarded = forwardedArgs(argv);
  assert.deepEqual(forwarded, ['--quick', '--fleet-docs', '50', '--docs', '40', '--skip-fleet', '--fleet-docs=9']);
  const { kept, dropped } = filterArgs(forwarded, flagsOfUsage(OLD_USAGE), flagsOfUsage(NEW_USAGE));
  assert.deepEqual(kept, ['--quick', '--docs', '40']);
  assert.deepEqual(dropped, ['--fleet-docs', '50', '--skip-fleet', '--fleet-docs=9']);
});

test("the bench's own usage names every flag it parses", () => {
  const usage = execFileSync(process.execPath, ['--import', 'tsx', 'scripts/bench.ts', '--help'], { encoding: 'utf8', timeout: 60_000 });
  const flags = flagsOfUsage(usage);
  for (const flag of ['--quick', '--docs', '--fleet-docs', '--fleet-seconds', '--far-delay-ms', '--skip-fleet', '--no-pin', '--json', '--before']) assert.ok(flags.has(flag), `${flag} in --help`);
  assert.equal(flags.get('--fleet-docs'), true);
  assert.equal(flags.get('--skip-fleet'), false);
});

const row = (id: string, value: number | null, met: boolean | null, baseline: number | null = null): VerdictRow => ({
  id,
  target: `target ${id}`,
  value,
  unit: 'ms',
  shown: String(value),
  baseline,
  baselineName: 'b',
  baselineShown: String(baseline),
  met,
});

test('spread: min, median and max of each target, and each run verdict in order', () => {
  const runs = [
    [row('a', 30, false, 5), row('b', 1, true)],
    [row('a', 10, true, 7), row('b', null, null)],
    [row('a', 20, true, 6)],
  ];
  const [a, b] = spread(runs);
  assert.deepEqual({ ...a }, { id: 'a', target: 'target a', unit: 'ms', n: 3, min: 10, median: 20, max: 30, baselineMedian: 6, verdicts: ['NOT MET', 'MET', 'MET'] });
  assert.equal(b!.n, 1);
  assert.equal(b!.median, 1);
  assert.deepEqual(b!.verdicts, ['MET', 'n/a', '-']);
});

test('npm run bench:spread reads --json files and leaves out runs without verdicts', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-spread-'));
  try {
    const files = [1, 2, 3].map((i) => {
      const file = path.join(dir, `run${i}.json`);
      writeFileSync(file, JSON.stringify({ date: `d${i}`, command: 'npm run bench', verdicts: [row('webhook-p99-ms', 10 * i, i !== 3, 5)] }));
      return file;
    });
    const old = path.join(dir, 'old.json');
    writeFileSync(old, JSON.stringify({ date: 'old' }));
    const out = execFileSync(process.execPath, ['--import', 'tsx', 'scripts/bench/spread.ts', ...files, old], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
    assert.match(out, /3 runs/);
    assert.match(out, /target webhook-p99-ms\s+3\s+10\.00 ms\s+20\.00 ms\s+30\.00 ms\s+5\.00\s+MET, MET, NOT MET/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
