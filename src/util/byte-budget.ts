// A budget of bytes that concurrent jobs draw from before they hold a document in memory, so
// that the worker's main process holds a bounded amount of documents at once however many jobs
// run: a job that would take the budget past its limit waits its turn (first come, first served),
// and one document larger than the whole budget runs alone. What a job holds is a small multiple
// of the document's size (the original or the parsed text, its copy to the sandbox, what comes
// back); the budget counts document bytes, docs/LIMITS.md gives the multiple.

export interface ByteBudget {
  /** Resolves with the release function once `bytes` fit; rejects with `signal.reason` if aborted first. */
  acquire(bytes: number, signal?: AbortSignal): Promise<() => void>;
  /** Bytes granted now. */
  inUse(): number;
  /** Jobs waiting for their turn. */
  waiting(): number;
}

interface Waiter {
  bytes: number;
  grant(): void;
}

export function createByteBudget(limitBytes: number): ByteBudget {
  let used = 0;
  const queue: Waiter[] = [];

  const fits = (bytes: number) => used === 0 || used + bytes <= limitBytes;

  function take(bytes: number): () => void {
    used += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      used -= bytes;
      // In order: a large job at the head is not overtaken forever by small ones behind it.
      while (queue.length > 0 && fits(queue[0]!.bytes)) queue.shift()!.grant();
    };
  }

  return {
    acquire(bytes, signal) {
      const size = Math.max(0, Math.ceil(bytes));
      if (signal?.aborted) return Promise.reject(signal.reason);
      if (queue.length === 0 && fits(size)) return Promise.resolve(take(size));
      return new Promise((resolve, reject) => {
        const onAbort = () => {
          const index = queue.indexOf(waiter);
          if (index >= 0) queue.splice(index, 1);
          reject(signal!.reason);
        };
        const waiter: Waiter = {
          bytes: size,
          grant: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve(take(size));
          },
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        queue.push(waiter);
      });
    },
    inUse: () => used,
    waiting: () => queue.length,
  };
}
