// `npm run test:container`: builds the real Dockerfile with podman and runs the image the way the
// three Fly apps do: `migrate` (the release command), then api, worker and webhook as three
// containers (host network, each on its own ports) against a throwaway PostgreSQL on the host
// (the embedded one), api and worker sharing one fs storage directory. Passes when /readyz of
// each answers 200, an uploaded PDF reaches `ready`, and `podman stop` (SIGTERM) ends each
// container with exit code 0 within its drain budget (SHUTDOWN_TIMEOUT_MS). Prints the image size.
//
// Needs root (rootful podman). No container registry is reachable in CI, so when PODMAN_ENV
// (default: the shared podman-env.sh beside this checkout) exists it is run first: it installs
// podman, makes a local stand-in for node:24-slim, and prints the environment podman needs.
// Without it, the podman on PATH is used as it is. Containers, the cluster and temp dirs are
// removed whatever happens, Ctrl-C included; every wait is bounded.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { signUserToken } from '../src/security/tokens.ts';
import { freePort } from '../src/util/free-port.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const IMAGE = 'localhost/docpipe:ci';
const PODMAN_ENV = process.env.PODMAN_ENV ?? path.resolve(repo, '../shared/tools/container/podman-env.sh');
const JWT_SECRET = 'container-test-secret-0123456789abcdef-0123';
const SHUTDOWN_TIMEOUT_MS = 10_000;
const BUILD_TIMEOUT_MS = 15 * 60_000;
const started = Date.now();
const runId = `${process.pid}-${Date.now().toString(36)}`;

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const say = (message: string) => process.stdout.write(`[test:container] ${message}\n`);

class Failure extends Error {}

// ---- cleanup: whatever happens, in reverse order ----

const cleanups: { what: string; fn: () => Promise<unknown> }[] = [];
let cleaning: Promise<void> | null = null;
function onCleanup(what: string, fn: () => Promise<unknown>): void {
  cleanups.push({ what, fn });
}
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const { what, fn } of cleanups.reverse()) {
      await fn().catch((err: unknown) => process.stderr.write(`[test:container] cleanup of ${what} failed: ${(err as Error).message}\n`));
    }
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    say(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---- processes ----

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

let podmanEnv: NodeJS.ProcessEnv = process.env;

/** Runs a command with a time limit; rejects with its output when it fails (unless `allowFailure`). */
function exec(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs: number; allowFailure?: boolean; onLine?: (line: string) => void }): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let partial = '';
    // Lines of both streams, for progress (podman build writes its steps to stderr).
    const lines = (c: Buffer) => {
      if (!options.onLine) return;
      const all = (partial + c).split('\n');
      partial = all.pop()!;
      all.forEach(options.onLine);
    };
    child.stdout.on('data', (c: Buffer) => {
      stdout += c;
      lines(c);
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c;
      lines(c);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Failure(`${command} could not be run: ${err.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const result = { code, stdout, stderr };
      if (timedOut) reject(new Failure(`${command} ${args.slice(0, 2).join(' ')} took over ${seconds(options.timeoutMs)}:\n${tail(stdout + stderr)}`));
      else if (code !== 0 && !options.allowFailure) reject(new Failure(`${command} ${args.join(' ')} exited ${code}:\n${tail(stdout + stderr)}`));
      else resolve(result);
    });
  });
}

const tail = (text: string, lines = 40) => text.trimEnd().split('\n').slice(-lines).join('\n');
const podman = (args: string[], options: { timeoutMs?: number; allowFailure?: boolean; onLine?: (line: string) => void } = {}) =>
  exec('podman', args, { env: podmanEnv, timeoutMs: options.timeoutMs ?? 60_000, ...options });

/** podman-env.sh prints `export NAME='value'` lines. */
function parseExports(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const match of text.matchAll(/^export ([A-Z_][A-Z0-9_]*)='([^']*)'$/gm)) vars[match[1]!] = match[2]!;
  return vars;
}

// ---- HTTP ----

async function waitFor<T>(what: string, timeoutMs: number, attempt: () => Promise<T | undefined>, describe: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const value = await attempt();
      if (value !== undefined) return value;
    } catch (err) {
      if (err instanceof Failure) throw err; // decided: no point in waiting
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Failure(`${what} within ${seconds(timeoutMs)}${last ? ` (last: ${last})` : ''}\n${await describe()}`);
}

async function containerLogs(name: string): Promise<string> {
  const logs = await podman(['logs', '--tail', '60', name], { allowFailure: true, timeoutMs: 20_000 }).catch(() => null);
  return logs ? `--- ${name} logs ---\n${tail(logs.stdout + logs.stderr, 60)}` : `(no logs of ${name})`;
}

// ---- the test ----

interface Container {
  service: 'api' | 'worker' | 'webhook';
  name: string;
  port: number;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Failure('needs root: the image is built and run with rootful podman');

  // 1. podman, and the environment it needs here.
  let t = Date.now();
  let buildFlags = ['--network', 'host'];
  if (process.env.PODMAN_ENV && !existsSync(PODMAN_ENV)) throw new Failure(`PODMAN_ENV=${PODMAN_ENV} does not exist`);
  if (existsSync(PODMAN_ENV)) {
    const prepared = await exec('bash', [PODMAN_ENV], {
      timeoutMs: 10 * 60_000,
      onLine: (line) => {
        if (line.startsWith('[podman-env]')) say(`  ${line}`); // progress; the exports are parsed below
      },
    });
    const vars = parseExports(prepared.stdout);
    podmanEnv = { ...process.env, ...vars };
    if (vars.PODMAN_BUILD_FLAGS) buildFlags = vars.PODMAN_BUILD_FLAGS.split(/\s+/).filter(Boolean);
    say(`podman prepared by ${path.basename(PODMAN_ENV)} in ${seconds(Date.now() - t)}`);
  } else {
    say(`${PODMAN_ENV} not found: using the podman on PATH as it is`);
  }
  const version = await podman(['--version']).catch(() => {
    throw new Failure('podman is not installed (set PODMAN_ENV to a script that prepares it)');
  });
  say(version.stdout.trim());

  // 2. The image, from the Dockerfile as it is. The image it replaces is removed afterwards, so
  // that repeated runs do not pile up untagged images.
  t = Date.now();
  const previous = (await podman(['image', 'inspect', '--format', '{{.Id}}', IMAGE], { allowFailure: true })).stdout.trim();
  say(`building ${IMAGE} from Dockerfile`);
  // --jobs 2: the production-dependency and build stages are independent; both are mostly npm ci.
  await podman(['build', ...buildFlags, '--jobs', '2', '-t', IMAGE, '-f', path.join(repo, 'Dockerfile'), repo], {
    timeoutMs: BUILD_TIMEOUT_MS,
    onLine: (line) => {
      if (/^(\[\d+\/\d+\] )?STEP \d+\/\d+|^COMMIT|^build: /.test(line)) say(`  ${line}`);
    },
  });
  const id = (await podman(['image', 'inspect', '--format', '{{.Id}}', IMAGE])).stdout.trim();
  if (previous && previous !== id) await podman(['rmi', previous], { allowFailure: true });
  const size = Number((await podman(['image', 'inspect', '--format', '{{.Size}}', IMAGE])).stdout.trim());
  const base = (await podman(['image', 'inspect', '--format', '{{.Size}}', 'node:24-slim'], { allowFailure: true })).stdout.trim();
  const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
  say(`built in ${seconds(Date.now() - t)}: image ${mb(size)}${base ? ` (base node:24-slim ${mb(Number(base))}, docpipe's layers ${mb(size - Number(base))})` : ''}`);
  const user = (await podman(['run', '--rm', '--network', 'host', '--entrypoint', 'id', IMAGE])).stdout.trim();
  if (!/^uid=\d+\(node\)/.test(user)) throw new Failure(`the image runs as ${user}, not as the non-root node user`);
  const uid = Number(/^uid=(\d+)/.exec(user)![1]);
  const gid = Number(/gid=(\d+)/.exec(user)![1]);

  // 3. PostgreSQL on the host, throwaway; the containers share the host's loopback.
  t = Date.now();
  const pgDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-container-pg-'));
  onCleanup('PostgreSQL data', () => rm(pgDir, { recursive: true, force: true }));
  const pg = await startEmbeddedPostgres({
    dataDir: pgDir,
    port: await freePort(),
    database: 'docpipe',
    throwaway: true,
    postgresFlags: ['-c', 'fsync=off', '-c', 'synchronous_commit=off'],
  });
  onCleanup('PostgreSQL', () => pg.stop());
  say(`PostgreSQL on the host at ${new URL(pg.url).host} in ${seconds(Date.now() - t)}`);

  // The shared fs storage: a host directory owned by the image's user (node, uid 1000), not by
  // root, or the containers could not write to it.
  const storage = await mkdtemp(path.join(os.tmpdir(), 'docpipe-container-storage-'));
  onCleanup('storage directory', () => rm(storage, { recursive: true, force: true }));
  await chown(storage, uid, gid);

  const ports = { api: await freePort(), webhook: await freePort(), worker: await freePort() };
  const env: Record<string, string> = {
    DATABASE_URL: pg.url,
    JWT_SECRET,
    API_PORT: String(ports.api),
    WEBHOOK_PORT: String(ports.webhook),
    WORKER_PORT: String(ports.worker),
    API_METRICS_PORT: String(await freePort()),
    WORKER_METRICS_PORT: String(await freePort()),
    WEBHOOK_METRICS_PORT: String(await freePort()),
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    SANDBOX_PROCESSES: '1',
    LOG_LEVEL: 'info',
  };
  const envArgs = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
  const storageArgs = ['-v', `${storage}:/storage`, '-e', 'STORAGE_DIR=/storage'];

  // 4. The release command.
  t = Date.now();
  const migrateName = `docpipe-ci-${runId}-migrate`;
  onCleanup(`container ${migrateName}`, () => podman(['rm', '--force', '--time', '0', migrateName], { allowFailure: true }));
  const migrate = await podman(['run', '--rm', '--network', 'host', '--name', migrateName, ...envArgs, IMAGE, 'migrate'], { allowFailure: true });
  if (migrate.code !== 0) throw new Failure(`migrate exited ${migrate.code}:\n${tail(migrate.stdout + migrate.stderr)}`);
  say(`migrate (the release command) exited 0 in ${seconds(Date.now() - t)}`);

  // 5. The three services. The webhook keeps the image's own data directory (/data) for its
  // storage check; api and worker share the host directory.
  const containers: Container[] = (['api', 'worker', 'webhook'] as const).map((service) => ({ service, name: `docpipe-ci-${runId}-${service}`, port: ports[service] }));
  for (const c of containers) {
    onCleanup(`container ${c.name}`, () => podman(['rm', '--force', '--time', '0', c.name], { allowFailure: true }));
    await podman(['run', '--detach', '--network', 'host', '--name', c.name, ...envArgs, ...(c.service === 'webhook' ? [] : storageArgs), IMAGE, c.service]);
  }
  t = Date.now();
  await Promise.all(
    containers.map((c) =>
      waitFor(
        `${c.service}: /readyz did not answer 200`,
        60_000,
        async () => {
          const res = await fetch(`http://127.0.0.1:${c.port}/readyz`, { signal: AbortSignal.timeout(2000) });
          if (res.status === 200) return true;
          throw new Error(`${res.status} ${await res.text()}`);
        },
        () => containerLogs(c.name),
      ),
    ),
  );
  say(`/readyz answered 200 on api :${ports.api}, worker :${ports.worker}, webhook :${ports.webhook} after ${seconds(Date.now() - t)}`);

  // 6. An upload through the api container, parsed and embedded by the worker container.
  t = Date.now();
  const token = signUserToken({ secret: JWT_SECRET, audience: 'authenticated', issuer: undefined }, 'container-test-user', { expiresInSeconds: 600 });
  const api = `http://127.0.0.1:${ports.api}`;
  const form = new FormData();
  form.append('file', new Blob([await readFile(path.join(repo, 'test/fixtures/sample.pdf'))]), 'sample.pdf');
  const created = await fetch(`${api}/v1/documents`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` } });
  if (created.status !== 202) throw new Failure(`upload answered ${created.status}: ${await created.text()}\n${await containerLogs(containers[0]!.name)}`);
  const { id: docId } = (await created.json()) as { id: string };
  let last: { status?: string; chunkCount?: number; error?: unknown } = {};
  await waitFor(
    `document ${docId} did not reach ready`,
    90_000,
    async () => {
      const res = await fetch(`${api}/v1/documents/${docId}?wait=5`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) });
      last = (await res.json()) as typeof last;
      if (last.status === 'failed') throw new Failure(`document ${docId} failed: ${JSON.stringify(last.error)}\n${await containerLogs(containers[1]!.name)}`);
      return last.status === 'ready' ? true : undefined;
    },
    async () => `last: ${JSON.stringify(last)}\n${await containerLogs(containers[1]!.name)}`,
  );
  say(`sample.pdf uploaded and ready (${last.chunkCount} chunks) in ${seconds(Date.now() - t)}`);

  // 7. SIGTERM, as Fly stops a machine: each drains and exits 0 before SHUTDOWN_TIMEOUT_MS.
  // podman's own limit is longer, so a SIGKILL (exit 137) shows as a failure, not a pass.
  const stopAfter = Math.ceil(SHUTDOWN_TIMEOUT_MS / 1000) + 10;
  const stops = await Promise.all(
    containers.map(async (c) => {
      const t0 = Date.now();
      await podman(['stop', '--time', String(stopAfter), c.name], { timeoutMs: (stopAfter + 30) * 1000 });
      const elapsed = Date.now() - t0;
      const code = Number((await podman(['inspect', '--format', '{{.State.ExitCode}}', c.name])).stdout.trim());
      return { c, code, elapsed };
    }),
  );
  for (const { c, code, elapsed } of stops) {
    if (code !== 0 || elapsed > SHUTDOWN_TIMEOUT_MS) {
      throw new Failure(`${c.service}: on SIGTERM exited ${code} after ${seconds(elapsed)} (expected 0 within ${seconds(SHUTDOWN_TIMEOUT_MS)})\n${await containerLogs(c.name)}`);
    }
  }
  say(`SIGTERM: ${stops.map(({ c, code, elapsed }) => `${c.service} exited ${code} in ${seconds(elapsed)}`).join(', ')}`);
  say(`PASS in ${seconds(Date.now() - started)} (image ${mb(size)})`);
}

let failed = false;
try {
  await main();
} catch (err) {
  failed = true;
  process.stderr.write(`[test:container] FAIL: ${err instanceof Failure ? err.message : ((err as Error)?.stack ?? String(err))}\n`);
} finally {
  await cleanup();
}
process.exit(failed ? 1 : 0);
