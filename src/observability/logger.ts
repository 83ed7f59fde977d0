// The process logger: pino JSON to stdout, or readable lines (pino-pretty) for a person at a
// terminal. Services derive child loggers that carry the request id (HTTP) or the job's request
// id (worker), so one upload can be followed across the api, the queue and the worker.
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** json: one JSON object per line (machines, Fly logs); pretty: readable lines; auto: pretty on a TTY. */
export type LogFormat = 'json' | 'pretty' | 'auto';

export interface LoggerOptions {
  /** Default json: only the CLI chooses by the terminal (LOG_FORMAT, config.ts). */
  format?: LogFormat;
}

export function createLogger(level: string, base: Record<string, unknown> = {}, options: LoggerOptions = {}): Logger {
  const settings = {
    level,
    base: { pid: process.pid, ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.token'], censor: '[redacted]' },
  };
  const format = options.format ?? 'json';
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true) ? prettyStream() : null;
  return pretty ? pino(settings, pretty) : pino(settings);
}

/**
 * pino-pretty formatting each line synchronously on this thread (not pino's worker-thread
 * transport): lines stay in order with what the CLI prints itself, and none is lost when the
 * process exits right after logging. pino-pretty is a devDependency: a production install may not
 * have it, and then the logs stay JSON, silently (production wants JSON anyway).
 */
function prettyStream(): DestinationStream | null {
  let prettyFactory: typeof import('pino-pretty').prettyFactory;
  try {
    prettyFactory = (createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty')).prettyFactory;
  } catch {
    return null;
  }
  const prettify = prettyFactory({ translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true });
  const out = pino.destination({ dest: 1, sync: true });
  return { write: (line: string) => void out.write(prettify(line)) };
}
