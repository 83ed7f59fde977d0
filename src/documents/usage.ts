// What usage costs, estimated from the counts in docpipe.usage_daily (src/projections/usage.ts)
// and the price settings: pure, no I/O. Used by GET /v1/usage, `docpipe usage` and the cost
// metric (docpipe_provider_estimated_cost_dollars_total).
//
// An estimate, not a bill: every page parsed and every token chunked for embedding is priced at
// today's settings (parser, tier, prices), whatever they were when the work was done. LlamaCloud
// charges nothing for a cache hit and may charge for a failed job; OpenAI bills the tokens of a
// retried request again. The providers' dashboards have the real figures.
import type { Config } from '../config.ts';
import { LLAMAPARSE_CREDITS_PER_PAGE, type LlamaParseTier } from '../providers/parser/llamaparse.ts';

/** LlamaCloud credits per parsed page, by tier (its published prices; LLAMAPARSE_TIER): the adapter's table. */
export const CREDITS_PER_PAGE: Readonly<Record<LlamaParseTier, number>> = LLAMAPARSE_CREDITS_PER_PAGE;

/** PRICE_LLAMAPARSE_CREDIT_DOLLARS and PRICE_OPENAI_MILLION_TOKENS_DOLLARS. */
export interface Pricing {
  llamaparseCreditDollars: number;
  openaiMillionTokensDollars: number;
}

/** Which providers did the work, and their prices. Local providers cost nothing. */
export type CostSettings =
  | { parser: 'local'; tier?: null; embedder: 'local' | 'openai'; pricing: Pricing }
  | { parser: 'llamaparse'; tier: LlamaParseTier; embedder: 'local' | 'openai'; pricing: Pricing };

export interface CostEstimate {
  parserDollars: number;
  embedderDollars: number;
  totalDollars: number;
}

/** The cost settings of a configuration: its parser (and tier), its embedder and the prices. */
export function costSettings(config: Pick<Config, 'parser' | 'embedder' | 'pricing'>): CostSettings {
  const base = { embedder: config.embedder.kind, pricing: config.pricing };
  return config.parser.kind === 'llamaparse' ? { ...base, parser: 'llamaparse', tier: config.parser.tier } : { ...base, parser: 'local', tier: null };
}

/** Dollars without the binary floating-point noise of the products (0.1 * 3 = 0.30000000000000004). */
const dollars = (n: number) => Math.round(n * 1e10) / 1e10;

/**
 * The price of one parsed page (the tier's credits per page × the credit's price with LlamaParse)
 * and of one embedded token (the price of a million / 10^6 with OpenAI); 0 for the local parser
 * and the local embedder. What every estimate multiplies: the API's, the CLI's and the metric's.
 */
export function unitPrices(settings: CostSettings): { pageDollars: number; tokenDollars: number } {
  return {
    pageDollars: settings.parser === 'llamaparse' ? CREDITS_PER_PAGE[settings.tier] * settings.pricing.llamaparseCreditDollars : 0,
    tokenDollars: settings.embedder === 'openai' ? settings.pricing.openaiMillionTokensDollars / 1_000_000 : 0,
  };
}

/** The estimated cost of `pages` parsed and `tokens` embedded, at unitPrices. */
export function estimateCostDollars(usage: { pages: number; tokens: number }, settings: CostSettings): CostEstimate {
  const { pageDollars, tokenDollars } = unitPrices(settings);
  const parserDollars = dollars(usage.pages * pageDollars);
  const embedderDollars = dollars(usage.tokens * tokenDollars);
  return { parserDollars, embedderDollars, totalDollars: dollars(parserDollars + embedderDollars) };
}

/** One sentence on what the estimate covers, for the API's answer and the CLI. */
export function costNote(settings: CostSettings): string {
  const parser =
    settings.parser === 'llamaparse'
      ? `LlamaParse ${settings.tier}: ${CREDITS_PER_PAGE[settings.tier]} credits per page at $${settings.pricing.llamaparseCreditDollars} per credit`
      : 'the local parser: free';
  const embedder = settings.embedder === 'openai' ? `OpenAI: $${settings.pricing.openaiMillionTokensDollars} per million tokens` : 'the local embedder: free';
  return `An estimate at the current settings (${parser}; ${embedder}), not a bill: every parsed page is priced (LlamaCloud's cache hits are free), failed jobs and retried requests are not; the providers' dashboards have the real figures.`;
}

/** The days a usage query covers by default (ending today, UTC), and at most. */
export const USAGE_DEFAULT_DAYS = 30;
export const USAGE_MAX_DAYS = 366;

/** A range of days that cannot be answered: 400 INVALID_DATE_RANGE at the API, exit 2 in the CLI. */
export class UsageRangeError extends Error {
  readonly code = 'INVALID_DATE_RANGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageRangeError';
  }
}

const DAY_MS = 86_400_000;
const dayText = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** A YYYY-MM-DD calendar date as UTC midnight in ms, or null (2026-02-30, 26-1-1, ...). */
export function parseDay(text: string): number | null {
  // Year 0000 parses in JavaScript, not in Postgres.
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text) || text.startsWith('0000')) return null;
  const ms = Date.parse(`${text}T00:00:00Z`);
  return Number.isNaN(ms) || dayText(ms) !== text ? null : ms;
}

/**
 * The days from `from` to `to` (YYYY-MM-DD, UTC, both included). `to` defaults to today, `from`
 * to the 30 days ending at `to`; from ≤ to, at most 366 days. Throws UsageRangeError.
 */
export function usageRange(input: { from?: string; to?: string }, now: Date = new Date()): { from: string; to: string } {
  const parse = (name: string, text: string) => {
    const ms = parseDay(text);
    if (ms === null) throw new UsageRangeError(`${name} must be a date as YYYY-MM-DD, got ${JSON.stringify(text.slice(0, 40))}`);
    return ms;
  };
  const to = input.to === undefined ? parse('to', usageDayOf(now)) : parse('to', input.to);
  const from = input.from === undefined ? to - (USAGE_DEFAULT_DAYS - 1) * DAY_MS : parse('from', input.from);
  if (from > to) throw new UsageRangeError(`from (${dayText(from)}) is after to (${dayText(to)})`);
  const days = Math.round((to - from) / DAY_MS) + 1;
  if (days > USAGE_MAX_DAYS) throw new UsageRangeError(`at most ${USAGE_MAX_DAYS} days at once, got ${days} (${dayText(from)} to ${dayText(to)})`);
  return { from: dayText(from), to: dayText(to) };
}

/** The `days` days ending today (UTC), for `--since 30d`. */
export function lastDays(days: number, now: Date = new Date()): { from: string; to: string } {
  if (!Number.isInteger(days) || days < 1 || days > USAGE_MAX_DAYS) throw new UsageRangeError(`the number of days must be 1 to ${USAGE_MAX_DAYS}, got ${days}`);
  const to = parseDay(usageDayOf(now))!;
  return { from: dayText(to - (days - 1) * DAY_MS), to: dayText(to) };
}

/** The UTC date of an instant, YYYY-MM-DD (as usage_daily's days). */
function usageDayOf(at: Date): string {
  return at.toISOString().slice(0, 10);
}
