// Natural batching ("group commit"): items submitted while a batch is being processed wait and
// go together in the next one. Idle, an item goes at once, alone (no added latency); under load,
// batches grow by themselves, and the per-batch cost (a transaction, its round trips, its
// commit) is shared. At most `concurrency` batches (default 1) run at a time per batcher: more
// than one where each batch waits mostly on the network (a worker far from its database).

export interface Batcher<T, R> {
  submit(item: T): Promise<R>;
  /** Items waiting or running. */
  readonly pending: number;
}

export function createBatcher<T, R>(run: (items: T[]) => Promise<R[]>, options: { maxBatch: number; concurrency?: number }): Batcher<T, R> {
  const lanes = options.concurrency ?? 1;
  let queue: { item: T; resolve: (r: R) => void; reject: (err: unknown) => void }[] = [];
  let running = 0;
  let active = 0;

  async function drain(): Promise<void> {
    active++;
    while (queue.length > 0) {
      const batch = queue.slice(0, options.maxBatch);
      queue = queue.slice(batch.length);
      running += batch.length;
      try {
        const results = await run(batch.map((b) => b.item));
        if (results.length !== batch.length) throw new Error(`batch returned ${results.length} results for ${batch.length} items`);
        batch.forEach((b, i) => b.resolve(results[i]!));
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
      running -= batch.length;
    }
    active--;
  }

  return {
    submit(item) {
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, resolve, reject });
        if (active < lanes) void drain();
      });
    },
    get pending() {
      return queue.length + running;
    },
  };
}
