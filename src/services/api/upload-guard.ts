// What uploads may hold on one API process. Before a body is read: a cap per user (429
// TOO_MANY_UPLOADS) and one over all users (503 SERVER_BUSY), both with Retry-After and a
// closed connection so that the unread body does not linger. While it is read: a minimum
// transfer rate over a sliding window, checked by one unref'd sweeper timer over all active
// uploads (not a timer per upload); a body below it is cut off with 408 UPLOAD_TOO_SLOW
// through the upload's AbortSignal, which the routes hand to the body stream they store.
// And the memory the bodies leave behind: Node's HTTP parser hands over every body chunk in a
// Buffer of its own (up to 64 KB, allocated outside V8's heap), and V8 collects that memory only
// once 64 MB more of it is held than after its last collection, because the few small objects
// an upload allocates never fill the young generation. A streamed 100 MB upload thus grew RSS
// by ~64 MB of chunks already written and dropped. The routes count the body bytes they read
// (UploadLease.received), and every `reclaimEveryBytes` of them the process runs a minor GC
// (about a millisecond), which frees those chunks while they are still young.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { HttpError } from '../errors.ts';

export interface UploadGuardOptions {
  /** Uploads one user may stream at once (UPLOAD_CONCURRENCY_PER_USER). */
  perUser: number;
  /** Uploads this process streams at once, all users and the signed-URL route together (UPLOAD_CONCURRENCY_MAX). */
  max: number;
  /** Minimum body rate over the window (UPLOAD_MIN_BYTES_PER_SECOND); 0 disables the check. */
  minBytesPerSecond: number;
  windowSeconds?: number;
  sweepIntervalMs?: number;
  retryAfterSeconds?: number;
  /** Body bytes, all uploads together, after which a minor GC frees their spent chunks; 0 never. */
  reclaimEveryBytes?: number;
}

/** The default of reclaimEveryBytes: what a streamed upload may leave for V8 to collect. */
export const RECLAIM_EVERY_BYTES = 16 * 1024 * 1024;

export interface UploadLease {
  /** Aborted, with the 408 HttpError as its reason, when the body is cut off for being too slow. */
  readonly signal: AbortSignal;
  /** Counts `bytes` of the body as read (the routes call it for every chunk); see reclaimEveryBytes. */
  received(bytes: number): void;
}

export interface UploadGuard {
  /**
   * Admits an upload, or throws 429 (owner over its cap) or 503 (process at its cap). The
   * slot is held until the response closes. `owner` null: counted against the global cap only.
   */
  admit(request: FastifyRequest, reply: FastifyReply, owner: string | null): UploadLease;
  /** Uploads being streamed right now. */
  readonly active: number;
  close(): void;
}

interface Active {
  request: FastifyRequest;
  owner: string | null;
  controller: AbortController;
  /** socket.bytesRead at each sweep while the body was flowing, oldest first. */
  samples: number[];
}

type Gc = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async' }) => void;

let exposedGc: Gc | null | undefined;

/**
 * V8's gc(): the global one when the process runs with --expose-gc; otherwise exposed now (the
 * flag takes effect for contexts created after it, so a new context hands the function over).
 * null where neither works: the chunks are then collected at V8's own pace, as before.
 */
export function exposeGc(): Gc | null {
  if (exposedGc !== undefined) return exposedGc;
  const global = (globalThis as { gc?: unknown }).gc;
  if (typeof global === 'function') return (exposedGc = global as Gc);
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    exposedGc = typeof gc === 'function' ? (gc as Gc) : null;
  } catch {
    exposedGc = null;
  }
  return exposedGc;
}

export function createUploadGuard(options: UploadGuardOptions): UploadGuard {
  const windowSeconds = options.windowSeconds ?? 10;
  const sweepIntervalMs = options.sweepIntervalMs ?? 1000;
  const windowSamples = Math.max(1, Math.round((windowSeconds * 1000) / sweepIntervalMs)) + 1;
  const minBytesPerWindow = options.minBytesPerSecond * windowSeconds;
  const retryAfter = String(options.retryAfterSeconds ?? 5);
  const uploads = new Set<Active>();
  const perOwner = new Map<string, number>();
  let timer: NodeJS.Timeout | undefined;
  const reclaimEvery = options.reclaimEveryBytes ?? RECLAIM_EVERY_BYTES;
  let unreclaimed = 0;
  const received = (bytes: number) => {
    if (reclaimEvery <= 0 || (unreclaimed += bytes) < reclaimEvery) return;
    unreclaimed = 0;
    exposeGc()?.({ type: 'minor' });
  };

  function sweep(): void {
    for (const upload of uploads) {
      const raw = upload.request.raw;
      // Time the body spends complete, not yet read or paused by our own backpressure (a slow
      // disk, the parser) is not the client's: the window starts again.
      if (upload.controller.signal.aborted || raw.complete || raw.readableFlowing !== true || !raw.socket) {
        upload.samples.length = 0;
        continue;
      }
      upload.samples.push(raw.socket.bytesRead);
      if (upload.samples.length > windowSamples) upload.samples.shift();
      if (upload.samples.length === windowSamples && upload.samples.at(-1)! - upload.samples[0]! < minBytesPerWindow) {
        upload.controller.abort(
          new HttpError(
            408,
            'UPLOAD_TOO_SLOW',
            `the upload was cut off: its body arrived at less than ${options.minBytesPerSecond} bytes per second over ${windowSeconds} s`,
            { connection: 'close' },
          ),
        );
      }
    }
  }

  function release(upload: Active): void {
    if (!uploads.delete(upload)) return;
    if (upload.owner !== null) {
      const n = (perOwner.get(upload.owner) ?? 1) - 1;
      if (n > 0) perOwner.set(upload.owner, n);
      else perOwner.delete(upload.owner);
    }
    if (uploads.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  }

  return {
    admit(request, reply, owner) {
      if (owner !== null && (perOwner.get(owner) ?? 0) >= options.perUser) {
        throw new HttpError(429, 'TOO_MANY_UPLOADS', `you already have ${options.perUser} uploads in progress; wait for one to finish`, {
          'retry-after': retryAfter,
          connection: 'close',
        });
      }
      if (uploads.size >= options.max) {
        throw new HttpError(503, 'SERVER_BUSY', 'the server is receiving as many uploads as it can; retry shortly', {
          'retry-after': retryAfter,
          connection: 'close',
        });
      }
      const upload: Active = { request, owner, controller: new AbortController(), samples: [] };
      uploads.add(upload);
      if (owner !== null) perOwner.set(owner, (perOwner.get(owner) ?? 0) + 1);
      // 'close' comes once the response is sent or the connection is gone, whichever way the
      // handler ended.
      reply.raw.once('close', () => release(upload));
      if (minBytesPerWindow > 0 && !timer) {
        timer = setInterval(sweep, sweepIntervalMs);
        timer.unref();
      }
      return { signal: upload.controller.signal, received };
    },
    get active() {
      return uploads.size;
    },
    close() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}

/** Settles like `promise`, or rejects with the signal's reason as soon as it is aborted. */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
