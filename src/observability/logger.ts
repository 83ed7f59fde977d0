// The process logger: pino JSON to stdout. Services derive child loggers that carry the
// request id (HTTP) or the job's request id (worker), so one upload can be followed across
// the api, the queue and the worker.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.token'], censor: '[redacted]' },
  });
}
