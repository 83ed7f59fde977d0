// The upload path alone, measured the way `npm run bench` measures it, in a few seconds: the
// server RSS while one large file is streamed to POST /v1/documents, and the req/s of 4 KB
// uploads beside the bare INSERT baseline. One process hosts an embedded PostgreSQL (fsync on),
// the API (no worker: nothing parses) and the baseline; the load comes from the bench's child
// (scripts/bench/load.ts), so the client never shares the server's event loop.
//
//   node --import tsx scripts/upload-memory.ts                    100 MB streamed, RSS sampled every 5 ms
//   node --import tsx scripts/upload-memory.ts --post-seconds 5   and 4 KB uploads vs INSERT, 5 s each
//   node --import tsx scripts/upload-memory.ts --root <tree>      the same against another checkout
//                                                                 (its src/ and scripts/bench/load.ts)
//
// --root makes before/after comparisons on one machine possible: run it against an export of
// the commit before a change and against the tree with it, alternately (ABAB), and compare only
// figures from the same session: the machine's two cores are shared.
import { fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { benchEnv } from './bench/env.ts';
import { cpuSnapshot, phaseCpu, type CpuSnapshot, type PhaseCpu } from './bench/cpu.ts';

const { values: args } = parseArgs({
  options: {
    root: { type: 'string' },
    'large-mb': { type: 'string', default: '100' },
    'post-seconds': { type: 'string', default: '0' },
    'post-connections': { type: 'string', default: '20' },
    'warmup-seconds': { type: 'string', default: '1' },
    'gc-every-ms': { type: 'string', default: '0' },
    statements: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
  },
});

const root = path.resolve(args.root ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const largeMb = Number(args['large-mb']);
const postSeconds = Number(args['post-seconds']);
const postConnections = Number(args['post-connections']);
const warmupSeconds = Number(args['warmup-seconds']);
/** Diagnosis only (needs --expose-gc): a minor GC this often while the large upload streams, so
 * that what stays is what the upload holds, not garbage waiting for V8's next collection. */
const gcEveryMs = Number(args['gc-every-ms']);
/** Uploads made one at a time with pg_stat_statements loaded, to count the statements of one. */
const statementUploads = Number(args.statements);
const log = (m: string) => process.stderr.write(`[upload-memory ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
const from = async <T>(rel: string): Promise<T> => (await import(pathToFileURL(path.join(root, rel)).href)) as T;

/** Fails the whole run if it has not finished by then (every child and timer is bounded too). */
const BUDGET_MS = 10 * 60 * 1000;

type Job = Record<string, unknown> & { kind: string };

/** CPU seconds of this process's main thread (user, system), from /proc: the rest of the process is libuv's pool (file system calls, fsync), V8's helpers. */
function mainThreadCpu(): { user: number; system: number } {
  try {
    const raw = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const rest = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
    return { user: Number(rest[11]) / 100, system: Number(rest[12]) / 100 };
  } catch {
    return { user: Number.NaN, system: Number.NaN };
  }
}

/** `onMark`: the child's marks around its measured window (autocannon jobs send them). */
function runChild<R>(job: Job, timeoutMs: number, onMark?: (mark: 'start' | 'end') => void): Promise<R> {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(root, 'scripts/bench/load.ts'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`load job ${job.kind} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('message', (m: { type: string; result?: R; message?: string; mark?: 'start' | 'end' }) => {
      if (m.type === 'mark') onMark?.(m.mark!);
      else if (m.type === 'result') {
        clearTimeout(timer);
        resolve(m.result!);
      } else if (m.type === 'error') {
        clearTimeout(timer);
        reject(new Error(m.message));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`load child exited (code ${code})`));
    });
    child.send(job);
  });
}

async function main(): Promise<void> {
  const budget = setTimeout(() => {
    log('time budget exceeded');
    process.exit(1);
  }, BUDGET_MS);
  budget.unref();
  const { startEmbeddedPostgres } = await from<typeof import('../src/db/embedded.ts')>('src/db/embedded.ts');
  const { migrate } = await from<typeof import('../src/db/migrate.ts')>('src/db/migrate.ts');
  const { createSql } = await from<typeof import('../src/db/client.ts')>('src/db/client.ts');
  const { loadConfig } = await from<typeof import('../src/config.ts')>('src/config.ts');
  const { createLogger } = await from<typeof import('../src/observability/logger.ts')>('src/observability/logger.ts');
  const { openRuntime, jwtSettings } = await from<typeof import('../src/services/runtime.ts')>('src/services/runtime.ts');
  const { buildApiApp } = await from<typeof import('../src/services/api/app.ts')>('src/services/api/app.ts');
  const { signUserToken } = await from<typeof import('../src/security/tokens.ts')>('src/security/tokens.ts');
  const { freePort } = await from<typeof import('../src/util/free-port.ts')>('src/util/free-port.ts');
  const { createBenchTable, startInsertBaseline } = await from<typeof import('./bench/baselines.ts')>('scripts/bench/baselines.ts');
  const { multipartBody, textDocument, MULTIPART_CONTENT_TYPE } = await from<typeof import('./bench/documents.ts')>('scripts/bench/documents.ts');

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'docpipe-upload-memory-'));
  const cleanups: (() => Promise<unknown>)[] = [() => rm(tmp, { recursive: true, force: true })];
  const result: Record<string, unknown> = { root };
  try {
    const pg = await startEmbeddedPostgres({
      dataDir: tmp,
      port: await freePort(),
      database: 'docpipe',
      postgresFlags: [
        '-c', 'shared_buffers=256MB', '-c', 'max_wal_size=4GB', '-c', 'checkpoint_timeout=30min',
        ...(statementUploads > 0 ? ['-c', 'shared_preload_libraries=pg_stat_statements', '-c', 'pg_stat_statements.track_utility=on'] : []),
      ],
    });
    cleanups.unshift(() => pg.stop());
    const sql = createSql(pg.url, { max: 4 });
    cleanups.unshift(() => sql.end({ timeout: 5 }));
    await migrate(sql);
    await createBenchTable(sql);
    const config = loadConfig(benchEnv({ databaseUrl: pg.url, dataDir: path.join(tmp, 'data') }, { MAX_UPLOAD_BYTES: String(Math.max(50, largeMb * 2) * 1024 * 1024) }));
    const logger = createLogger(config.logLevel);
    const runtime = await openRuntime(config, logger, 'bench');
    cleanups.unshift(() => runtime.close());
    const jwt = await jwtSettings(config);
    const api = await buildApiApp({ config, jwt, logger, ctx: runtime.ctx, storage: runtime.providers.storage, embedder: runtime.providers.embedder, vectors: runtime.vectors, uploadSigningKey: runtime.uploadSigningKey, readiness: runtime.readiness });
    const apiUrl = await api.app.listen({ host: '127.0.0.1', port: 0 });
    cleanups.unshift(() => api.app.close());
    const token = signUserToken(jwt, 'bench-upload', { expiresInSeconds: 3600 });

    if (largeMb > 0) {
      // One small upload first, so code loading and first-use allocations are not counted.
      const warm = await fetch(`${apiUrl}/v1/documents`, {
        method: 'POST',
        body: multipartBody('doc.txt', textDocument(4096, 'warm-up')),
        headers: { authorization: `Bearer ${token}`, 'content-type': MULTIPART_CONTENT_TYPE },
      });
      if (warm.status !== 202) throw new Error(`warm-up upload answered ${warm.status}: ${await warm.text()}`);
      const before = process.memoryUsage();
      const peak = { ...before };
      const sample = () => {
        const m = process.memoryUsage();
        for (const k of ['rss', 'heapUsed', 'heapTotal', 'external', 'arrayBuffers'] as const) peak[k] = Math.max(peak[k], m[k]);
      };
      const gc = (globalThis as { gc?: (o?: object) => void }).gc;
      if (gcEveryMs > 0 && !gc) throw new Error('--gc-every-ms needs node --expose-gc');
      let ticks = 0;
      const sampler = setInterval(() => {
        if (gcEveryMs > 0 && ++ticks % Math.max(1, Math.round(gcEveryMs / 5)) === 0) gc!({ type: 'minor' });
        sample();
      }, 5);
      let r: { status: number; seconds: number; body: string };
      try {
        r = await runChild({ kind: 'upload-large', url: apiUrl, token, bytes: largeMb * 1024 * 1024 }, 300_000);
        sample();
      } finally {
        clearInterval(sampler);
      }
      const growth = Object.fromEntries(['rss', 'heapUsed', 'heapTotal', 'external', 'arrayBuffers'].map((k) => [k, peak[k as 'rss'] - before[k as 'rss']]));
      result.large = { mb: largeMb, status: r.status, seconds: r.seconds, rssBefore: before.rss, rssPeak: peak.rss, growth };
      log(`${largeMb} MB: HTTP ${r.status} in ${r.seconds.toFixed(2)} s; RSS ${mb(before.rss)} -> peak ${mb(peak.rss)} (+${mb(peak.rss - before.rss)}); ` +
        `peak growth: heapUsed +${mb(growth.heapUsed!)}, heapTotal +${mb(growth.heapTotal!)}, external +${mb(growth.external!)}, arrayBuffers +${mb(growth.arrayBuffers!)}`);
      if (r.status !== 202) log(`  body: ${r.body}`);
    }

    if (statementUploads > 0) {
      await sql`create extension if not exists pg_stat_statements`;
      const one = async (i: number, idempotencyKey?: string) => {
        const res = await fetch(`${apiUrl}/v1/documents`, {
          method: 'POST',
          body: multipartBody(`count-${i}.txt`, textDocument(4096, 'count')),
          headers: { authorization: `Bearer ${token}`, 'content-type': MULTIPART_CONTENT_TYPE, ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}) },
        });
        if (res.status !== 202) throw new Error(`upload answered ${res.status}: ${await res.text()}`);
      };
      await one(-1);
      const statements: Record<string, { perUpload: number; query: string }[]> = {};
      for (const withKey of [false, true]) {
        await sql`select pg_stat_statements_reset()`;
        for (let i = 0; i < statementUploads; i++) await one(i, withKey ? `count-${i}-${Date.now()}` : undefined);
        const rows = await sql<{ calls: number; query: string }[]>`
          select calls::int as calls, query from pg_stat_statements
          where dbid = (select oid from pg_database where datname = current_database()) and query not like '%pg_stat_statements%'
          order by calls desc, query`;
        const perUpload = rows.map((r) => ({ perUpload: r.calls / statementUploads, query: r.query.replace(/\s+/g, ' ').slice(0, 140) }));
        const name = withKey ? 'with an Idempotency-Key' : 'without an Idempotency-Key';
        statements[name] = perUpload;
        log(`statements per upload ${name} (${statementUploads} uploads, one at a time; every pool of the process, background work included):`);
        for (const s of perUpload) log(`  ${s.perUpload.toFixed(2).padStart(6)}  ${s.query}`);
      }
      result.statements = statements;
    }

    if (postSeconds > 0) {
      const insertSql = createSql(pg.url, { max: 10 });
      cleanups.unshift(() => insertSql.end({ timeout: 5 }));
      const insert = await startInsertBaseline(insertSql);
      cleanups.unshift(() => insert.app.close());
      let postmasterPid: number | null = null;
      try {
        postmasterPid = Number(readFileSync(path.join(tmp, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
      } catch {
        /* no Postgres CPU figures */
      }
      const cannon = async (name: string, url: string, headers: Record<string, string>) => {
        let start: CpuSnapshot | null = null;
        let end: CpuSnapshot | null = null;
        let main0 = mainThreadCpu();
        let main1 = main0;
        let all0 = process.cpuUsage();
        let all1 = all0;
        const r = await runChild<{ reqPerSec: number; ok: number; non2xx: number; errors: number; latency: { p50: number; p99: number } }>(
          { kind: 'autocannon', name, url, method: 'POST', headers, body: 'multipart-4k', connections: postConnections, durationSeconds: postSeconds, warmupSeconds },
          (postSeconds + warmupSeconds) * 1000 + 60_000,
          (mark) => {
            if (mark === 'start') {
              start = cpuSnapshot(postmasterPid);
              main0 = mainThreadCpu();
              all0 = process.cpuUsage();
            } else {
              end = cpuSnapshot(postmasterPid);
              main1 = mainThreadCpu();
              all1 = process.cpuUsage();
            }
          },
        );
        const cpu: PhaseCpu | null = start && end ? phaseCpu(start, end, null) : null;
        // CPU milliseconds per accepted request: steadier than req/s on a shared machine.
        const perRequest = (cores: number | undefined) => (cpu && cores !== undefined ? (cores * cpu.seconds * 1000) / Math.max(1, r.ok) : Number.NaN);
        const ms = (seconds: number) => (seconds * 1000) / Math.max(1, r.ok);
        const split = {
          mainUser: ms(main1.user - main0.user),
          mainSystem: ms(main1.system - main0.system),
          // Everything else in the process: libuv's threads (fs calls, fsync), V8's GC helpers.
          otherUser: ms((all1.user - all0.user) / 1e6 - (main1.user - main0.user)),
          otherSystem: ms((all1.system - all0.system) / 1e6 - (main1.system - main0.system)),
        };
        return { ...r, cpu, nodeMs: perRequest(cpu?.server), postgresMs: perRequest(cpu?.postgres), split };
      };
      const ins = await cannon('INSERT', `${insert.url}/rows`, {});
      const post = await cannon('POST', `${apiUrl}/v1/documents`, { authorization: `Bearer ${token}` });
      result.insert = ins;
      result.post = post;
      const cpuOf = (r: typeof ins) =>
        `node ${r.nodeMs.toFixed(2)} ms (main thread ${r.split.mainUser.toFixed(2)} user + ${r.split.mainSystem.toFixed(2)} sys, other threads ${r.split.otherUser.toFixed(2)} user + ${r.split.otherSystem.toFixed(2)} sys) + postgres ${r.postgresMs.toFixed(2)} ms CPU per request, loop ${((r.cpu?.serverLoop ?? NaN) * 100).toFixed(0)} % busy, foreign ${(r.cpu?.foreign ?? NaN).toFixed(2)} cores`;
      log(`INSERT ${ins.reqPerSec.toFixed(0)} req/s (p99 ${ins.latency.p99.toFixed(1)} ms; ${cpuOf(ins)})`);
      log(`POST /v1/documents ${post.reqPerSec.toFixed(0)} req/s (p50 ${post.latency.p50.toFixed(1)}, p99 ${post.latency.p99.toFixed(1)} ms, non-2xx ${post.non2xx}, errors ${post.errors}; ${cpuOf(post)}): ` +
        `${((100 * post.reqPerSec) / ins.reqPerSec).toFixed(0)} % of INSERT`);
    }
    if (args.json) process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    for (const c of cleanups) await c().catch((err: unknown) => log(`cleanup: ${(err as Error).message}`));
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    log((err as Error).stack ?? String(err));
    process.exit(1);
  },
);
