// The status rows GET /v1/documents/:id answers from, kept in each API process by document id,
// so that polling an unchanged document costs no database round trip. docs/CACHING.md.
//
// A row is only as good as the notifications that would evict it: every change to
// document_status is announced on STATUS_CHANNEL (`<id>:<version>`, at commit), and the
// process's one LISTEN connection (status-waiter.ts) passes each to `changed`. So rows are kept
// only while that connection is established (`listening(true)`); when it drops, notifications
// are being lost, and everything is forgotten and nothing kept until it listens again.
//
// A read that races a notification must not put back the row the notification made stale:
// each miss in flight remembers the highest version announced for its document meanwhile, and
// its row is kept only if it is at least that new (and no drop or re-listen happened since it
// started). A kept row is never replaced by an older version.
//
// Rows are the owner's and the service role's alike: the caller checks ownership on every use,
// as it does on a row read from the database.
import type { DocumentStatusRow } from '../../projections/document-status.ts';
import { statusCacheRequests } from '../../observability/metrics.ts';

/**
 * Rows kept at most (the least recently used goes first). A row is about 3 KB in memory
 * (measured), so this is 15 MB at worst on a 1 GB machine, and as many documents as one process
 * lets be long-polled at once (LONG_POLLS_MAX, 5000): the documents being watched fit.
 */
export const STATUS_CACHE_MAX_ENTRIES = 5_000;
/**
 * A row is read again after this long even if no notification came: the backstop for a write
 * that does not notify (an operator's SQL, a projection rebuild) or a connection that died
 * without closing. Polls of one document cost one read a minute instead of one each.
 */
export const STATUS_CACHE_MAX_AGE_MS = 60_000;

export interface StatusCacheOptions {
  maxEntries?: number;
  maxAgeMs?: number;
}

interface Entry {
  row: DocumentStatusRow;
  storedAt: number;
}

/** A miss in flight: the highest version announced for its document since it started. */
interface Read {
  atLeast: number;
  epoch: number;
}

export class StatusCache {
  private readonly rows = new Map<string, Entry>();
  private readonly reads = new Map<string, Set<Read>>();
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;
  /** Whether the LISTEN connection is established: rows are kept only then. */
  private live = false;
  /** Bumped whenever everything is forgotten; a miss started under another epoch keeps nothing. */
  private epoch = 0;
  /** Counts for tests and the docs (the metric counts hits and misses too). */
  readonly stats = { hits: 0, misses: 0, stored: 0, evicted: 0, cleared: 0 };

  constructor(options: StatusCacheOptions = {}) {
    this.maxEntries = options.maxEntries ?? STATUS_CACHE_MAX_ENTRIES;
    this.maxAgeMs = options.maxAgeMs ?? STATUS_CACHE_MAX_AGE_MS;
  }

  get size(): number {
    return this.rows.size;
  }

  get listening(): boolean {
    return this.live;
  }

  /**
   * The document's row: the kept one, or `load`'s (kept when nothing made it stale meanwhile).
   * `load` reads the row by id alone (undefined: no such document); nothing about the caller.
   */
  async read(requested: string, load: () => Promise<DocumentStatusRow | undefined>): Promise<DocumentStatusRow | undefined> {
    // Notifications name the id as Postgres prints it (lowercase); a client may send it in
    // capitals, and its row must be kept under the name its notification will evict.
    const id = requested.toLowerCase();
    const entry = this.rows.get(id);
    if (entry) {
      if (this.live && Date.now() - entry.storedAt < this.maxAgeMs) {
        // Most recently used last: Map keeps insertion order, so the first key is the eviction candidate.
        this.rows.delete(id);
        this.rows.set(id, entry);
        this.stats.hits++;
        statusCacheRequests.inc({ result: 'hit' });
        return entry.row;
      }
      this.rows.delete(id);
    }
    this.stats.misses++;
    statusCacheRequests.inc({ result: 'miss' });
    if (!this.live) return load();
    const read: Read = { atLeast: 0, epoch: this.epoch };
    let pending = this.reads.get(id);
    if (!pending) this.reads.set(id, (pending = new Set()));
    pending.add(read);
    try {
      const row = await load();
      if (row && row.id === id && this.live && read.epoch === this.epoch && row.version >= read.atLeast) this.store(id, row);
      return row;
    } finally {
      pending.delete(read);
      if (pending.size === 0 && this.reads.get(id) === pending) this.reads.delete(id);
    }
  }

  private store(id: string, row: DocumentStatusRow): void {
    const kept = this.rows.get(id);
    if (kept && kept.row.version > row.version) return;
    this.rows.delete(id);
    this.rows.set(id, { row: Object.freeze(row), storedAt: Date.now() });
    this.stats.stored++;
    while (this.rows.size > this.maxEntries) {
      this.rows.delete(this.rows.keys().next().value!);
      this.stats.evicted++;
    }
  }

  /** Document `id` changed to `version` (its notification, or a command this process committed). */
  changed(id: string, version: number): void {
    const kept = this.rows.get(id);
    if (kept && kept.row.version < version) this.rows.delete(id);
    const pending = this.reads.get(id);
    if (pending) for (const read of pending) read.atLeast = Math.max(read.atLeast, version);
  }

  /** Forgets every row, and keeps none of the misses now in flight. */
  clear(): void {
    this.rows.clear();
    this.epoch++;
    this.stats.cleared++;
  }

  /**
   * The LISTEN connection is established (true) or has dropped (false). Either way everything is
   * forgotten: on a drop, notifications are being lost; on a re-listen, some were lost before it.
   */
  setListening(live: boolean): void {
    this.live = live;
    this.clear();
  }
}
