// Threat detection: rules that act, not only count. Each detection increments
// docpipe_security_events_total{kind} and writes an audit row.
//   - auth_failures: an address whose requests fail authentication AUTH_BLOCK_AFTER times within a
//     minute is blocked for AUTH_BLOCK_SECONDS (403 ADDRESS_BLOCKED before any work); the block
//     is audited and expires by itself.
//   - foreign_ids: a user asking for FOREIGN_ID_FLAG_AFTER distinct documents of other owners
//     within ten minutes is flagged (enumeration of ids).
//   - forged_webhooks: an address sending FORGED_WEBHOOK_FLAG_AFTER webhook deliveries that fail
//     authentication within a minute is flagged.
// State is per process, bounded, and forgets quiet actors; N machines each decide on their own.
import { securityEvents } from '../observability/metrics.ts';
import type { Logger } from '../observability/logger.ts';
import type { Audit, AuditEntry } from './audit.ts';

export interface ThreatSettings {
  authFailuresToBlock: number;
  blockSeconds: number;
  foreignIdsToFlag: number;
  forgedWebhooksToFlag: number;
  /** Failed webhook deliveries per address per minute past which the address is refused (429). */
  webhookFailuresPerAddress: number;
}

export interface RequestContext {
  clientAddress: string;
  userAgent?: string | null;
  requestId?: string | null;
}

export interface Threats {
  /** The block on an address, if any: when it ends. */
  blockedUntil(address: string): number | null;
  authFailed(context: RequestContext): void;
  foreignAccess(sub: string, documentId: string, context: RequestContext): void;
  webhookForged(context: RequestContext): void;
  /** Has this address failed webhook authentication too often this minute? (Then refuse it, unread.) */
  webhookLimited(address: string): boolean;
}

const MINUTE = 60_000;
const FOREIGN_WINDOW = 10 * MINUTE;
/** Actors tracked at once per rule; the oldest are forgotten first. */
const MAX_TRACKED = 50_000;

/** Occurrences per key within a sliding window of `windowMs` (timestamps kept up to `threshold`). */
class WindowCounter<V> {
  private readonly seen = new Map<string, { times: number[]; values: Map<V, number> }>();
  constructor(private readonly windowMs: number) {}
  /** Adds one occurrence (with an optional distinct value); returns the count (or distinct values) in the window. */
  add(key: string, value?: V): number {
    const now = Date.now();
    let entry = this.seen.get(key);
    if (!entry) {
      if (this.seen.size >= MAX_TRACKED) this.seen.delete(this.seen.keys().next().value!);
      entry = { times: [], values: new Map() };
    }
    this.seen.delete(key);
    this.seen.set(key, entry); // most recent last
    entry.times = entry.times.filter((t) => now - t < this.windowMs);
    entry.times.push(now);
    if (value !== undefined) {
      // Distinct values seen within the window: older ones are forgotten.
      for (const [v, at] of entry.values) if (now - at >= this.windowMs) entry.values.delete(v);
      entry.values.set(value, now);
      return entry.values.size;
    }
    return entry.times.length;
  }
  reset(key: string): void {
    this.seen.delete(key);
  }
  /** Occurrences in the window, without adding one. */
  count(key: string): number {
    const now = Date.now();
    return this.seen.get(key)?.times.filter((t) => now - t < this.windowMs).length ?? 0;
  }
}

export function createThreats(options: { settings: ThreatSettings; audit: Audit; logger: Logger }): Threats {
  const { settings, audit, logger } = options;
  const blocks = new Map<string, number>();
  const authFailures = new WindowCounter<never>(MINUTE);
  const foreign = new WindowCounter<string>(FOREIGN_WINDOW);
  const forged = new WindowCounter<never>(MINUTE);

  const detected = (kind: string, entry: AuditEntry, message: string) => {
    securityEvents.inc({ kind });
    logger.warn({ kind, actor: entry.actor, clientAddress: entry.clientAddress, ...entry.details }, message);
    void audit.record(entry);
  };

  return {
    blockedUntil(address) {
      const until = blocks.get(address);
      if (until === undefined) return null;
      if (until > Date.now()) return until;
      blocks.delete(address);
      void audit.record({ actor: `address:${address}`, action: 'block.expired', outcome: 'success', clientAddress: address });
      return null;
    },
    authFailed(context) {
      const count = authFailures.add(context.clientAddress);
      if (count < settings.authFailuresToBlock || blocks.has(context.clientAddress)) return;
      const until = Date.now() + settings.blockSeconds * 1000;
      if (blocks.size >= MAX_TRACKED) blocks.delete(blocks.keys().next().value!);
      blocks.set(context.clientAddress, until);
      authFailures.reset(context.clientAddress);
      detected('auth_failures', {
        actor: `address:${context.clientAddress}`,
        action: 'block.address',
        outcome: 'blocked',
        clientAddress: context.clientAddress,
        userAgent: context.userAgent,
        requestId: context.requestId,
        details: { failures: count, windowSeconds: 60, blockedUntil: new Date(until).toISOString() },
      }, 'address blocked after repeated authentication failures');
    },
    foreignAccess(sub, documentId, context) {
      const distinct = foreign.add(sub, documentId);
      if (distinct !== settings.foreignIdsToFlag) return; // once per window, at the threshold
      detected('foreign_ids', {
        actor: `user:${sub}`,
        action: 'flag.foreign_ids',
        outcome: 'flagged',
        clientAddress: context.clientAddress,
        userAgent: context.userAgent,
        requestId: context.requestId,
        details: { distinctDocuments: distinct, windowSeconds: FOREIGN_WINDOW / 1000 },
      }, 'user flagged: asking for many documents of other owners');
    },
    webhookLimited(address) {
      return forged.count(address) >= settings.webhookFailuresPerAddress;
    },
    webhookForged(context) {
      const count = forged.add(context.clientAddress);
      if (count !== settings.forgedWebhooksToFlag) return;
      detected('forged_webhooks', {
        actor: `address:${context.clientAddress}`,
        action: 'flag.forged_webhooks',
        outcome: 'flagged',
        clientAddress: context.clientAddress,
        userAgent: context.userAgent,
        requestId: context.requestId,
        details: { failures: count, windowSeconds: 60 },
      }, 'address flagged: a burst of webhook deliveries failing authentication');
    },
  };
}
