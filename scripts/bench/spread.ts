// `npm run bench:spread -- a.json b.json c.json [--markdown]`: the spread of several bench runs
// (each `npm run bench -- --json <file>`). For every target of the verdicts table: the figure's
// min / median / max over the runs, its baseline's median, and each run's verdict in file order.
// On a shared 2-core machine one run proves little; docs/BENCHMARKS.md carries at least three.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { fmt, table } from './stats.ts';
import { verdictWord, type VerdictRow } from './verdicts.ts';

const USAGE = 'usage: npm run bench:spread -- <run.json> <run.json> [...] [--markdown]\n';

export interface Spread {
  id: string;
  target: string;
  unit: string;
  /** Runs that measured it. */
  n: number;
  min: number;
  median: number;
  max: number;
  baselineMedian: number;
  /** One per file, in order: MET, NOT MET, n/a, or '-' where the run has no such target. */
  verdicts: string[];
}

function median(sorted: number[]): number {
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The spread of each target over runs (each run: its verdict rows), targets in first-seen order. */
export function spread(runs: readonly (readonly VerdictRow[])[]): Spread[] {
  const order: string[] = [];
  const byId = new Map<string, VerdictRow>();
  for (const rows of runs) {
    for (const row of rows) {
      if (!byId.has(row.id)) {
        byId.set(row.id, row);
        order.push(row.id);
      }
    }
  }
  return order.map((id) => {
    const rows = runs.map((run) => run.find((r) => r.id === id));
    const values = rows.flatMap((r) => (r && r.value !== null ? [r.value] : [])).sort((a, b) => a - b);
    const baselines = rows.flatMap((r) => (r && r.baseline !== null ? [r.baseline] : [])).sort((a, b) => a - b);
    const first = byId.get(id)!;
    return {
      id,
      target: first.target,
      unit: first.unit,
      n: values.length,
      min: values[0] ?? Number.NaN,
      median: median(values),
      max: values.at(-1) ?? Number.NaN,
      baselineMedian: median(baselines),
      verdicts: rows.map((r) => (r ? verdictWord(r.met) : '-')),
    };
  });
}

export function spreadTable(spreads: readonly Spread[], options: { markdown?: boolean } = {}): string {
  const digits = (unit: string) => (unit === 'ms' ? 2 : unit === 'MB' || unit === 'docs/s' ? 1 : 0);
  return table(
    ['target', 'runs', 'min', 'median', 'max', 'baseline median', 'verdict per run'],
    spreads.map((s) => [
      s.target,
      String(s.n),
      `${fmt(s.min, digits(s.unit))} ${s.unit}`,
      `${fmt(s.median, digits(s.unit))} ${s.unit}`,
      `${fmt(s.max, digits(s.unit))} ${s.unit}`,
      Number.isNaN(s.baselineMedian) ? '-' : `${fmt(s.baselineMedian, digits(s.unit))}`,
      s.verdicts.join(', '),
    ]),
    options,
  );
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ options: { markdown: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } }, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`bench:spread: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const files = parsed.positionals;
  if (files.length === 0) {
    process.stderr.write(USAGE);
    return 2;
  }
  const runs: VerdictRow[][] = [];
  const dates: string[] = [];
  for (const file of files) {
    let json: { verdicts?: VerdictRow[]; date?: string; command?: string };
    try {
      json = JSON.parse(readFileSync(file, 'utf8')) as typeof json;
    } catch (err) {
      process.stderr.write(`bench:spread: ${file}: ${(err as Error).message}\n`);
      return 2;
    }
    if (!Array.isArray(json.verdicts)) {
      process.stderr.write(`bench:spread: ${file} has no verdicts (a bench run older than the verdicts table): left out\n`);
      continue;
    }
    runs.push(json.verdicts);
    dates.push(`${file}: ${json.date ?? '?'} (${json.command ?? '?'})`);
  }
  if (runs.length === 0) {
    process.stderr.write('bench:spread: no run with verdicts\n');
    return 2;
  }
  process.stdout.write(`${runs.length} runs (verdicts in this order):\n${dates.map((d, i) => `  ${i + 1}. ${d}`).join('\n')}\n\n`);
  process.stdout.write(spreadTable(spread(runs), { markdown: parsed.values.markdown }) + '\n');
  if (runs.length < 3) process.stdout.write('\n(fewer than three runs: not yet a spread)\n');
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) process.exitCode = await main();
