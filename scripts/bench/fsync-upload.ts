// What the fs storage's fsyncs cost an upload on this machine: 4 KB files written the way
// providers/storage/fs.ts publishes one (temp file, write, fsync, close, mkdir, rename, fsync of
// the directory), with and without each fsync, back to back in alternating rounds so that a
// drift of the machine (other work on its two cores and one disk) spreads over every variant.
// The first row is the real Storage.put, for reference. Each variant runs one upload at a time
// (its latency) and 16 at once (what libuv's 4-thread pool makes of concurrent uploads).
//
//   node --import tsx scripts/bench/fsync-upload.ts [--count 300] [--rounds 3] [--dir /tmp]
//
// Only for measuring: the variants without an fsync are not durable, and fs.ts keeps both.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, open, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { createFsStorage } from '../../src/providers/storage/fs.ts';
import { fmt, summarize } from './stats.ts';

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
    dir: { type: 'string', default: os.tmpdir() },
  },
});
const count = Number(args.count);
const rounds = Number(args.rounds);
const concurrency = Number(args.concurrency);
if (![count, rounds, concurrency].every((n) => Number.isInteger(n) && n > 0 && n <= 100_000)) {
  process.stderr.write('fsync-upload: --count, --rounds and --concurrency must be integers in 1..100000\n');
  process.exit(2);
}

interface Variant {
  name: string;
  put(root: string, key: string, body: Buffer): Promise<unknown>;
}

/**
 * fs.ts's sequence by hand, each fsync optional. `fileSync`: 'fsync' or 'fdatasync' before the
 * rename; 'after-rename' syncs the still-open file once the rename is done and skips the
 * directory (one journal commit on ext4, where syncing the renamed inode commits the rename too;
 * not a POSIX guarantee).
 */
function byHand(name: string, fileSync: 'fsync' | 'fdatasync' | 'after-rename' | false, dirSync: boolean): Variant {
  return {
    name,
    async put(root, key, body) {
      const tmpDir = path.join(root, '.tmp');
      const tmp = path.join(tmpDir, randomUUID());
      const full = path.join(root, key);
      const file = await open(tmp, 'wx', 0o644).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        await mkdir(tmpDir, { recursive: true });
        return open(tmp, 'wx', 0o644);
      });
      try {
        await file.write(body, 0, body.length);
        if (fileSync === 'fsync') await file.sync();
        if (fileSync === 'fdatasync') await file.datasync();
        if (fileSync === 'after-rename') {
          await mkdir(path.dirname(full), { recursive: true });
          await rename(tmp, full);
          await file.sync();
        }
      } finally {
        await file.close();
      }
      if (fileSync !== 'after-rename') {
        await mkdir(path.dirname(full), { recursive: true });
        await rename(tmp, full);
      }
      if (dirSync) {
        const dir = await open(path.dirname(full), 'r');
        try {
          await dir.sync();
        } finally {
          await dir.close();
        }
      }
    },
  };
}

const storages = new Map<string, ReturnType<typeof createFsStorage>>();
const variants: Variant[] = [
  { name: 'Storage.put (fs.ts as it is)', put: (root, key, body) => (storages.get(root) ?? storages.set(root, createFsStorage(root)).get(root)!).put(key, Readable.from([body])) },
  byHand('file fsync + directory fsync (fs.ts)', 'fsync', true),
  byHand('file fdatasync + directory fsync', 'fdatasync', true),
  byHand('rename, then file fsync (ext4 only)', 'after-rename', false),
  byHand('file fsync only', 'fsync', false),
  byHand('directory fsync only', false, true),
  byHand('no fsync', false, false),
];

async function run(variant: Variant, root: string, inFlight: number): Promise<{ perSecond: number; cpuMs: number; latency: ReturnType<typeof summarize> }> {
  const bodies = Array.from({ length: count }, () => randomBytes(4096));
  const latencies: number[] = [];
  let next = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < count) {
        const i = next++;
        const t = performance.now();
        await variant.put(root, `documents/${randomUUID()}/original`, bodies[i]!);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const used = process.cpuUsage(cpu);
  // The process's CPU (all threads: the fsyncs run, and are charged, on libuv's pool) per upload.
  return { perSecond: count / ((performance.now() - started) / 1000), cpuMs: (used.user + used.system) / 1000 / count, latency: summarize(latencies) };
}

async function main(): Promise<void> {
  const base = await mkdtemp(path.join(args.dir, 'docpipe-fsync-'));
  const results = new Map<string, { perSecond: number[]; cpuMs: number[]; p50: number[]; p99: number[] }>();
  try {
    for (let round = 1; round <= rounds; round++) {
      // Alternate the order too: ABCDE, then EDCBA.
      const order = round % 2 === 1 ? variants : [...variants].reverse();
      for (const inFlight of [1, concurrency]) {
        for (const variant of order) {
          const root = path.join(base, `r${round}-${inFlight}-${variants.indexOf(variant)}`);
          const r = await run(variant, root, inFlight);
          const key = `${variant.name} | ${inFlight} at once`;
          const acc = results.get(key) ?? { perSecond: [], cpuMs: [], p50: [], p99: [] };
          acc.perSecond.push(r.perSecond);
          acc.cpuMs.push(r.cpuMs);
          acc.p50.push(r.latency.p50);
          acc.p99.push(r.latency.p99);
          results.set(key, acc);
          await rm(root, { recursive: true, force: true });
        }
      }
      process.stderr.write(`round ${round}/${rounds} done\n`);
    }
  } finally {
    await rm(base, { recursive: true, force: true });
  }
  const rows = [...results].sort(([a], [b]) => (a.endsWith('1 at once') === b.endsWith('1 at once') ? 0 : a.endsWith('1 at once') ? -1 : 1));
  process.stdout.write(`${count} uploads of 4 KB per variant and round, ${rounds} rounds; on ${args.dir}; UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}\n`);
  process.stdout.write('variant | in flight | uploads/s per round | CPU ms per upload per round | p50 ms per round | p99 ms per round\n');
  for (const [key, r] of rows) {
    process.stdout.write(`${key} | ${r.perSecond.map((v) => fmt(v, 0)).join(', ')} | ${r.cpuMs.map((v) => fmt(v, 2)).join(', ')} | ${r.p50.map((v) => fmt(v, 2)).join(', ')} | ${r.p99.map((v) => fmt(v, 2)).join(', ')}\n`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
