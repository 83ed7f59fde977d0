// The delay proxy (./delay-proxy.ts) in a process of its own, for the bench's far-worker phase:
// its timers then fire on an event loop that nothing else keeps busy (the harness's loop serves
// the uploads meanwhile), and its CPU shows apart. Driven over IPC by `startProxyProcess`.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startDelayProxy, type DelayProxy, type DelayProxyOptions, type DelayProxyStats } from './delay-proxy.ts';

type Call = { type: 'stats' } | { type: 'delay'; ms: number };
type Request = { id: number } & Call;
type Reply = { id: number; stats?: DelayProxyStats; error?: string };

export interface ProxyProcess {
  pid: number;
  port: number;
  delayMs(): number;
  url(targetUrl: string): string;
  stats(): Promise<DelayProxyStats>;
  setDelay(ms: number): Promise<void>;
  stop(): Promise<void>;
}

const SELF = fileURLToPath(import.meta.url);

/** Forks this file with `options`; resolves once the proxy listens. */
export function startProxyProcess(options: DelayProxyOptions, timeoutMs = 30_000): Promise<ProxyProcess> {
  const child = fork(SELF, ['--serve'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void }>();
  let nextId = 1;
  let gone: Error | null = null;
  child.on('exit', (code, signal) => {
    gone = new Error(`the delay proxy exited (${code ?? signal})`);
    for (const p of pending.values()) p.reject(gone);
    pending.clear();
  });
  const call = (request: Call): Promise<Reply> =>
    new Promise((resolve, reject) => {
      if (gone) return reject(gone);
      const id = nextId++;
      const timer = setTimeout(() => (pending.delete(id), reject(new Error(`the delay proxy did not answer ${request.type}`))), 10_000);
      pending.set(id, {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      child.send({ ...request, id });
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (child.kill('SIGKILL'), reject(new Error('the delay proxy did not start'))), timeoutMs);
    child.once('exit', () => reject(gone));
    child.on('message', (message: Reply | { type: 'listening'; port: number } | { type: 'failed'; error: string }) => {
      if ('type' in message && message.type === 'listening') {
        clearTimeout(timer);
        const port = message.port;
        let delay = options.delayMs;
        resolve({
          pid: child.pid!,
          port,
          delayMs: () => delay,
          url(targetUrl) {
            const url = new URL(targetUrl);
            url.hostname = '127.0.0.1';
            url.port = String(port);
            return url.toString();
          },
          stats: async () => (await call({ type: 'stats' })).stats!,
          setDelay: async (ms) => {
            const r = await call({ type: 'delay', ms });
            if (r.error) throw new Error(r.error);
            delay = ms;
          },
          async stop() {
            if (gone) return;
            const exited = new Promise((r) => child.once('exit', r));
            child.kill('SIGTERM');
            const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
            await exited;
            clearTimeout(kill);
          },
        });
      } else if ('type' in message && message.type === 'failed') {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(new Error(`the delay proxy did not start: ${message.error}`));
      } else if ('id' in message) {
        pending.get(message.id)?.resolve(message);
        pending.delete(message.id);
      }
    });
    child.send(options);
  });
}

if (process.argv[2] === '--serve' && process.send) {
  let proxy: DelayProxy | null = null;
  process.once('message', (options: DelayProxyOptions) => {
    startDelayProxy(options).then(
      (p) => {
        proxy = p;
        process.send!({ type: 'listening', port: p.port });
      },
      (err: unknown) => process.send!({ type: 'failed', error: (err as Error).message }),
    );
    process.on('message', (request: Request) => {
      if (!proxy || typeof request !== 'object' || !('id' in request)) return;
      try {
        if (request.type === 'stats') process.send!({ id: request.id, stats: proxy.stats() });
        else {
          proxy.setDelay(request.ms);
          process.send!({ id: request.id });
        }
      } catch (err) {
        process.send!({ id: request.id, error: (err as Error).message });
      }
    });
  });
  // The harness gone (IPC closed) or a signal: stop and exit.
  const stop = () => void (proxy?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
  process.once('disconnect', stop);
  process.once('SIGTERM', stop);
}
