// Long-poll support: one LISTEN connection per process fans status notifications out to the
// requests waiting on a document, so waiting costs no database work per waiter. The same
// notifications keep the process's status cache (status-cache.ts) true: each evicts its
// document's row, and the cache is emptied whenever the connection drops or listens again.
import { EventEmitter } from 'node:events';
import type { Sql } from '../../db/client.ts';
import type { Logger } from '../../observability/logger.ts';
import { STATUS_CHANNEL } from '../../projections/document-status.ts';

type Wake = (version: number) => void;

/** What else hears the notifications, before the waiters are woken (the status cache). */
export interface StatusObserver {
  /** Document `id` changed to `version`. */
  changed(id: string, version: number): void;
  /** Anything may have changed (a notification that names no document). */
  clear(): void;
  /** The LISTEN connection is established (true: again after a reconnect) or has dropped (false). */
  setListening(live: boolean): void;
}

type PoolOptions = { onclose?: (connectionId: number) => void };
/** The close hooks installed on postgres.js's listening connections, one wrapper per connection. */
const closeHooks = new WeakMap<PoolOptions, Set<() => void>>();

/**
 * Calls `hook` whenever the connection postgres.js listens on closes (it re-LISTENs by itself,
 * and calls each onlisten again once it has). postgres.js announces the re-LISTEN but not the
 * drop, and its listening connection is a pool of its own, `sql.listen.sql`, whose `onclose`
 * option it reads at each close: wrapped here. Null when that is not there (another postgres.js):
 * then nobody can know that notifications are being lost, and the cache stays off.
 */
function onListenerClose(sql: Sql, hook: () => void): (() => void) | null {
  const options = (sql.listen as unknown as { sql?: { options?: PoolOptions } }).sql?.options;
  if (!options || !('onclose' in options)) return null;
  let hooks = closeHooks.get(options);
  if (!hooks) {
    const all = (hooks = new Set());
    const original = options.onclose;
    options.onclose = (connectionId) => {
      for (const h of [...all]) h();
      original?.(connectionId);
    };
    closeHooks.set(options, hooks);
  }
  hooks.add(hook);
  const installed = hooks;
  return () => void installed.delete(hook);
}

export class StatusWaiter {
  private readonly waiters = new Map<string, Set<Wake>>();
  private unlisten: (() => Promise<void>) | null = null;
  private unhook: (() => void) | null = null;
  private closed = false;
  private live = false;
  /**
   * `listen` (the LISTEN is established, again after a reconnect), `drop` (its connection
   * closed) and `notification` (one was handled: the observer has seen it and the waiters are
   * woken). For tests and diagnostics.
   */
  readonly events = new EventEmitter();
  /** Notifications handled since start. */
  notifications = 0;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
    private readonly observer: StatusObserver | null = null,
  ) {}

  /** Whether the LISTEN connection is established now. */
  get listening(): boolean {
    return this.live;
  }

  async start(): Promise<void> {
    const listening = this.sql.listen(
      STATUS_CHANNEL,
      (payload) => this.dispatch(payload),
      // postgres.js re-LISTENs after a reconnect: the cache starts afresh, and everyone is woken
      // so that nobody sleeps through a gap.
      () => {
        this.live = true;
        if (this.unhook && !this.closed) this.observer?.setListening(true);
        this.wakeAll();
        this.events.emit('listen');
      },
    );
    // postgres.js made its listening pool synchronously, in the call above: hooked before the
    // LISTEN completes, so the cache is never on without the hook.
    this.unhook = onListenerClose(this.sql, () => {
      this.live = false;
      this.observer?.setListening(false);
      this.events.emit('drop');
    });
    if (!this.unhook && this.observer) this.logger.warn('the status cache is off: the LISTEN connection cannot be watched for drops');
    const sub = await listening;
    this.unlisten = sub.unlisten;
  }

  private dispatch(payload: string): void {
    this.notifications++;
    const sep = payload.lastIndexOf(':');
    const id = payload.slice(0, sep);
    const version = Number(payload.slice(sep + 1));
    if (sep <= 0 || !Number.isSafeInteger(version)) {
      // Not `<id>:<version>`: whatever it says, it says something changed.
      this.observer?.clear();
      this.wakeAll();
    } else {
      this.observer?.changed(id, version);
      const set = this.waiters.get(id);
      if (set) for (const wake of [...set]) wake(version);
    }
    this.events.emit('notification', payload);
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
    this.unhook?.();
    this.observer?.setListening(false);
    this.wakeAll();
    await this.unlisten?.().catch((err: unknown) => this.logger.warn({ err }, 'unlisten failed'));
  }
}
