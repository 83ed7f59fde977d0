// A pool of child processes that run untrusted work (parsing and tokenizing users' files) outside
// the service's main thread and heap. Child processes rather than worker threads, because only a
// process can be held to a memory bound that counts everything a decoder allocates: a worker
// thread's resourceLimits cover its V8 heap, not the ArrayBuffers that inflate and pdf.js fill,
// and memory a thread frees may stay in the process. Each child:
//   - has a V8 heap limit (--max-old-space-size) and a resident-set watchdog (read from /proc
//     every 100 ms while it works): past `memoryMb` it is killed;
//   - has a time limit per task: past `timeoutMs` it is killed;
//   - runs one task at a time, is started lazily and restarted after any death, and is recycled
//     when a task leaves it large, so the memory goes back to the operating system;
//   - gets an empty environment: a parser exploit finds no database URL or API key there.
// A task that kills its child fails with DocumentTooComplexError (reason memory, time, stack or
// crash): permanent, because the same document would do it again. The pool itself never throws
// into the void: a child that cannot be started fails the task with SandboxUnavailableError,
// which the pipeline retries like any transient failure.
import { fork, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../observability/logger.ts';
import { DocumentTooComplexError, type TaskOptions } from '../types.ts';

export interface SandboxOptions {
  /** The child's entry module (it answers SandboxRequest messages with SandboxReply). */
  entry: URL;
  processes: number;
  /** Resident set limit of one child; its V8 heap limit is three quarters of it. */
  memoryMb: number;
  timeoutMs: number;
  logger: Logger;
  /** How often the resident set of a busy child is read (default 100 ms). */
  watchIntervalMs?: number;
  /** Called once per task that reached a child, with how it ended and how long it ran. */
  observe?(outcome: TaskOutcome, seconds: number): void;
}

export type TaskOutcome = 'ok' | 'error' | 'memory' | 'time' | 'crash' | 'aborted' | 'unavailable';

/** Aborting the signal kills the child running the task; the task rejects with SandboxAbortedError. */
export type RunOptions = TaskOptions;

export interface SandboxStats {
  processes: number;
  busy: number;
  queued: number;
  started: number;
  killed: { memory: number; time: number; crash: number; aborted: number };
}

export interface Sandbox {
  run<T>(task: unknown, options?: RunOptions): Promise<T>;
  /** Starts every process now instead of at the first tasks (each loads its modules once, ~0.5 s). */
  warm(): void;
  stats(): SandboxStats;
  /** Kills every child; queued and running tasks reject. */
  close(): Promise<void>;
}

/** Messages between the pool and a child. */
export interface SandboxRequest {
  id: number;
  task: unknown;
}

export type TaskReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: SerializedError };

export type SandboxReply =
  | TaskReply
  /** Sent once, when the child has loaded its modules: time limits start from here. */
  | { ready: true };

export interface SerializedError {
  name: string;
  message: string;
  code?: string;
  /** DocumentLimitError's setting. */
  setting?: string;
}

/** The sandbox could not run the task (a child could not be started): transient, retried. */
export class SandboxUnavailableError extends Error {
  readonly code = 'SANDBOX_UNAVAILABLE';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxUnavailableError';
  }
}

/** A task failed inside the child; `error` is what the child threw, rebuilt by the caller. */
export class SandboxTaskError extends Error {
  constructor(readonly error: SerializedError) {
    super(error.message);
    this.name = 'SandboxTaskError';
  }
}

interface Pending {
  task: unknown;
  signal: AbortSignal | undefined;
  /** Drops the task while it waits in the queue; removed once a child takes it. */
  onQueuedAbort?: () => void;
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

interface Child {
  process: ChildProcess;
  /** The child said it has loaded; until then a task's time limit has not started. */
  ready: boolean;
  current: (Pending & { id: number; startedAt: number; timer: NodeJS.Timeout | null; onAbort?: () => void; killedFor?: 'memory' | 'time' | 'aborted'; sendFailed?: Error }) | null;
  /** The last few KB of the child's stderr: V8 says why it died there. */
  stderrTail: string;
  peakRssBytes: number;
}

const PAGE_SIZE = 4096;
const BOOT_TIMEOUT_MS = 30_000;
/** A child that ends a task above this share of its memory limit is replaced (its heap stays grown). */
const RECYCLE_SHARE = 0.5;

/** Flags the child needs to load TypeScript sources (development and tests run under tsx). */
function loaderFlags(entry: URL): string[] {
  if (!entry.pathname.endsWith('.ts')) return [];
  return ['--import', import.meta.resolve('tsx')];
}

async function residentBytes(pid: number): Promise<number | null> {
  try {
    const statm = await readFile(`/proc/${pid}/statm`, 'utf8');
    return Number(statm.split(' ')[1]) * PAGE_SIZE;
  } catch {
    return null; // not Linux, or the child is gone: the heap limit still holds
  }
}

export function createSandbox(options: SandboxOptions): Sandbox {
  const log = options.logger.child({ component: 'sandbox' });
  const heapMb = Math.max(64, Math.floor(options.memoryMb * 0.75));
  const limitBytes = options.memoryMb * 1024 * 1024;
  const execArgv = [...loaderFlags(options.entry), `--max-old-space-size=${heapMb}`];
  const children = new Set<Child>();
  const idle: Child[] = [];
  const queue: Pending[] = [];
  let nextId = 1;
  let closed = false;
  const stats: SandboxStats = { processes: 0, busy: 0, queued: 0, started: 0, killed: { memory: 0, time: 0, crash: 0, aborted: 0 } };

  const watcher = setInterval(() => void watchMemory(), options.watchIntervalMs ?? 100);
  watcher.unref();

  async function watchMemory(): Promise<void> {
    for (const child of children) {
      if (!child.current || child.current.killedFor || child.process.pid === undefined) continue;
      const rss = await residentBytes(child.process.pid);
      if (rss === null || !child.current) continue;
      child.peakRssBytes = Math.max(child.peakRssBytes, rss);
      if (rss > limitBytes) kill(child, 'memory');
    }
  }

  function kill(child: Child, reason: 'memory' | 'time' | 'aborted'): void {
    if (child.current && !child.current.killedFor) child.current.killedFor = reason;
    child.process.kill('SIGKILL');
  }

  function spawnChild(): Child {
    const proc = fork(fileURLToPath(options.entry), [], {
      execArgv,
      env: {},
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    const child: Child = { process: proc, ready: false, current: null, stderrTail: '', peakRssBytes: 0 };
    children.add(child);
    stats.started++;
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (chunk: string) => {
      child.stderrTail = (child.stderrTail + chunk).slice(-4096);
    });
    // A child that cannot load its modules in this time is replaced; its task is retried.
    const boot = setTimeout(() => {
      if (!child.ready) proc.kill('SIGKILL');
    }, BOOT_TIMEOUT_MS);
    boot.unref();
    proc.on('message', (message: SandboxReply) => {
      if ('ready' in message) {
        clearTimeout(boot);
        child.ready = true;
        if (child.current) startClock(child);
        return;
      }
      finish(child, message);
    });
    proc.on('error', (err) => {
      // A failed spawn (EAGAIN, ENOMEM) or a broken IPC channel; 'exit' follows when it ran.
      log.warn({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'sandbox process error');
      if (proc.pid === undefined) onExit(child, null, null, err);
    });
    // 'close', not 'exit': it comes after stderr has drained, so V8's last words are in stderrTail.
    proc.on('close', (code, signal) => onExit(child, code, signal));
    return child;
  }

  function onExit(child: Child, code: number | null, signal: NodeJS.Signals | null, spawnError?: Error): void {
    if (!children.delete(child)) return;
    const index = idle.indexOf(child);
    if (index >= 0) idle.splice(index, 1);
    const task = child.current;
    child.current = null;
    if (task) {
      if (task.timer) clearTimeout(task.timer);
      if (task.onAbort) task.signal?.removeEventListener('abort', task.onAbort);
      stats.busy--;
      // A child that died before it said it was ready never saw the document.
      const infrastructure = spawnError ?? task.sendFailed ?? (child.ready || task.killedFor === 'aborted' ? undefined : new Error(`it exited while starting (${signal ?? `exit code ${code}`}): ${child.stderrTail.slice(-300)}`));
      let outcome: TaskOutcome;
      if (infrastructure) {
        outcome = 'unavailable';
        task.reject(new SandboxUnavailableError(`the sandbox process could not take the task: ${infrastructure.message}`, { cause: infrastructure }));
      } else {
        outcome = task.killedFor ?? (outOfHeap(child) ? 'memory' : 'crash');
        task.reject(deathError(child, task.killedFor, code, signal));
        stats.killed[outcome]++;
        log.warn({ outcome, peakRssMb: Math.round(child.peakRssBytes / (1024 * 1024)), code, signal }, 'a sandbox process was killed or died during a task');
      }
      options.observe?.(outcome, (performance.now() - task.startedAt) / 1000);
    } else if (!closed && code !== 0) {
      log.warn({ code, signal, stderr: child.stderrTail.slice(-500) }, 'an idle sandbox process exited');
    }
    stats.processes = children.size;
    dispatch();
  }

  function outOfHeap(child: Child): boolean {
    return /heap out of memory|Reached heap limit|Allocation failed/i.test(child.stderrTail);
  }

  function deathError(child: Child, killedFor: 'memory' | 'time' | 'aborted' | undefined, code: number | null, signal: NodeJS.Signals | null): Error {
    const mb = (bytes: number) => `${Math.round(bytes / (1024 * 1024))} MB`;
    switch (killedFor) {
      case 'aborted':
        return new SandboxAbortedError();
      case 'time':
        return new DocumentTooComplexError('time', `processing the document took longer than the sandbox's ${options.timeoutMs / 1000} s limit (SANDBOX_TIMEOUT_SECONDS)`);
      case 'memory':
        return new DocumentTooComplexError('memory', `processing the document needed more than the sandbox's ${options.memoryMb} MB (SANDBOX_MEMORY_MB); it reached ${mb(child.peakRssBytes)}`);
      default:
        if (outOfHeap(child)) {
          return new DocumentTooComplexError('memory', `processing the document exhausted the sandbox's ${heapMb} MB heap (SANDBOX_MEMORY_MB)`);
        }
        return new DocumentTooComplexError('crash', `the sandbox process died while processing the document (${signal ?? `exit code ${code}`})`);
    }
  }

  function finish(child: Child, message: TaskReply): void {
    const task = child.current;
    if (!task || message.id !== task.id) return;
    if (task.timer) clearTimeout(task.timer);
    if (task.onAbort) task.signal?.removeEventListener('abort', task.onAbort);
    child.current = null;
    stats.busy--;
    options.observe?.(message.ok ? 'ok' : 'error', (performance.now() - task.startedAt) / 1000);
    if (message.ok) task.resolve(message.result);
    else task.reject(new SandboxTaskError(message.error));
    release(child);
  }

  /**
   * Back to work at once; the check for a child that a task left large (V8 rarely gives its heap
   * back) runs beside it, and such a child is replaced when it is next idle.
   */
  function release(child: Child): void {
    if (closed) {
      children.delete(child);
      child.process.kill('SIGKILL');
      stats.processes = children.size;
      return;
    }
    child.peakRssBytes = 0;
    idle.push(child);
    dispatch();
    if (child.process.pid === undefined) return;
    void residentBytes(child.process.pid).then((rss) => {
      if (rss === null || rss <= limitBytes * RECYCLE_SHARE) return;
      const index = idle.indexOf(child);
      if (index < 0) return; // busy again: checked after that task
      idle.splice(index, 1);
      children.delete(child);
      child.process.kill('SIGKILL');
      stats.processes = children.size;
      dispatch();
    });
  }

  function dispatch(): void {
    while (queue.length > 0 && !closed) {
      let child = idle.pop();
      if (!child) {
        if (children.size >= options.processes) break;
        try {
          child = spawnChild();
        } catch (err) {
          const task = queue.shift()!;
          task.reject(new SandboxUnavailableError(`the sandbox process could not be started: ${(err as Error).message}`, { cause: err }));
          continue;
        }
        stats.processes = children.size;
      }
      const task = queue.shift()!;
      start(child, task);
    }
    stats.queued = queue.length;
  }

  /** The task's time limit runs from when the child can work on it, not from its start-up. */
  function startClock(child: Child): void {
    const task = child.current!;
    task.startedAt = performance.now();
    task.timer = setTimeout(() => kill(child, 'time'), options.timeoutMs);
  }

  function start(child: Child, pending: Pending): void {
    const id = nextId++;
    // One signal serves every job of a worker: listeners must not pile up on it.
    if (pending.onQueuedAbort) pending.signal?.removeEventListener('abort', pending.onQueuedAbort);
    child.current = { ...pending, id, timer: null, startedAt: performance.now() };
    if (child.ready) startClock(child);
    if (pending.signal) {
      const onAbort = () => kill(child, 'aborted');
      child.current.onAbort = onAbort;
      pending.signal.addEventListener('abort', onAbort, { once: true });
    }
    stats.busy++;
    try {
      child.process.send({ id, task: pending.task } satisfies SandboxRequest, (err) => {
        // The task never reached the child (its channel broke): not the document's fault.
        if (err && child.current?.id === id) {
          child.current.sendFailed = err;
          child.process.kill('SIGKILL');
        }
      });
    } catch (err) {
      // The task cannot be serialized (a caller's bug): fail it, keep the child.
      if (child.current.timer) clearTimeout(child.current.timer);
      if (child.current.onAbort) pending.signal?.removeEventListener('abort', child.current.onAbort);
      child.current = null;
      stats.busy--;
      idle.push(child);
      pending.reject(err);
    }
  }

  return {
    run<T>(task: unknown, runOptions: RunOptions = {}): Promise<T> {
      if (closed) return Promise.reject(new SandboxUnavailableError('the sandbox is closed'));
      const { signal } = runOptions;
      if (signal?.aborted) return Promise.reject(new SandboxAbortedError());
      return new Promise<T>((resolve, reject) => {
        const pending: Pending = { task, signal, resolve: resolve as (value: unknown) => void, reject };
        if (signal) {
          // Still queued when aborted: drop it without touching a child.
          pending.onQueuedAbort = () => {
            const index = queue.indexOf(pending);
            if (index >= 0) {
              queue.splice(index, 1);
              stats.queued = queue.length;
              reject(new SandboxAbortedError());
            }
          };
          signal.addEventListener('abort', pending.onQueuedAbort, { once: true });
        }
        queue.push(pending);
        dispatch();
      });
    },
    warm() {
      while (!closed && children.size < options.processes) {
        try {
          idle.push(spawnChild());
        } catch (err) {
          log.warn({ err: { message: (err as Error).message } }, 'could not start a sandbox process ahead of time');
          break;
        }
      }
      stats.processes = children.size;
    },
    stats: () => ({ ...stats, killed: { ...stats.killed } }),
    async close() {
      closed = true;
      clearInterval(watcher);
      for (const task of queue.splice(0)) task.reject(new SandboxUnavailableError('the sandbox is closed'));
      const exits = [...children].map((child) => new Promise<void>((resolve) => {
        if (child.process.exitCode !== null || child.process.signalCode !== null) return resolve();
        child.process.once('exit', () => resolve());
        if (child.current) child.current.killedFor = 'aborted';
        child.process.kill('SIGKILL');
      }));
      await Promise.all(exits);
    },
  };
}

/** The task was aborted (the worker is shutting down): not the document's fault, retried later. */
export class SandboxAbortedError extends Error {
  readonly code = 'WORKER_SHUTDOWN';
  constructor() {
    super('the worker stopped while the document was being processed; it will be processed again');
    this.name = 'SandboxAbortedError';
  }
}
