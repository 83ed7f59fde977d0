// The verdicts of `npm run bench`: every performance target of issue 12, its figure, the baseline
// measured in the same run, and met or not, as the report's last table and as `verdicts` in
// `--json` (what `npm run bench:spread` reads back from several runs).
import { table } from './stats.ts';

export interface VerdictRow {
  /** Stable key of the target across runs and commits (bench:spread groups by it). */
  id: string;
  /** The target, in words. */
  target: string;
  /** The figure the target is about (null: not measured in this run). */
  value: number | null;
  unit: string;
  /** The figure as shown, with its context (share of the baseline, documents ready...). */
  shown: string;
  /** The same run's baseline for it, where there is one. */
  baseline: number | null;
  baselineName: string;
  baselineShown: string;
  /** null: not measured, or measured under conditions the target does not name (n/a). */
  met: boolean | null;
  note?: string;
}

export const verdictWord = (met: boolean | null | undefined): string => (met === null || met === undefined ? 'n/a' : met ? 'MET' : 'NOT MET');

export function verdictTable(rows: readonly VerdictRow[], options: { markdown?: boolean } = {}): string {
  return table(
    ['target (issue 12)', 'measured', 'baseline, same run', 'verdict'],
    rows.map((r) => [r.target, r.shown, r.baselineName ? `${r.baselineName}: ${r.baselineShown}` : r.baselineShown, verdictWord(r.met) + (r.note ? ` (${r.note})` : '')]),
    options,
  );
}
