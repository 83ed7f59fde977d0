// The configuration every bench script gives docpipe's services: one client address and a few
// users drive thousands of requests a second, so the request budgets and upload caps are off;
// logs are silent, every port is picked by the system, and the providers are the local ones
// (named, so that a developer's environment or .env cannot change them for a service process).
export const BENCH_JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';

export function benchEnv(options: { databaseUrl: string; dataDir: string }, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: options.databaseUrl,
    JWT_SECRET: BENCH_JWT_SECRET,
    RATE_LIMIT_PER_ADDRESS: '0',
    RATE_LIMIT_UPLOADS: '0',
    RATE_LIMIT_LONG_POLLS: '0',
    RATE_LIMIT_REQUESTS: '0',
    DOCPIPE_DATA_DIR: options.dataDir,
    LOG_LEVEL: 'silent',
    API_PORT: '0',
    WEBHOOK_PORT: '0',
    WORKER_PORT: '0',
    API_METRICS_PORT: '0',
    WORKER_METRICS_PORT: '0',
    WEBHOOK_METRICS_PORT: '0',
    // The load comes from one user with many uploads in flight: the per-user and per-process
    // upload caps (4 and 64 by default) would answer most of them 429. The bench measures what
    // an upload costs; the caps cost a map lookup each.
    UPLOAD_CONCURRENCY_PER_USER: '10000',
    UPLOAD_CONCURRENCY_MAX: '10000',
    DOCPIPE_PARSER: 'local',
    DOCPIPE_EMBEDDER: 'local',
    DOCPIPE_STORAGE: 'fs',
    ...extra,
  };
}
