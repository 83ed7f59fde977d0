// What a person at a terminal sees of `npm start`.
//
// Ctrl-C. The terminal sends SIGINT to its whole foreground process group: tsx,
// the docpipe process under it and (unless it runs in a group of its own) the embedded
// PostgreSQL; npm forwards one more SIGINT to its script, and tsx relays a signal to its child
// when it has not seen the child get it. A single Ctrl-C must still drain and exit 0 quietly:
// no error-level line (no "terminating connection due to administrator command"), no
// "second SIGINT", and no PostgreSQL left running. The test runs `tsx src/cli.ts all` (what
// `npm start` runs) in a process group of its own and signals the group, as a terminal would.
//
// Logs: readable lines (pino-pretty) on a terminal, JSON lines otherwise; LOG_FORMAT chooses.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../src/util/free-port.ts';
import { createDatabase } from '../helpers/db.ts';

const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-ctrl-c-'));
const pgPort = await freePort();
const running = new Set<ChildProcess>();

/** The pid of a postmaster still running on the test's cluster, or null. */
function postmaster(): number | null {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

after(async () => {
  for (const child of running) {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const pid = postmaster();
  if (pid) {
    process.kill(pid, 'SIGINT');
    for (let i = 0; i < 100 && postmaster(); i++) await sleep(100);
  }
  // As root the cluster may live elsewhere, <dataDir>/pg linking to it.
  const link = await readlink(path.join(dataDir, 'pg')).catch(() => null);
  if (link) await rm(path.resolve(dataDir, link), { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
  lines: Record<string, any>[];
}

/** A multipart upload whose body keeps arriving, in small pieces, until finish(). */
function slowUpload(api: string, token: string): { finish(): void; status: Promise<number | string> } {
  const boundary = 'docpipe-ctrl-c-boundary';
  const encoder = new TextEncoder();
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(encoder.encode(`--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="slow.txt"\r\ncontent-type: text/plain\r\n\r\n`));
      let done = false;
      void finished.then(() => (done = true));
      while (!done) {
        controller.enqueue(encoder.encode('The keeper climbed the spiral stair at dusk to light the lamp.\n'.repeat(32)));
        await sleep(100);
      }
      controller.enqueue(encoder.encode(`\r\n--${boundary}--\r\n`));
      controller.close();
    },
  });
  const status = fetch(`${api}/v1/documents`, {
    method: 'POST',
    body,
    duplex: 'half',
    headers: { authorization: `Bearer ${token}`, 'content-type': `multipart/form-data; boundary=${boundary}` },
  } as RequestInit).then(
    (res) => res.status,
    (err: Error) => `no answer: ${err.message}`,
  );
  return { finish, status };
}

/**
 * Starts `tsx src/cli.ts all` in its own process group, waits until it serves, starts work that
 * is still in flight when `interrupt` signals, and waits for the exit.
 */
async function ctrlC(interrupt: (pid: number, output: () => string) => Promise<void>): Promise<Run> {
  const tsx = path.resolve('node_modules/tsx/dist/cli.mjs');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DOCPIPE_DATA_DIR: dataDir,
    EMBEDDED_PG_PORT: String(pgPort),
    API_PORT: '0',
    WEBHOOK_PORT: '0',
    WORKER_PORT: '0',
    API_METRICS_PORT: '0',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    SANDBOX_PROCESSES: '1',
  };
  delete env.DATABASE_URL;
  delete env.JWT_SECRET;
  // detached: a new process group (and session), led by tsx, as a terminal's foreground job is.
  const child = spawn(process.execPath, [tsx, 'src/cli.ts', 'all'], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c));
  child.stderr!.on('data', (c: Buffer) => (output += c));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  for (const deadline = Date.now() + 120_000; !output.includes('"docpipe started"'); await sleep(100)) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`docpipe did not start:\n${output}`);
  }
  // Work in flight while the signal lands: an upload whose body is still arriving (the drain
  // waits for it, so it lasts as long as the test wants) and a long-poll (woken by the drain).
  const api = JSON.parse(output.split('\n').find((l) => l.includes('"docpipe started"'))!).urls.api as string;
  const token = /export TOKEN=(\S+)/.exec(output)![1]!;
  const slow = slowUpload(api, token);
  const longPoll = fetch(`${api}/v1/documents/00000000-0000-4000-8000-000000000000?wait=30`, { headers: { authorization: `Bearer ${token}` } }).then(
    (res) => res.status,
    () => 'no answer',
  );
  // In flight for certain: the fs storage opens its temp file with the first byte of the body
  // (on a loaded machine a fixed pause left the upload not yet admitted when the signal landed).
  const tmp = path.join(dataDir, 'files', '.tmp');
  for (const deadline = Date.now() + 15_000; (await readdir(tmp).catch(() => [])).length === 0; await sleep(50)) {
    if (Date.now() > deadline) throw new Error(`the upload never reached storage:\n${output}`);
  }

  await interrupt(child.pid!, () => output);
  // The upload finishes during the drain, a second after the signal, and is answered.
  await sleep(1_000);
  slow.finish();
  assert.equal(await slow.status, 202, `the upload in flight was accepted during the drain:\n${output}`);
  const bound = new AbortController();
  const [code, signal] = (await Promise.race([exited, sleep(30_000, [null, 'TIMEOUT'], { signal: bound.signal })]).finally(() => bound.abort())) as [number | null, NodeJS.Signals | null];
  running.delete(child);
  assert.notEqual(await longPoll, 'no answer', 'the long-poll was answered before the process exited');
  const lines = output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
  return { code, signal, output, lines };
}

function assertQuiet(run: Run): void {
  assert.equal(run.signal, null, `exited by itself:\n${run.output}`);
  assert.equal(run.code, 0, `a drained docpipe exits 0:\n${run.output}`);
  const errors = run.lines.filter((l) => l.level >= 50);
  const story = run.lines.map((l) => `${l.time} ${l.level} ${l.msg}${l.err ? `: ${l.err.message}` : ''}`).join('\n');
  assert.equal(errors.length, 0, `nothing logged at error level:\n${story}`);
  assert.doesNotMatch(run.output, /second SIGINT|terminating connection|CONNECTION_CLOSED/);
  assert.ok(run.lines.some((l) => l.msg === 'shutting down' && l.signal === 'SIGINT'), run.output);
  assert.ok(run.lines.some((l) => l.msg === 'stopped'), run.output);
  assert.equal(postmaster(), null, 'the embedded PostgreSQL was stopped');
}

test('Ctrl-C: SIGINT to the whole process group drains and exits 0 quietly', { timeout: 180_000 }, async () => {
  const run = await ctrlC(async (pid) => void process.kill(-pid, 'SIGINT'));
  assertQuiet(run);
  // The local parser never receives webhooks: no warning about a webhook secret it cannot use.
  assert.ok(!run.lines.some((l) => /WEBHOOK_SECRET/.test(String(l.msg))), run.output);
});

test('Ctrl-C under npm: the group gets SIGINT and tsx a second one (npm forwards it): still one quiet drain', { timeout: 180_000 }, async () => {
  const run = await ctrlC(async (pid, output) => {
    process.kill(-pid, 'SIGINT');
    // npm's forward reaches tsx a moment later; tsx relays it to docpipe, mid-drain.
    for (const deadline = Date.now() + 5_000; !output().includes('"shutting down"') && Date.now() < deadline; ) await sleep(10);
    process.kill(pid, 'SIGINT');
  });
  assertQuiet(run);
});

describe('logs', () => {
  /** `docpipe migrate` on a fresh database: it logs a line per migration. */
  async function migrateLog(env: Record<string, string>, options: { tty?: boolean } = {}): Promise<{ code: number | null; out: string }> {
    const db = await createDatabase({ migrate: false });
    const vars: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: db.url, JWT_SECRET: 'log-format-test-secret-0123456789abcdef' };
    delete vars.LOG_FORMAT;
    Object.assign(vars, env);
    const argv = [process.execPath, '--import', 'tsx', path.resolve('src/cli.ts'), 'migrate'];
    // `script` runs the command on a pseudo-terminal: stdout is a TTY there.
    const [cmd, args] = options.tty ? ['script', ['-qec', argv.map((a) => `'${a}'`).join(' '), '/dev/null']] : [argv[0]!, argv.slice(1)];
    const result = spawnSync(cmd as string, args as string[], { env: vars, encoding: 'utf8', timeout: 60_000 });
    return { code: result.status, out: `${result.stdout}${result.stderr}` };
  }
  const PRETTY = /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO.*: applied migration 001_event_log/m;

  test('not a terminal: JSON lines', async () => {
    const { code, out } = await migrateLog({});
    assert.equal(code, 0, out);
    assert.match(out, /^\{"level":30,.*"msg":"applied migration 001_event_log"\}$/m);
  });

  test('a terminal: readable lines', { skip: spawnSync('script', ['--version']).status !== 0 && 'no `script` here to make a pseudo-terminal' }, async () => {
    const { code, out } = await migrateLog({}, { tty: true });
    assert.equal(code, 0, out);
    assert.match(out.replace(/\x1b\[[0-9;]*m/g, ''), PRETTY);
    assert.doesNotMatch(out, /^\{"level"/m);
  });

  test('LOG_FORMAT overrides either way, and a bad value is a configuration error', async () => {
    const pretty = await migrateLog({ LOG_FORMAT: 'pretty' });
    assert.equal(pretty.code, 0, pretty.out);
    assert.match(pretty.out, PRETTY);
    const json = await migrateLog({ LOG_FORMAT: 'json' }, { tty: spawnSync('script', ['--version']).status === 0 });
    assert.match(json.out, /"msg":"applied migration 001_event_log"/);
    const bad = await migrateLog({ LOG_FORMAT: 'xml' });
    assert.equal(bad.code, 2);
    assert.match(bad.out, /invalid configuration:\n  - LOG_FORMAT: must be one of auto, json, pretty/);
  });
});
