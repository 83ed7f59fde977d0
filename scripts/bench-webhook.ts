// The webhook service measured as it is deployed: `docpipe webhook` in a process of its own,
// the evenly paced open-loop client (scripts/bench/paced.ts) in this one, an embedded Postgres
// with fsync on; where the machine allows, the webhook pinned to CPU 1 and this client to CPU 0.
// The webhook phase of `npm run bench` measures the same way (and beside its baseline); this
// one repeats the measurement a few times on its own.
//
//   npm run bench:webhook -- [--rate 500] [--seconds 4] [--runs 3]
//
// Each run seeds rate x (1 + seconds) documents in `parsing` (submitted to LlamaParse) through
// the real command handler, then sends one first delivery to each, paced, and checks that every
// answer appended. Results go to stdout as one JSON line per run plus a summary.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.ts';
import { createSql } from '../src/db/client.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/observability/logger.ts';
import { openRuntime } from '../src/services/runtime.ts';
import { freePort } from '../src/util/free-port.ts';
import { runPaced } from './bench/paced.ts';
import { canPin, pinProcess, startServiceProcess } from './bench/service-process.ts';
import { seedParsingDocuments } from './bench/webhook.ts';

const { values } = parseArgs({ options: { rate: { type: 'string', default: '500' }, seconds: { type: 'string', default: '4' }, runs: { type: 'string', default: '3' } } });
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const runs = Number(values.runs);
if (![rate, seconds, runs].every((n) => Number.isInteger(n) && n > 0) || runs > 20 || seconds > 60) {
  process.stderr.write('usage: npm run bench:webhook -- [--rate N] [--seconds 1..60] [--runs 1..20]\n');
  process.exit(2);
}
const log = (m: string) => process.stderr.write(`[bench:webhook] ${m}\n`);

const tmp = await mkdtemp(path.join(os.tmpdir(), 'docpipe-bench-webhook-'));
const pg = await startEmbeddedPostgres({ dataDir: tmp, port: await freePort(), database: 'docpipe', postgresFlags: ['-c', 'shared_buffers=256MB'] });
const secret = 'bench-webhook-secret-bench-webhook-secret';
const env = { DATABASE_URL: pg.url, JWT_SECRET: 'bench-jwt-secret-bench-jwt-secret-0123', DOCPIPE_DATA_DIR: path.join(tmp, 'data'), LOG_LEVEL: 'silent', WEBHOOK_SECRET: secret, WEBHOOK_PUBLIC_URL: 'http://127.0.0.1:9' };
const results: { reqPerSec: number; p50: number; p99: number; p999: number; maxSendLagMs: number }[] = [];
try {
  const sql = createSql(pg.url, { max: 2 });
  await migrate(sql);
  await sql.end();
  const runtime = await openRuntime(loadConfig(env), createLogger('silent'), 'bench-seed');
  const count = rate * (1 + seconds);
  log(`seeding ${runs} x ${count} documents`);
  const batches = [];
  for (let r = 0; r < runs; r++) batches.push(await seedParsingDocuments(runtime.ctx, secret, count, 8, () => {}));
  await runtime.close();

  // Pinned after the seeding (and Postgres's start): only the client is held to CPU 0.
  const pinned = os.availableParallelism() >= 2 && canPin() && pinProcess(process.pid, 0);
  log(pinned ? 'webhook process on CPU 1, this client on CPU 0' : 'not pinned (one core, or taskset missing or not allowed)');
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const webhook = await startServiceProcess({ root, command: 'webhook', env: { ...env, WEBHOOK_METRICS_PORT: '0' }, port: await freePort(), cpu: pinned ? 1 : null, readyTimeoutMs: 30_000 });
  try {
    for (let r = 0; r < runs; r++) {
      const res = await runPaced({ kind: 'paced', name: `run ${r + 1}`, url: webhook.url, rate, warmupSeconds: 1, durationSeconds: seconds, maxSockets: 128, targets: batches[r]!, eventIdPrefix: `run${r}` }, () => {});
      if (res.non2xx > 0 || res.errors > 0 || res.outcomes.appended !== count) throw new Error(`run ${r + 1} was not real work: ${JSON.stringify({ non2xx: res.non2xx, errors: res.errors, outcomes: res.outcomes })}`);
      const row = { reqPerSec: res.reqPerSec, p50: res.latency.p50, p99: res.latency.p99, p999: res.p999, maxSendLagMs: res.maxSendLagMs };
      results.push(row);
      process.stdout.write(JSON.stringify({ run: r + 1, rate, ...row }) + '\n');
    }
  } finally {
    await webhook.stop();
  }
} finally {
  await pg.stop().catch(() => {});
  await rm(tmp, { recursive: true, force: true });
}
const sorted = (k: 'p50' | 'p99') => results.map((r) => r[k]).sort((a, b) => a - b);
const median = (xs: number[]) => xs[Math.floor(xs.length / 2)]!;
process.stdout.write(
  `webhook in its own process, ${rate} req/s paced, ${runs} x ${seconds} s: p50 median ${median(sorted('p50')).toFixed(1)} ms, ` +
    `p99 median ${median(sorted('p99')).toFixed(1)} ms (range ${sorted('p99')[0]!.toFixed(1)}-${sorted('p99').at(-1)!.toFixed(1)}), target p99 <= 20 ms: ` +
    `${median(sorted('p99')) <= 20 ? 'met' : 'NOT MET'}\n`,
);
