// Long-poll support: one LISTEN connection per process fans status notifications out to the
// requests waiting on a document, so waiting costs no database work per waiter.
import type { Sql } from '../../db/client.ts';
import type { Logger } from '../../observability/logger.ts';
import { STATUS_CHANNEL } from '../../projections/document-status.ts';

type Wake = (version: number) => void;

export class StatusWaiter {
  private readonly waiters = new Map<string, Set<Wake>>();
  private unlisten: (() => Promise<void>) | null = null;
  private closed = false;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const sub = await this.sql.listen(
      STATUS_CHANNEL,
      (payload) => this.dispatch(payload),
      // postgres.js re-LISTENs after a reconnect; wake everyone so nobody sleeps through a gap.
      () => this.wakeAll(),
    );
    this.unlisten = sub.unlisten;
  }

  private dispatch(payload: string): void {
    const sep = payload.lastIndexOf(':');
    const set = this.waiters.get(payload.slice(0, sep));
    if (!set) return;
    const version = Number(payload.slice(sep + 1));
    for (const wake of [...set]) wake(version);
  }

  private wakeAll(): void {
    for (const set of this.waiters.values()) for (const wake of [...set]) wake(Number.MAX_SAFE_INTEGER);
  }

  get waiting(): number {
    let n = 0;
    for (const set of this.waiters.values()) n += set.size;
    return n;
  }

  /**
   * Registers interest in `documentId` before the caller reads its row, so a change between
   * the read and the wait is never missed. `wait` resolves true when a version other than
   * `seen` is announced, false on timeout, abort or shutdown.
   */
  subscribe(documentId: string): { wait(seen: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean>; cancel(): void } {
    let latest = -1;
    let resolveWait: ((changed: boolean) => void) | null = null;
    const wake: Wake = (version) => {
      latest = Math.max(latest, version);
      resolveWait?.(true);
    };
    let set = this.waiters.get(documentId);
    if (!set) this.waiters.set(documentId, (set = new Set()));
    set.add(wake);
    const cancel = () => {
      set.delete(wake);
      if (set.size === 0 && this.waiters.get(documentId) === set) this.waiters.delete(documentId);
    };
    return {
      cancel,
      wait: (seen, timeoutMs, signal) =>
        new Promise<boolean>((resolve) => {
          if (this.closed) return resolve(false);
          if (latest !== -1 && latest !== seen) return resolve(true);
          const timer = setTimeout(() => finish(false), timeoutMs);
          const onAbort = () => finish(false);
          signal?.addEventListener('abort', onAbort, { once: true });
          function finish(changed: boolean) {
            clearTimeout(timer);
            signal?.removeEventListener('abort', onAbort);
            resolveWait = null;
            resolve(changed);
          }
          resolveWait = (changed) => {
            if (latest !== seen) finish(changed);
          };
        }),
    };
  }

  /** Ends every wait at once, so a draining server is not held by long-polls. */
  async close(): Promise<void> {
    this.closed = true;
    this.wakeAll();
    await this.unlisten?.().catch((err: unknown) => this.logger.warn({ err }, 'unlisten failed'));
  }
}
