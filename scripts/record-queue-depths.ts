// Records the queue gauges the worker autoscaler reads (fly.autoscaler.toml) during a real burst,
// into test/fixtures/queue-depths.json, which test/unit/autoscaler.test.ts and
// test/integration/autoscaler-query.test.ts replay:
//
//   node_modules/.bin/node --import tsx scripts/record-queue-depths.ts [--docs 300] [--bytes 2048] [--out FILE]
//
// It runs the real CLI (`src/cli.ts all`: api, worker and webhook in one process, the local parser
// and embedder, an embedded PostgreSQL in a temp data directory) on free loopback ports, gets a
// token from `src/cli.ts token`, uploads --docs text documents of --bytes each through POST /v1/documents,
// and reads the api's /metrics every --every-ms (500) from a few seconds before the burst until
// the stage queues have been empty for a few seconds (or --budget seconds pass). The sampler's
// interval is 1 s here (METRICS_SAMPLE_INTERVAL_SECONDS; 15 s in production) so the half-second
// reads see the queues move. Everything started is stopped and the temp directory removed.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { QUEUES } from '../src/queue/jobs.ts';
import { freePort } from '../src/util/free-port.ts';
import { MULTIPART_CONTENT_TYPE, multipartBody, textDocument } from './bench/documents.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NODE = path.join(ROOT, 'node_modules/.bin/node');
const STATES = ['waiting', 'scheduled', 'active'] as const;
/** Reads in a row with every stage queue empty that end the recording once the burst is in. */
const QUIET_READS = 6;
const UPLOAD_CONCURRENCY = 4;

const { values: opts } = parseArgs({
  options: {
    docs: { type: 'string', default: '300' },
    bytes: { type: 'string', default: '2048' },
    out: { type: 'string', default: 'test/fixtures/queue-depths.json' },
    'every-ms': { type: 'string', default: '500' },
    budget: { type: 'string', default: '300' },
  },
});
const DOCS = Number(opts.docs);
const DOC_BYTES = Number(opts.bytes);
const EVERY_MS = Number(opts['every-ms']);
const BUDGET_MS = Number(opts.budget) * 1000;
if (!(DOCS >= 1 && DOCS <= 5000 && DOC_BYTES >= 64 && DOC_BYTES <= 1024 * 1024 && EVERY_MS >= 100 && BUDGET_MS >= 10_000)) {
  process.stderr.write('usage: record-queue-depths.ts [--docs 1..5000] [--bytes 64..1048576] [--every-ms >=100] [--budget >=10] [--out FILE]\n');
  process.exit(2);
}

interface Point {
  t: number;
  jobs: Record<string, Record<(typeof STATES)[number], number>>;
  oldest: Record<string, number>;
}

/** The two gauges out of a Prometheus text exposition, by queue. */
function readGauges(text: string, t: number): Point {
  const point: Point = { t, jobs: {}, oldest: {} };
  for (const line of text.split('\n')) {
    let m = /^docpipe_queue_jobs\{(.*)\} (\S+)$/.exec(line);
    if (m) {
      const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
      const queue = labels.queue!;
      point.jobs[queue] ??= { waiting: 0, scheduled: 0, active: 0 };
      point.jobs[queue][labels.state as (typeof STATES)[number]] = Number(m[2]);
      continue;
    }
    m = /^docpipe_queue_oldest_waiting_seconds\{queue="([^"]*)"\} (\S+)$/.exec(line);
    if (m) point.oldest[m[1]!] = Number(m[2]);
  }
  return point;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const deadline = Date.now() + BUDGET_MS;
const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-record-'));
const [apiPort, metricsPort, webhookPort, workerPort, pgPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
const env: Record<string, string> = {
  PATH: process.env.PATH ?? '',
  HOME: process.env.HOME ?? os.homedir(),
  DOCPIPE_DATA_DIR: dataDir,
  EMBEDDED_PG_PORT: String(pgPort),
  API_PORT: String(apiPort),
  API_METRICS_PORT: String(metricsPort),
  WEBHOOK_PORT: String(webhookPort),
  WORKER_PORT: String(workerPort),
  JWT_SECRET: randomBytes(32).toString('hex'),
  LOG_LEVEL: 'warn',
  METRICS_SAMPLE_INTERVAL_SECONDS: '1',
  RATE_LIMIT_PER_ADDRESS: '0',
  RATE_LIMIT_UPLOADS: '0',
  RATE_LIMIT_REQUESTS: '0',
};
const api = `http://127.0.0.1:${apiPort}`;
const child = spawn(NODE, ['--import', 'tsx', 'src/cli.ts', 'all'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'inherit'] });
let exited = false;
const exit = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));

async function stop(): Promise<void> {
  if (!exited) child.kill('SIGTERM');
  await Promise.race([exit, sleep(30_000)]);
  if (!exited) child.kill('SIGKILL');
  await rm(dataDir, { recursive: true, force: true });
}

try {
  // Ready: migrations run, queues created, storage writable.
  for (;;) {
    if (exited) throw new Error('docpipe all exited during start-up');
    if (Date.now() > deadline) throw new Error('docpipe all was not ready within the budget');
    const ok = await fetch(`${api}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    await sleep(500);
  }
  const token = spawnSync(NODE, ['--import', 'tsx', 'src/cli.ts', 'token', 'recorder'], { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 }).stdout.trim();
  if (!token) throw new Error('docpipe token printed nothing');

  const points: Point[] = [];
  const started = performance.now();
  const now = () => Math.round((performance.now() - started) / 100) / 10;
  const burst: { startedAt: number | null; endedAt: number | null; accepted: number; refused: number } = { startedAt: null, endedAt: null, accepted: 0, refused: 0 };
  let quiet = 0;
  const stageQueues = [QUEUES.parse, QUEUES.parseResult, QUEUES.embed];
  const sampling = (async () => {
    for (let i = 0; Date.now() < deadline; i++) {
      const tick = performance.now();
      const text = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text());
      const point = readGauges(text, now());
      points.push(point);
      const busy = stageQueues.some((q) => (point.jobs[q]?.waiting ?? 0) + (point.jobs[q]?.active ?? 0) > 0);
      quiet = busy ? 0 : quiet + 1;
      if (burst.endedAt !== null && quiet >= QUIET_READS) return;
      await sleep(Math.max(0, EVERY_MS - (performance.now() - tick)));
    }
    throw new Error('the queues did not drain within the budget');
  })();

  // A few idle reads, then the burst.
  await sleep(3000);
  burst.startedAt = now();
  let next = 0;
  await Promise.all(
    Array.from({ length: UPLOAD_CONCURRENCY }, async () => {
      while (next < DOCS) {
        const n = next++;
        const res = await fetch(`${api}/v1/documents`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': MULTIPART_CONTENT_TYPE },
          body: multipartBody(`burst-${n}.txt`, textDocument(DOC_BYTES, `burst ${n}`)),
        });
        await res.arrayBuffer();
        if (res.status === 202) burst.accepted++;
        else burst.refused++;
      }
    }),
  );
  burst.endedAt = now();
  await sampling;

  // Only the queues that ever held a job: the rest would be columns of zeros.
  const seen = Object.values(QUEUES).filter((q) => points.some((p) => STATES.some((s) => (p.jobs[q]?.[s] ?? 0) > 0) || (p.oldest[q] ?? 0) > 0));
  const fixture = {
    description:
      'docpipe_queue_jobs and docpipe_queue_oldest_waiting_seconds read from a real run, for the worker autoscaler tests (fly.autoscaler.toml). t is seconds since the first read; jobs[queue] = [waiting, scheduled, active]; oldest[queue] in seconds. Queues that never held a job are left out (all zero).',
    recordedWith: `node_modules/.bin/node --import tsx scripts/record-queue-depths.ts --docs ${DOCS} --bytes ${DOC_BYTES} --every-ms ${EVERY_MS}`,
    recordedAt: new Date().toISOString(),
    setup: {
      command: 'src/cli.ts all (api, worker and webhook in one process), embedded PostgreSQL, local parser and embedder',
      cpus: os.cpus().length,
      workerConcurrency: 4,
      metricsSampleIntervalSeconds: 1,
      readEveryMs: EVERY_MS,
      documents: { count: DOCS, bytes: DOC_BYTES, type: 'text/plain', uploadsInFlight: UPLOAD_CONCURRENCY },
    },
    burst,
    queues: seen,
    points: points.map((p) => ({
      t: p.t,
      jobs: Object.fromEntries(seen.map((q) => [q, STATES.map((s) => p.jobs[q]?.[s] ?? 0)])),
      oldest: Object.fromEntries(seen.map((q) => [q, Math.round((p.oldest[q] ?? 0) * 1000) / 1000])),
    })),
  };
  // One point a line: small diffs, readable.
  const body = JSON.stringify({ ...fixture, points: [] }, null, 2).replace('"points": []', `"points": [\n${fixture.points.map((p) => `    ${JSON.stringify(p)}`).join(',\n')}\n  ]`);
  await writeFile(path.resolve(ROOT, opts.out!), body + '\n');
  const peak = Math.max(...points.map((p) => stageQueues.reduce((s, q) => s + (p.jobs[q]?.waiting ?? 0) + (p.jobs[q]?.active ?? 0), 0)));
  process.stdout.write(`${points.length} reads over ${points.at(-1)!.t} s; burst ${burst.accepted} accepted, ${burst.refused} refused, ${burst.startedAt}-${burst.endedAt} s; peak stage depth ${peak}; wrote ${opts.out}\n`);
} finally {
  await stop();
}
