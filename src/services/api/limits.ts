// Request budgets of the API (@fastify/rate-limit's counters, fixed one-minute windows):
//   - per client address, before authentication: floods of bad tokens, scans, unauthenticated
//     uploads are cut off before any work;
//   - per user, after it, in four budgets: uploads (POST /v1/documents, /v1/uploads...),
//     searches (POST /v1/search: each embeds its query, from the provider budget the workers
//     draw on too), long-polls (GET with ?wait), and every other request;
//   - open long-polls, per user and in total: each holds a connection and a listener for up to
//     LONG_POLL_MAX_SECONDS, so they are capped by count, not only by rate.
// A refusal is 429 with Retry-After, RateLimit-Limit/Remaining/Reset and the error shape.
// Budgets are per process: N api machines allow N times as much (docs/SECURITY.md).
import { isIP } from 'node:net';
import { normalizeIP } from '@fastify/rate-limit';
import type { FastifyRequest } from 'fastify';
import { rateLimited } from '../../observability/metrics.ts';
import { HttpError } from '../errors.ts';
import type { App } from '../http.ts';

export interface RateLimitSettings {
  /** Requests per client address per minute (before authentication). 0: no limit (each budget). */
  perAddress: number;
  /** Per user per minute. */
  uploads: number;
  searches: number;
  longPolls: number;
  requests: number;
  /** Open long-polls at once. */
  longPollsPerUser: number;
  longPollsMax: number;
}

export type UserBudget = 'uploads' | 'searches' | 'longPolls' | 'requests';

/**
 * The client's address: Fly-Client-IP when the service is behind Fly's proxy (TRUST_PROXY=fly),
 * which sets it from the connection it accepted; otherwise the socket's peer. A client reaching
 * the process directly cannot choose its identity by sending the header.
 */
export function clientAddress(request: FastifyRequest, trustProxy: 'fly' | 'none'): string {
  let address = request.socket.remoteAddress ?? 'unknown';
  if (trustProxy === 'fly') {
    const header = request.headers['fly-client-ip'];
    if (typeof header === 'string' && isIP(header.trim())) address = header.trim();
  }
  // IPv6 clients hold a /64 each: one client, or it would have 2^64 budgets, blocks and audit
  // keys. IPv4-mapped IPv6 becomes the IPv4 address.
  return isIP(address) ? normalizeIP(address, 64) : address;
}

/** What a counter says (isAllowed: on an allow list, not counted; we keep none). */
type Check = { isAllowed: true } | { isAllowed: false; isExceeded: boolean; max: number; remaining: number; ttlInSeconds: number };
type Checker = (request: FastifyRequest) => Promise<Check>;
type Counted = Extract<Check, { isAllowed: false }>;

const WINDOW_MS = 60_000;

const REFUSALS: Record<UserBudget, string> = {
  uploads: 'too many uploads',
  searches: 'too many searches',
  longPolls: 'too many long-polls',
  requests: 'too many requests',
};

export interface Limits {
  /** Before authentication: the client address's budget. Throws 429. */
  address(request: FastifyRequest, address: string): Promise<void>;
  /** After authentication: the user's budget of this kind. Throws 429; sets RateLimit-* headers. */
  user(request: FastifyRequest, reply: { header(name: string, value: string): unknown }, sub: string, budget: UserBudget): Promise<void>;
  /** A slot for an open long-poll; release it when the request ends. Throws 429 when none is free. */
  longPoll(sub: string): () => void;
}

const BUDGET_LABEL = { address: 'address', uploads: 'uploads', searches: 'searches', longPolls: 'long_polls', requests: 'requests', longPollSlots: 'long_poll_slots' } as const;

function refuse(check: Counted, what: string, budget: UserBudget | 'address'): never {
  rateLimited.inc({ budget: BUDGET_LABEL[budget] });
  const reset = String(Math.max(1, check.ttlInSeconds));
  throw new HttpError(429, 'RATE_LIMITED', `${what}: at most ${check.max} per minute; retry in ${reset} s`, {
    'retry-after': reset,
    'ratelimit-limit': String(check.max),
    'ratelimit-remaining': '0',
    'ratelimit-reset': reset,
  });
}

export function createLimits(app: App, settings: RateLimitSettings): Limits {
  const keyed = new WeakMap<FastifyRequest, string>();
  const unlimited: Checker = async () => ({ isAllowed: true });
  const checker = (max: number): Checker =>
    max === 0 ? unlimited : (app.createRateLimit({ max, timeWindow: WINDOW_MS, keyGenerator: (request: FastifyRequest) => keyed.get(request) ?? 'unknown' }) as Checker);
  const byAddress = checker(settings.perAddress);
  const byUser: Record<UserBudget, Checker> = {
    uploads: checker(settings.uploads),
    searches: checker(settings.searches),
    longPolls: checker(settings.longPolls),
    requests: checker(settings.requests),
  };
  const open = new Map<string, number>();
  let openTotal = 0;

  return {
    async address(request, address) {
      // IPv6 clients hold a /64 each: counted as one, or one client would have 2^64 budgets.
      keyed.set(request, `address:${normalizeIP(address, 64)}`);
      const check = await byAddress(request);
      if (!check.isAllowed && check.isExceeded) refuse(check, 'too many requests from this address', 'address');
    },
    async user(request, reply, sub, budget) {
      keyed.set(request, `${budget}:${sub}`);
      const check = await byUser[budget](request);
      if (check.isAllowed) return;
      if (check.isExceeded) refuse(check, REFUSALS[budget], budget);
      reply.header('ratelimit-limit', String(check.max));
      reply.header('ratelimit-remaining', String(Math.max(0, check.remaining)));
      reply.header('ratelimit-reset', String(Math.max(0, check.ttlInSeconds)));
    },
    longPoll(sub) {
      const mine = open.get(sub) ?? 0;
      if (mine >= settings.longPollsPerUser || openTotal >= settings.longPollsMax) rateLimited.inc({ budget: BUDGET_LABEL.longPollSlots });
      if (mine >= settings.longPollsPerUser) {
        throw new HttpError(429, 'TOO_MANY_LONG_POLLS', `at most ${settings.longPollsPerUser} open long-polls per user (LONG_POLLS_PER_USER); close one or poll without ?wait`, { 'retry-after': '1' });
      }
      if (openTotal >= settings.longPollsMax) {
        throw new HttpError(429, 'TOO_MANY_LONG_POLLS', 'this server holds as many long-polls as it may (LONG_POLLS_MAX); retry shortly or poll without ?wait', { 'retry-after': '1' });
      }
      open.set(sub, mine + 1);
      openTotal++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        openTotal--;
        const left = (open.get(sub) ?? 1) - 1;
        if (left > 0) open.set(sub, left);
        else open.delete(sub);
      };
    },
  };
}

/** Which of a user's budgets a request draws on. */
export function budgetOf(request: FastifyRequest): UserBudget {
  const path = request.url.split('?')[0]!;
  if (request.method === 'POST' && (path === '/v1/documents' || path.startsWith('/v1/uploads'))) return 'uploads';
  if (request.method === 'POST' && request.routeOptions.url === '/v1/search') return 'searches';
  const wait = Number((request.query as { wait?: unknown } | undefined)?.wait ?? 0);
  if (request.method === 'GET' && wait > 0) return 'longPolls';
  return 'requests';
}
