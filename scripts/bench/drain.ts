// `npm run bench:drain`: what one worker does with a backlog, without uploads competing for the
// cores. N documents are uploaded with no worker running; then a worker starts, every database
// connection of it through the delay proxy (0 ms: near; --delay-ms 40: a worker a region away),
// and the run is timed from its first job's start (pg-boss started_on) to the last document
// ready. The main bench's pipeline and fleet phases upload while the worker runs, so on 2 cores
// their figures are bounded by the upload rate; this one is the worker's own.
//
//   npm run bench:drain -- --docs 1000 --delay-ms 40 --worker-concurrency 128 --pool-max 20
//   npm run bench:drain -- --docs 1000                       near, the worker's defaults of the bench
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../../src/config.ts';
import { createSql } from '../../src/db/client.ts';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { signUserToken } from '../../src/security/tokens.ts';
import { buildApiApp } from '../../src/services/api/app.ts';
import { jwtSettings, openRuntime } from '../../src/services/runtime.ts';
import { startWorker } from '../../src/services/worker/worker.ts';
import { freePort } from '../../src/util/free-port.ts';
import { cpuSnapshot, phaseCpu } from './cpu.ts';
import { startDelayProxy } from './delay-proxy.ts';
import { multipartBody, MULTIPART_CONTENT_TYPE, textDocument } from './documents.ts';
import { benchEnv } from './env.ts';

const { values: args } = parseArgs({
  options: {
    docs: { type: 'string', default: '1000' },
    'delay-ms': { type: 'string', default: '0' },
    'worker-concurrency': { type: 'string', default: '64' },
    'pool-max': { type: 'string', default: '10' },
    'doc-bytes': { type: 'string', default: '4096' },
  },
});
const int = (name: keyof typeof args, min: number): number => {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`bench:drain: --${name} must be an integer >= ${min}\n`);
    process.exit(2);
  }
  return n;
};
const docs = int('docs', 1);
const delayMs = int('delay-ms', 0);
const concurrency = int('worker-concurrency', 1);
const poolMax = int('pool-max', 2);
const docBytes = int('doc-bytes', 64);
const log = (m: string) => process.stderr.write(`[drain] ${m}\n`);

const tmp = await mkdtemp(path.join(os.tmpdir(), 'docpipe-drain-'));
const cleanups: (() => Promise<unknown>)[] = [() => rm(tmp, { recursive: true, force: true })];
const deadline = setTimeout(() => {
  log('time budget (10 min) exhausted');
  process.exit(1);
}, 600_000).unref();
try {
  const port = await freePort();
  const pg = await startEmbeddedPostgres({ dataDir: tmp, port, database: 'docpipe', postgresFlags: ['-c', 'shared_buffers=256MB', '-c', 'max_wal_size=4GB', '-c', 'checkpoint_timeout=30min'] });
  cleanups.unshift(() => pg.stop());
  const postmasterPid = Number(readFileSync(path.join(tmp, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const sql = createSql(pg.url, { max: 2, applicationName: 'docpipe-drain' });
  cleanups.unshift(() => sql.end({ timeout: 5 }));
  await migrate(sql);
  const base = { dataDir: path.join(tmp, 'data') };
  const logger = createLogger('silent');

  // The backlog: uploaded through the api with no worker anywhere.
  const apiConfig = loadConfig(benchEnv({ ...base, databaseUrl: pg.url }));
  const apiRuntime = await openRuntime(apiConfig, logger, 'drain-api');
  cleanups.unshift(() => apiRuntime.close());
  const jwt = await jwtSettings(apiConfig);
  const api = await buildApiApp({ config: apiConfig, jwt, logger, ctx: apiRuntime.ctx, storage: apiRuntime.providers.storage, embedder: apiRuntime.providers.embedder, vectors: apiRuntime.vectors, uploadSigningKey: apiRuntime.uploadSigningKey, readiness: apiRuntime.readiness });
  const url = await api.app.listen({ host: '127.0.0.1', port: 0 });
  cleanups.unshift(() => api.app.close());
  const token = signUserToken(jwt, 'bench-drain', { expiresInSeconds: 3600 });
  let next = 0;
  const uploadStart = Date.now();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < docs) {
        next++;
        const res = await fetch(`${url}/v1/documents`, { method: 'POST', body: multipartBody('doc.txt', textDocument(docBytes, 'drain')), headers: { authorization: `Bearer ${token}`, 'content-type': MULTIPART_CONTENT_TYPE } });
        const body = await res.text();
        if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${body.slice(0, 200)}`);
      }
    }),
  );
  log(`${docs} documents uploaded in ${((Date.now() - uploadStart) / 1000).toFixed(1)} s, no worker running`);

  // The worker: its own runtime (pools, pg-boss, LISTEN), every connection through the proxy.
  const proxy = await startDelayProxy({ targetHost: '127.0.0.1', targetPort: port, delayMs });
  cleanups.unshift(() => proxy.stop());
  const workerConfig = loadConfig(benchEnv({ ...base, databaseUrl: proxy.url(pg.url) }, { WORKER_CONCURRENCY: String(concurrency), DATABASE_POOL_MAX: String(poolMax) }));
  const workerRuntime = await openRuntime(workerConfig, logger, 'drain-worker');
  cleanups.unshift(() => workerRuntime.close());
  const trips0 = proxy.stats().roundTrips;
  const cpu0 = cpuSnapshot(postmasterPid);
  const worker = await startWorker({ config: workerConfig, boss: workerRuntime.boss, ctx: workerRuntime.ctx, providers: workerRuntime.providers, logger });
  cleanups.unshift(() => worker.stop({ graceMs: 5_000 }));
  const waitUntil = Date.now() + 300_000;
  for (;;) {
    const [row] = await sql<{ done: number }[]>`select count(*) filter (where status in ('ready', 'failed'))::int as done from docpipe.document_status`;
    if (row!.done >= docs) break;
    if (Date.now() > waitUntil) throw new Error(`only ${row!.done} of ${docs} documents finished in 300 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const cpu = phaseCpu(cpu0, cpuSnapshot(postmasterPid), null);
  const trips = proxy.stats().roundTrips - trips0;
  const [t] = await sql<{ first: number; last: number; p10: number; p90: number; ready: number; failed: number }[]>`
    select extract(epoch from (select min(started_on) from pgboss.job where name = 'docpipe-parse')) as first,
           extract(epoch from max(ready_at)) as last,
           extract(epoch from percentile_disc(0.1) within group (order by ready_at)) as p10,
           extract(epoch from percentile_disc(0.9) within group (order by ready_at)) as p90,
           (count(*) filter (where status = 'ready'))::int as ready, (count(*) filter (where status = 'failed'))::int as failed
    from docpipe.document_status`;
  const seconds = Number(t!.last) - Number(t!.first);
  const result = {
    docs,
    delayMs,
    workerConcurrency: concurrency,
    poolMax,
    ready: t!.ready,
    failed: t!.failed,
    seconds,
    docsPerSecond: t!.ready / seconds,
    steadyDocsPerSecond: (0.8 * docs) / (Number(t!.p90) - Number(t!.p10)),
    roundTripsPerDoc: trips / docs,
    // The worker is in this process: Node here (its main thread and sandbox children) and Postgres.
    nodeCpuMsPerDoc: ((cpu.server + cpu.helpers) * cpu.seconds * 1000) / docs,
    postgresCpuMsPerDoc: (cpu.postgres * cpu.seconds * 1000) / docs,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  log(
    `${result.ready}/${docs} ready (${result.failed} failed) in ${seconds.toFixed(2)} s from the first job's start: ${result.docsPerSecond.toFixed(1)} docs/s ` +
      `(10th-90th percentile ${result.steadyDocsPerSecond.toFixed(1)}/s); ${result.roundTripsPerDoc.toFixed(2)} round trips per document at ${delayMs} ms each way; ` +
      `CPU ${result.nodeCpuMsPerDoc.toFixed(1)} ms Node + ${result.postgresCpuMsPerDoc.toFixed(1)} ms Postgres per document`,
  );
} finally {
  clearTimeout(deadline);
  for (const cleanup of cleanups) await cleanup().catch((err: unknown) => log(`cleanup: ${(err as Error).message}`));
}
process.exit(0);
