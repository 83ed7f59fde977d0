// Runs a program to its exit and collects what it printed; killed past a time limit, so that a
// hung child fails its test instead of hanging the run. Asynchronous: a fake server in the test's
// own process keeps answering the child meanwhile (spawnSync would block it).
import { spawn } from 'node:child_process';
import { once } from 'node:events';

export interface Exit {
  /** The exit code; null when a signal ended it (the time limit included). */
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export async function runToExit(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number }): Promise<Exit> {
  const started = performance.now();
  const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr, ms: performance.now() - started };
}
