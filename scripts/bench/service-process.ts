// docpipe services in processes of their own, started as the deployed app starts them
// (`node --import tsx src/cli.ts <service>`, the pinned Node 24 of node_modules), for the bench's
// webhook phase, its worker-fleet phases and `npm run bench:webhook`. Each is ready when its
// /readyz answers 200; stopping is SIGTERM (the service's own drain), then SIGKILL past a bound.
// Optionally pinned to one CPU with taskset, so a client pinned elsewhere does not share its core.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export interface ServiceProcess {
  pid: number;
  /** Base URL of its HTTP port (health for a worker; the service itself for api and webhook). */
  url: string;
  /** CPU it is pinned to, or null. */
  cpu: number | null;
  /** Why it exited (`exit code 1`, `exit code SIGKILL`), or null while it runs. */
  exited(): string | null;
  stop(timeoutMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();

/** Kills every service process still running (the bench's cleanup, and on exit). */
export function killServiceProcesses(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}
process.once('exit', killServiceProcesses);

let tasksetChecked: boolean | null = null;

/** Whether this machine lets a process be pinned to one CPU (taskset is there and allowed). */
export function canPin(): boolean {
  if (tasksetChecked === null) {
    try {
      execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore', timeout: 5_000 });
      tasksetChecked = true;
    } catch {
      tasksetChecked = false;
    }
  }
  return tasksetChecked;
}

/** Pins a running process, all its threads, to `cpu` (false when that failed). */
export function pinProcess(pid: number, cpu: number): boolean {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

export interface ServiceOptions {
  /** The repository whose src/cli.ts runs (its node_modules provide Node and tsx). */
  root: string;
  command: 'api' | 'worker' | 'webhook';
  /** The service's configuration; nothing else of this process's environment is passed on but PATH, HOME and TMPDIR. */
  env: Record<string, string>;
  /** Port of its HTTP server (API_PORT, WORKER_PORT or WEBHOOK_PORT is set to it). */
  port: number;
  cpu?: number | null;
  readyTimeoutMs?: number;
}

const PORT_VARIABLE = { api: 'API_PORT', worker: 'WORKER_PORT', webhook: 'WEBHOOK_PORT' } as const;

export async function startServiceProcess(options: ServiceOptions): Promise<ServiceProcess> {
  const node = path.join(options.root, 'node_modules/.bin/node');
  const args = ['--import', 'tsx', path.join(options.root, 'src/cli.ts'), options.command];
  const cpu = options.cpu ?? null;
  const env: Record<string, string> = {
    ...Object.fromEntries(['PATH', 'HOME', 'TMPDIR'].flatMap((k) => (process.env[k] ? [[k, process.env[k]!]] : []))),
    ...options.env,
    [PORT_VARIABLE[options.command]]: String(options.port),
  };
  // Its log lines (LOG_LEVEL warn or silent) go to our stderr: stdout is the bench's report.
  // The working directory is the repository: `--import tsx` resolves from there (a .env there
  // would fill in only what `env` leaves unset).
  const child = cpu === null
    ? spawn(node, args, { cwd: options.root, env, stdio: ['ignore', process.stderr, 'pipe'] })
    : spawn('taskset', ['-c', String(cpu), node, ...args], { cwd: options.root, env, stdio: ['ignore', process.stderr, 'pipe'] });
  live.add(child);
  let stderrTail = '';
  child.stderr!.on('data', (d: Buffer) => {
    process.stderr.write(d);
    stderrTail = (stderrTail + d.toString()).slice(-2000);
  });
  let exited = null as string | null;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = `exit code ${code ?? signal}`;
      live.delete(child);
      resolve();
    }),
  );
  child.on('error', (err) => (exited = err.message));
  const url = `http://127.0.0.1:${options.port}`;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (exited) throw new Error(`docpipe ${options.command} exited while starting (${exited}): ${stderrTail.slice(-500)}`);
    const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status === 200, () => false);
    if (ready) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`docpipe ${options.command} was not ready within ${options.readyTimeoutMs ?? 60_000} ms: ${stderrTail.slice(-500)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: child.pid!,
    url,
    cpu,
    exited: () => exited,
    async stop(timeoutMs = 15_000) {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
