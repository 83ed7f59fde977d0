// The worker-fleet phases of `npm run bench`: docpipe's worker as deployed, in processes of its
// own (`docpipe worker`, ./service-process.ts), fed by the harness's API, with the harness's
// in-process worker stopped.
//
//   scaling   documents/s, first upload -> last ready, with 1, 2 and 4 worker processes
//   sizes     upload -> ready per document (p50/p95) and documents/s for 4 KB, 100 KB, 1 MB text
//   near/far  one worker process whose every database connection (postgres.js pool, pg-boss's pg
//             pool, LISTEN) goes through the delay proxy (./delay-proxy.ts): at 0 ms (near: the
//             round trips and bytes per document without distance) and at 40 ms each way (far)
//
// Every run is bounded by `runSeconds`: when it runs out the run reports what finished (documents
// ready so far, over the time they took) and the rest of its jobs are deleted before the next
// run, so no run inherits another's backlog. Nothing here waits without a bound.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from '../../src/db/client.ts';
import { QUEUES } from '../../src/queue/jobs.ts';
import { freePort } from '../../src/util/free-port.ts';
import { treeCpuSeconds } from './cpu.ts';
import { startProxyProcess, type ProxyProcess } from './delay-proxy-child.ts';
import type { UploadManyJob, UploadManyResult } from './protocol.ts';
import { startServiceProcess, type ServiceProcess } from './service-process.ts';
import { summarize, type Summary } from './stats.ts';

export interface FleetSettings {
  /** Documents of each scaling run (and of the far run). */
  docs: number;
  /** Bound of each run, upload start -> last ready. */
  runSeconds: number;
  farDelayMs: number;
  workerConcurrency: number;
  uploadConcurrency: number;
  docBytes: number;
  processes: number[];
  sizes: { bytes: number; docs: number }[];
  /** Documents of the near (0 ms) run: it gives round trips per document, not a rate. */
  nearDocs: number;
  /**
   * The near/far worker's WORKER_CONCURRENCY and DATABASE_POOL_MAX: a worker far from its
   * database is bound by round trips, not CPU, and needs more jobs and connections in flight
   * (docs/DEPLOY.md, "Scaling and regions").
   */
  remote: { workerConcurrency: number; poolMax: number };
}

export interface FleetRun {
  name: string;
  workers: number;
  bytes: number;
  docs: number;
  accepted: number;
  ready: number;
  failed: number;
  /** The run hit its bound: the figures are of the documents that were ready by then. */
  timedOut: boolean;
  error?: string;
  uploadSeconds: number;
  /** First upload sent -> last document ready (-> the bound, when the run reached it). */
  seconds: number;
  docsPerSecond: number;
  /** document_status.ready_at - uploaded_at, ms, ready documents (queueing behind the burst included). */
  latency: Summary;
  /** CPU seconds during the run: worker processes (with their sandbox children), Postgres, the harness (API), the proxy. */
  cpu: { seconds: number; workers: number; postgres: number; harness: number; proxy: number };
  workerCpuMsPerDoc: number;
  postgresCpuMsPerDoc: number;
  /** Through the delay proxy: its counters over the run, and per ready document. */
  proxy?: { delayMs: number; roundTrips: number; bytesToServer: number; bytesToClient: number; connections: number; roundTripsPerDoc: number; bytesPerDoc: number };
}

export interface FleetResults {
  settings: FleetSettings;
  /** Seconds from spawn to /readyz 200 of each worker process started. */
  workerStartSeconds: number[];
  scaling: FleetRun[];
  sizes: FleetRun[];
  near?: FleetRun;
  far?: FleetRun;
  /** Round trips per second of the idle proxied worker (polling, leases), before the near run. */
  idleRoundTripsPerSecond?: number;
  /** Which connections went through the proxy (application names seen in pg_stat_activity). */
  proxiedConnections?: { total: number; byApplication: Record<string, number> };
  notes: string[];
  seconds: number;
}

export interface FleetDeps {
  /** The repository whose `src/cli.ts worker` runs. */
  root: string;
  sql: Sql;
  /** Postgres, direct. */
  databaseUrl: string;
  /** The worker's configuration (as the harness's own): DATABASE_URL and the ports are set here. */
  serviceEnv: Record<string, string>;
  apiUrl: string;
  token(owner: string): string;
  /** Runs an upload-many job in the load child (the pipeline phase's driver). */
  uploadMany(job: UploadManyJob, timeoutMs: number): Promise<UploadManyResult>;
  postmasterPid: number | null;
  /** Service processes are registered here for the harness's CPU table while they run. */
  services: Set<number>;
  log(message: string): void;
}

const STAGE_QUEUES = [QUEUES.parse, QUEUES.parseResult, QUEUES.embed];

export interface OwnerProgress {
  total: number;
  ready: number;
  failed: number;
}

export async function ownerProgress(sql: Sql, owner: string): Promise<OwnerProgress> {
  const [row] = await sql<{ total: number; ready: number; failed: number }[]>`
    select count(*)::int as total,
           (count(*) filter (where status = 'ready'))::int as ready,
           (count(*) filter (where status = 'failed'))::int as failed
    from docpipe.document_status where owner_id = ${owner}`;
  return row!;
}

/** Epoch ms of each ready document of `owner`, ascending. */
export async function readyTimes(sql: Sql, owner: string): Promise<number[]> {
  const rows = await sql<{ ready: number }[]>`
    select extract(epoch from ready_at) * 1000 as ready from docpipe.document_status
    where owner_id = ${owner} and status = 'ready' order by ready_at`;
  return rows.map((r) => Number(r.ready));
}

/**
 * Deletes the stage jobs nobody has started (and, once the workers are done with them, what the
 * running ones enqueue next), until no stage job is queued or running: the next run starts on an
 * empty queue. Bounded; false when jobs were still running at the bound.
 */
export async function purgeStageJobs(sql: Sql, boundMs = 30_000): Promise<{ deleted: number; settled: boolean }> {
  const deadline = Date.now() + boundMs;
  let deleted = 0;
  for (;;) {
    const gone = await sql`delete from pgboss.job where name in ${sql(STAGE_QUEUES)} and state in ('created', 'retry') returning 1`;
    deleted += gone.length;
    const [row] = await sql<{ active: number }[]>`select count(*)::int as active from pgboss.job where name in ${sql(STAGE_QUEUES)} and state = 'active'`;
    if (gone.length === 0 && row!.active === 0) return { deleted, settled: true };
    if (Date.now() > deadline) return { deleted, settled: false };
    await sleep(200);
  }
}

interface RunOptions {
  name: string;
  owner: string;
  workers: ServiceProcess[];
  count: number;
  bytes: number;
  proxy?: ProxyProcess;
}

async function measureRun(deps: FleetDeps, settings: FleetSettings, o: RunOptions): Promise<FleetRun> {
  const capMs = settings.runSeconds * 1000;
  const workerPids = o.workers.map((w) => w.pid);
  const cpu = () => ({
    at: performance.now(),
    workers: treeCpuSeconds(workerPids),
    postgres: deps.postmasterPid ? treeCpuSeconds([deps.postmasterPid]) : Number.NaN,
    harness: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
    proxy: o.proxy ? treeCpuSeconds([o.proxy.pid]) : 0,
  });
  deps.log(`fleet: ${o.name}: ${o.count} documents of ${o.bytes} bytes, ${settings.uploadConcurrency} uploads in flight, bound ${settings.runSeconds} s`);
  const proxyStart = o.proxy ? await o.proxy.stats() : null;
  const c0 = cpu();
  const localStart = performance.timeOrigin + performance.now();
  let upload: UploadManyResult | null = null;
  let uploadError: string | null = null;
  const uploading = deps
    .uploadMany({ kind: 'upload-many', url: deps.apiUrl, token: deps.token(o.owner), count: o.count, concurrency: settings.uploadConcurrency, bytes: o.bytes }, capMs + 120_000)
    .then(
      (u) => (upload = u),
      (err: unknown) => (uploadError = (err as Error).message),
    );
  const deadline = Date.now() + capMs;
  let progress: OwnerProgress = { total: 0, ready: 0, failed: 0 };
  let timedOut = false;
  let workerGone: string | null = null;
  for (;;) {
    progress = await ownerProgress(deps.sql, o.owner);
    const done = upload as UploadManyResult | null;
    if (uploadError) break;
    const gone = o.workers.find((w) => w.exited());
    if (gone) {
      workerGone = `worker process ${gone.pid} exited during the run (${gone.exited()})`;
      break;
    }
    if (done && progress.ready + progress.failed >= done.accepted) break;
    if (Date.now() > deadline) {
      timedOut = true;
      break;
    }
    await sleep(50);
  }
  const c1 = cpu();
  const proxyEnd = o.proxy ? await o.proxy.stats() : null;
  await uploading;
  const up = upload as UploadManyResult | null;
  const times = await readyTimes(deps.sql, o.owner);
  const startedAt = up?.startedAt ?? localStart;
  // A run cut short by its bound took the whole bound, not just until its last ready document.
  const endedAt = timedOut ? performance.timeOrigin + c1.at : (times.at(-1) ?? Number.NaN);
  const seconds = times.length ? (endedAt - startedAt) / 1000 : Number.NaN;
  const lat = await deps.sql<{ ms: number }[]>`
    select extract(epoch from (ready_at - uploaded_at)) * 1000 as ms
    from docpipe.document_status where owner_id = ${o.owner} and status = 'ready'`;
  const n = times.length;
  const perDoc = (seconds: number) => (n ? (seconds * 1000) / n : Number.NaN);
  const run: FleetRun = {
    name: o.name,
    workers: o.workers.length,
    bytes: o.bytes,
    docs: o.count,
    accepted: up?.accepted ?? progress.total,
    ready: progress.ready,
    failed: progress.failed,
    timedOut,
    ...(uploadError || workerGone ? { error: [uploadError && `uploads failed: ${uploadError}`, workerGone].filter(Boolean).join('; ') } : {}),
    uploadSeconds: up ? (up.finishedAt - up.startedAt) / 1000 : Number.NaN,
    seconds,
    docsPerSecond: n / seconds,
    latency: summarize(lat.map((r) => Number(r.ms))),
    cpu: {
      seconds: (c1.at - c0.at) / 1000,
      workers: c1.workers - c0.workers,
      postgres: c1.postgres - c0.postgres,
      harness: c1.harness - c0.harness,
      proxy: c1.proxy - c0.proxy,
    },
    workerCpuMsPerDoc: perDoc(c1.workers - c0.workers),
    postgresCpuMsPerDoc: perDoc(c1.postgres - c0.postgres),
  };
  if (o.proxy && proxyStart && proxyEnd) {
    const roundTrips = proxyEnd.roundTrips - proxyStart.roundTrips;
    const bytesToServer = proxyEnd.bytesToServer - proxyStart.bytesToServer;
    const bytesToClient = proxyEnd.bytesToClient - proxyStart.bytesToClient;
    run.proxy = {
      delayMs: o.proxy.delayMs(),
      roundTrips,
      bytesToServer,
      bytesToClient,
      connections: proxyEnd.connections,
      roundTripsPerDoc: n ? roundTrips / n : Number.NaN,
      bytesPerDoc: n ? (bytesToServer + bytesToClient) / n : Number.NaN,
    };
  }
  if (run.error) deps.log(`  ERROR: ${run.error}`);
  const tail = run.proxy ? `; ${run.proxy.roundTrips} round trips (${run.proxy.roundTripsPerDoc.toFixed(1)} per document), ${Math.round(run.proxy.bytesPerDoc)} bytes per document` : '';
  deps.log(
    `  ${run.ready}/${run.accepted} ready (${run.failed} failed)${timedOut ? `, BOUND OF ${settings.runSeconds} s REACHED` : ''} in ${run.seconds.toFixed(2)} s: ${run.docsPerSecond.toFixed(1)} docs/s; ` +
      `upload -> ready p50 ${run.latency.p50.toFixed(0)} ms, p95 ${run.latency.p95.toFixed(0)} ms; worker CPU ${run.workerCpuMsPerDoc.toFixed(1)} ms/doc, Postgres ${run.postgresCpuMsPerDoc.toFixed(1)} ms/doc${tail}`,
  );
  return run;
}

export async function runFleet(deps: FleetDeps, settings: FleetSettings): Promise<FleetResults> {
  const started = Date.now();
  const results: FleetResults = { settings, workerStartSeconds: [], scaling: [], sizes: [], notes: [], seconds: 0 };
  const note = (message: string) => {
    results.notes.push(message);
    deps.log(`fleet: ${message}`);
  };
  const startWorkerProcess = async (databaseUrl: string, env: Record<string, string> = {}): Promise<ServiceProcess> => {
    const t = Date.now();
    const worker = await startServiceProcess({
      root: deps.root,
      command: 'worker',
      env: { ...deps.serviceEnv, DATABASE_URL: databaseUrl, WORKER_METRICS_PORT: '0', SHUTDOWN_TIMEOUT_MS: '10000', ...env },
      port: await freePort(),
    });
    deps.services.add(worker.pid);
    results.workerStartSeconds.push((Date.now() - t) / 1000);
    return worker;
  };
  const stopWorkers = async (workers: ServiceProcess[]) => {
    await Promise.all(workers.map((w) => w.stop(15_000)));
    for (const w of workers) deps.services.delete(w.pid);
  };
  const purge = async (after: string) => {
    const p = await purgeStageJobs(deps.sql);
    if (!p.settled) note(`after ${after}: stage jobs still running 30 s after the purge began; the next run may share the queue with them`);
  };
  let runIndex = 0;
  const owner = (label: string) => `bench-fleet-${++runIndex}-${label}`;

  // The POST phases left their uploads' parse jobs queued (the worker was stopped): gone first.
  const leftover = await purgeStageJobs(deps.sql);
  deps.log(`fleet: ${leftover.deleted} stage jobs left by earlier phases deleted`);

  // Scaling (and sizes, on the single process).
  let workers: ServiceProcess[] = [];
  try {
    for (const n of settings.processes) {
      while (workers.length < n) workers.push(await startWorkerProcess(deps.databaseUrl));
      const name = `${n} worker process${n === 1 ? '' : 'es'}`;
      results.scaling.push(await measureRun(deps, settings, { name, owner: owner(`scale${n}`), workers, count: settings.docs, bytes: settings.docBytes }));
      await purge(name);
      if (n === 1) {
        for (const size of settings.sizes) {
          results.sizes.push(await measureRun(deps, settings, { name: `${label(size.bytes)} documents, 1 worker process`, owner: owner(`size${size.bytes}`), workers, count: size.docs, bytes: size.bytes }));
          await purge(`the ${label(size.bytes)} run`);
        }
      }
    }
  } catch (err) {
    note(`scaling/sizes stopped early: ${(err as Error).message}`);
  } finally {
    await stopWorkers(workers);
    workers = [];
  }

  // Near and far: one worker process, every connection of it through the proxy.
  let proxy: ProxyProcess | null = null;
  try {
    const target = new URL(deps.databaseUrl);
    proxy = await startProxyProcess({ targetHost: target.hostname, targetPort: Number(target.port), delayMs: 0 });
    deps.services.add(proxy.pid);
    workers = [await startWorkerProcess(proxy.url(deps.databaseUrl), { WORKER_CONCURRENCY: String(settings.remote.workerConcurrency), DATABASE_POOL_MAX: String(settings.remote.poolMax) })];
    // Every connection of the worker is through the proxy: the proxy's open connections are all
    // of the worker's that Postgres sees (by their application names), and the worker opened
    // none that bypass it.
    const proxied = await proxy.stats();
    const apps = await deps.sql<{ name: string; n: number }[]>`
      select application_name as name, count(*)::int as n from pg_stat_activity
      where application_name like 'docpipe-worker%' group by 1`;
    const byApplication = Object.fromEntries(apps.map((a) => [a.name, a.n]));
    const seen = apps.reduce((s, a) => s + a.n, 0);
    results.proxiedConnections = { total: proxied.open, byApplication };
    if (seen !== proxied.open) note(`the worker has ${seen} connections at Postgres but ${proxied.open} through the proxy: some bypass it`);
    const idle0 = await proxy.stats();
    const idleStart = performance.now();
    await sleep(2_000);
    const idle1 = await proxy.stats();
    results.idleRoundTripsPerSecond = (idle1.roundTrips - idle0.roundTrips) / ((performance.now() - idleStart) / 1000);
    results.near = await measureRun(deps, settings, { name: 'near: 1 worker process through the proxy at 0 ms', owner: owner('near'), workers, count: settings.nearDocs, bytes: settings.docBytes, proxy });
    await purge('the near run');
    await proxy.setDelay(settings.farDelayMs);
    results.far = await measureRun(deps, settings, { name: `far: 1 worker process through the proxy at ${settings.farDelayMs} ms each way`, owner: owner('far'), workers, count: settings.docs, bytes: settings.docBytes, proxy });
    // At a distance the running jobs take a while: the purge waits for them (bounded).
    await purge('the far run');
  } catch (err) {
    note(`near/far stopped early: ${(err as Error).message}`);
  } finally {
    await stopWorkers(workers);
    if (proxy) {
      await proxy.stop();
      deps.services.delete(proxy.pid);
    }
  }
  results.seconds = (Date.now() - started) / 1000;
  deps.log(`fleet: done in ${Math.round(results.seconds)} s`);
  return results;
}

function label(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${bytes / (1024 * 1024)} MB` : `${Math.round(bytes / 1024)} KB`;
}
