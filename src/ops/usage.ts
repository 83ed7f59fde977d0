// `docpipe usage`: per-owner usage for operators, from docpipe.usage_daily (the projection
// of src/projections/usage.ts): each owner's documents, bytes, pages and tokens over a range of
// UTC days, biggest (by estimated cost) first, with the estimated cost at this environment's
// prices. Users see their own with GET /v1/usage.
import { parseArgs } from 'node:util';
import type { Db } from '../db/client.ts';
import { costNote, estimateCostDollars, lastDays, unitPrices, usageRange, USAGE_DEFAULT_DAYS, USAGE_MAX_DAYS, type CostEstimate, type CostSettings } from '../documents/usage.ts';
import { queryUsage, queryUsageByOwner, type OwnerUsage, type UsageCounts } from '../projections/usage.ts';
import { bytes, thousands } from './format.ts';

export const USAGE_COMMAND_HELP = `usage: docpipe usage [--owner ID] [--since 30d | --from YYYY-MM-DD --to YYYY-MM-DD] [--limit N] [--json]

Per-owner usage (documents uploaded, their bytes, pages parsed, tokens embedded) over a range of
UTC days, biggest estimated cost first, with the estimated cost at this environment's prices
(PRICE_LLAMAPARSE_CREDIT_DOLLARS, PRICE_OPENAI_MILLION_TOKENS_DOLLARS, LLAMAPARSE_TIER).
  --owner ID     one owner only (the JWT sub)
  --since Nd     the N days ending today (default ${USAGE_DEFAULT_DAYS}d, at most ${USAGE_MAX_DAYS}d)
  --from, --to   first and last day, included (--to defaults to today, --from to 29 days before --to)
  --limit N      the N biggest owners (default 50, at most 10000); the totals cover every owner
  --json         one JSON object instead of the table
`;

export interface UsageArgs {
  ownerId: string | null;
  from: string;
  to: string;
  limit: number;
  json: boolean;
}

export interface UsageLine extends UsageCounts {
  estimatedCost: CostEstimate;
}

export interface UsageSummary {
  from: string;
  to: string;
  /** The owner asked for (--owner), or null for all. */
  ownerId: string | null;
  /** Owners with usage in the range (before --limit). */
  ownerCount: number;
  owners: (UsageLine & { ownerId: string })[];
  /** Every owner in the range together (not only those shown). */
  totals: UsageLine;
  currency: 'USD';
  note: string;
}

/** The command's flags, or 'help'. Throws with a message naming the bad flag (the CLI exits 2). */
export function parseUsageArgs(args: string[], now: Date = new Date()): UsageArgs | 'help' {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      owner: { type: 'string' },
      since: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (positionals.length > 0) throw new Error(`unexpected argument ${JSON.stringify(positionals[0])}`);
  if (values.owner !== undefined && (values.owner.length === 0 || values.owner.length > 255)) throw new Error('--owner must be 1 to 255 characters');
  let range: { from: string; to: string };
  if (values.since !== undefined) {
    if (values.from !== undefined || values.to !== undefined) throw new Error('--since or --from/--to, not both');
    const days = /^([1-9][0-9]{0,2})d$/.exec(values.since);
    if (!days || Number(days[1]) > USAGE_MAX_DAYS) throw new Error(`--since ${JSON.stringify(values.since)}: expected a number of days such as 7d or 30d, at most ${USAGE_MAX_DAYS}d`);
    range = lastDays(Number(days[1]), now);
  } else {
    try {
      range = usageRange({ from: values.from, to: values.to }, now);
    } catch (err) {
      throw new Error(`--from/--to: ${(err as Error).message}`);
    }
  }
  const limit = Number(values.limit ?? '50');
  if (!/^[0-9]{1,5}$/.test(values.limit ?? '50') || limit < 1 || limit > 10_000) throw new Error(`--limit ${JSON.stringify(values.limit)}: expected 1 to 10000`);
  return { ownerId: values.owner ?? null, ...range, limit, json: values.json === true };
}

/** The summary: the biggest owners (at most --limit) and the totals of all, each with its estimated cost. */
export async function usageSummary(db: Db, args: UsageArgs, cost: CostSettings): Promise<UsageSummary> {
  const [byOwner, all] = await Promise.all([
    queryUsageByOwner(db, { from: args.from, to: args.to, ownerId: args.ownerId, limit: args.limit, ...unitPrices(cost) }),
    queryUsage(db, { ownerId: args.ownerId, from: args.from, to: args.to }),
  ]);
  const line = <T extends UsageCounts>(u: T) => ({ ...u, estimatedCost: estimateCostDollars(u, cost) });
  return {
    from: args.from,
    to: args.to,
    ownerId: args.ownerId,
    ownerCount: byOwner.ownerCount,
    owners: byOwner.owners.map((o: OwnerUsage) => line(o)),
    totals: line(all.totals),
    currency: 'USD',
    note: costNote(cost),
  };
}

/** Owner ids come from tokens: on a terminal, anything but printable characters shows as `?`. */
const printable = (text: string) => text.replace(/[\p{C}]/gu, '?');

/** A table for a terminal: a header line, one line per owner, the totals, and what the estimate is. */
export function formatUsage(summary: UsageSummary): string {
  const scope = summary.ownerId === null ? `${summary.ownerCount} owner${summary.ownerCount === 1 ? '' : 's'}` : `owner ${printable(summary.ownerId)}`;
  const lines = [`usage from ${summary.from} to ${summary.to} (UTC days, both included): ${scope}`];
  if (summary.ownerCount === 0) {
    lines.push('no usage in this range');
    return lines.join('\n') + '\n';
  }
  const shown = summary.owners.length < summary.ownerCount ? ` (the ${summary.owners.length} biggest shown)` : '';
  const header = ['owner', 'documents', 'bytes', 'pages', 'tokens', 'est. USD'];
  const row = (name: string, u: UsageLine) => [name, thousands(u.documents), bytes(u.bytes), thousands(u.pages), thousands(u.tokens), u.estimatedCost.totalDollars.toFixed(4)];
  const body = summary.owners.map((o) => row(printable(o.ownerId), o));
  const total = row(summary.ownerId === null ? `all ${summary.ownerCount} owners` : 'total', summary.totals);
  const table = [header, ...body, total];
  const widths = header.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const render = (r: string[]) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd();
  lines.push(...table.slice(0, -1).map(render), '-'.repeat(widths.reduce((a, b) => a + b + 2, -2)), render(total) + shown);
  const cost = summary.totals.estimatedCost;
  lines.push(`estimated cost: parser $${cost.parserDollars.toFixed(4)}, embedder $${cost.embedderDollars.toFixed(4)}, total $${cost.totalDollars.toFixed(4)}`, summary.note);
  return lines.join('\n') + '\n';
}
