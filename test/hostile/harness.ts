// The hostile suite's harness: a real `docpipe all` process (the CLI, api + worker + webhook in
// one process, as `npm start` runs it) on a database of its own, and the instruments that judge
// it while a bomb goes through: a /healthz prober, a resident-set sampler of the process tree
// (the service and its sandbox children), a file-descriptor count, and its JSON log lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { signUserToken, type JwtSettings } from '../../src/security/tokens.ts';
import { freePort } from '../../src/util/free-port.ts';
import { createDatabase, type TestDatabase } from '../helpers/db.ts';
import { NO_RATE_LIMITS, spawnCli, TEST_JWT_SECRET } from '../helpers/stack.ts';

type Json = Record<string, any>;

export interface LogLine {
  level: number;
  msg?: string;
  err?: { stack?: string; message?: string };
  [key: string]: unknown;
}

export interface AllProcess {
  apiUrl: string;
  pid: number;
  child: ChildProcess;
  db: TestDatabase;
  storageDir: string;
  token(sub?: string): string;
  /** Every JSON log line the process printed so far. */
  logs(): LogLine[];
  /** The last lines of its output, for failure messages. */
  tail(): string;
  /** Stops it with SIGTERM (drain) and waits; SIGKILL after 20 s. */
  stop(): Promise<number | null>;
}

/** Starts `docpipe all` with `env` over the defaults; waits until /readyz answers 200. */
export async function startAll(env: Record<string, string> = {}): Promise<AllProcess> {
  const db = await createDatabase({ manual: true });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-hostile-'));
  const apiPort = await freePort();
  const fullEnv: Record<string, string> = {
    DATABASE_URL: db.url,
    JWT_SECRET: TEST_JWT_SECRET,
    // The suite's attacks come from one address and a few users: what it tests is the limits on
    // documents and connections, not the request budgets.
    ...NO_RATE_LIMITS,
    DOCPIPE_DATA_DIR: dataDir,
    LOG_LEVEL: 'info',
    HOST: '127.0.0.1',
    API_PORT: String(apiPort),
    WEBHOOK_PORT: String(await freePort()),
    API_METRICS_PORT: String(await freePort()),
    JOB_RETRY_DELAY_SECONDS: '1',
    JOB_HEARTBEAT_SECONDS: '10',
    QUEUE_SUPERVISE_INTERVAL_SECONDS: '2',
    ...env,
  };
  const child = spawnCli('all', fullEnv);
  const lines: LogLine[] = [];
  let tail = '';
  let partial = '';
  const onData = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    tail = (tail + text).slice(-16_000);
    partial += text;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (!line.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        /* not a log line */
      }
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const jwt: JwtSettings = { secret: TEST_JWT_SECRET, audience: 'authenticated', issuer: undefined };

  const stop = async (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const done = await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)]);
    if (!done) {
      child.kill('SIGKILL');
      await exited;
    }
    return child.exitCode;
  };
  after(async () => {
    await stop();
    await db.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docpipe all exited during start-up (${child.exitCode}):\n${tail}`);
    if (Date.now() > deadline) throw new Error(`docpipe all was not ready within 90 s:\n${tail}`);
    const ready = await fetch(`${apiUrl}/readyz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status === 200, () => false);
    if (ready) break;
    await sleep(200);
  }
  return {
    apiUrl,
    pid: child.pid!,
    child,
    db,
    storageDir: path.join(dataDir, 'files'),
    token: (sub = 'hostile-user') => signUserToken(jwt, sub),
    logs: () => lines,
    tail: () => tail,
    stop,
  };
}

export interface HealthReport {
  samples: number;
  /** Slowest answer, or the 1 s timeout for a probe that got none. */
  maxMs: number;
  /** Probes without a 200 within 1 s. */
  failures: number;
}

/** Probes GET /healthz every `everyMs` (each with a 1 s timeout) until stopped. */
/**
 * Probes /healthz every `everyMs` from a child process of its own, so that the figure is the
 * service's: a probe in the test's process would also count that process's own stalls (it opens
 * thousands of sockets in some tests). A probe that gets no 200 within 1 s is a failure.
 */
const PROBE = `
const [url, everyMs] = [process.argv[1], Number(process.argv[2])];
const report = { samples: 0, maxMs: 0, failures: 0 };
let running = true;
process.stdin.on('end', () => (running = false)).resume();
(async () => {
  while (running) {
    const started = performance.now();
    const ok = await fetch(url, { signal: AbortSignal.timeout(1000) }).then(async (r) => { await r.arrayBuffer(); return r.status === 200; }, () => false);
    const ms = ok ? performance.now() - started : 1000;
    report.samples++;
    report.maxMs = Math.max(report.maxMs, ms);
    if (!ok) report.failures++;
    await new Promise((r) => setTimeout(r, Math.max(0, everyMs - (performance.now() - started))));
  }
  process.stdout.write(JSON.stringify(report));
})();
`;

export function watchHealth(apiUrl: string, everyMs = 100): { stop(): Promise<HealthReport> } {
  const child = spawn(process.execPath, ['-e', PROBE, `${apiUrl}/healthz`, String(everyMs)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
      return JSON.parse(output) as HealthReport;
    },
  };
}

const PAGE = 4096;

async function rssOf(pid: number): Promise<number> {
  try {
    return Number((await readFile(`/proc/${pid}/statm`, 'utf8')).split(' ')[1]) * PAGE;
  } catch {
    return 0;
  }
}

/** Pids whose parent is `pid` (the sandbox children of the service). */
async function childrenOf(pid: number): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // The command name (field 2) may hold spaces: fields after its closing parenthesis.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) found.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return found;
}

export interface MemoryReport {
  /** Peak resident set of the service process itself, MB. */
  peakMainMb: number;
  /** Peak resident set of its children together (the sandbox), MB. */
  peakChildrenMb: number;
  /** Peak of both together, MB. */
  peakTotalMb: number;
  startMainMb: number;
  startChildrenMb: number;
}

/** Samples the resident set of `pid` and its children every `everyMs` until stopped. */
export function watchMemory(pid: number, everyMs = 100): { stop(): Promise<MemoryReport> } {
  const report: MemoryReport = { peakMainMb: 0, peakChildrenMb: 0, peakTotalMb: 0, startMainMb: 0, startChildrenMb: 0 };
  let running = true;
  const mb = (bytes: number) => Math.round(bytes / (1024 * 1024));
  const loop = (async () => {
    report.startMainMb = mb(await rssOf(pid));
    let startChildren = 0;
    for (const child of await childrenOf(pid)) startChildren += await rssOf(child);
    report.startChildrenMb = mb(startChildren);
    while (running) {
      const main = await rssOf(pid);
      let children = 0;
      for (const child of await childrenOf(pid)) children += await rssOf(child);
      report.peakMainMb = Math.max(report.peakMainMb, mb(main));
      report.peakChildrenMb = Math.max(report.peakChildrenMb, mb(children));
      report.peakTotalMb = Math.max(report.peakTotalMb, mb(main + children));
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return report;
    },
  };
}

/** Open file descriptors of `pid`. */
export async function openFiles(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

/** Uploads `bytes` as multipart field "file". */
export async function uploadTo(all: AllProcess, bytes: Buffer | Uint8Array, fileName: string, sub?: string): Promise<Response> {
  const form = new FormData();
  form.append('file', new Blob([bytes]), fileName);
  return fetch(`${all.apiUrl}/v1/documents`, { method: 'POST', body: form, headers: { authorization: `Bearer ${all.token(sub)}` } });
}

/** Uploads and asserts 202; returns the document id. */
export async function accepted(all: AllProcess, bytes: Buffer | Uint8Array, fileName: string, sub?: string): Promise<string> {
  const res = await uploadTo(all, bytes, fileName, sub);
  const body = (await res.json()) as Json;
  if (res.status !== 202) throw new Error(`upload of ${fileName} answered ${res.status}: ${JSON.stringify(body)}`);
  return body.id as string;
}

/** Long-polls the document until it is ready or failed (or `timeoutMs` passes). */
export async function finalState(all: AllProcess, id: string, timeoutMs: number, sub?: string): Promise<Json> {
  const deadline = Date.now() + timeoutMs;
  let last: Json | null = null;
  while (Date.now() < deadline) {
    const res = await fetch(`${all.apiUrl}/v1/documents/${id}?wait=5`, {
      headers: { authorization: `Bearer ${all.token(sub)}`, ...(last ? { 'if-none-match': `"${last.version}"` } : {}) },
      signal: AbortSignal.timeout(10_000),
    }).catch(() => null);
    if (res?.status === 200) last = (await res.json()) as Json;
    else if (res && res.status !== 304) throw new Error(`GET /v1/documents/${id} answered ${res.status}: ${await res.text()}`);
    if (last && (last.status === 'ready' || last.status === 'failed')) return last;
    if (!res) await sleep(200);
  }
  throw new Error(`document ${id} did not finish within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

/** The document's event types, in order. */
export async function eventTypes(all: AllProcess, id: string, sub?: string): Promise<string[]> {
  const res = await fetch(`${all.apiUrl}/v1/documents/${id}/events`, { headers: { authorization: `Bearer ${all.token(sub)}` } });
  return (((await res.json()) as Json).events as Json[]).map((e) => e.type as string);
}
