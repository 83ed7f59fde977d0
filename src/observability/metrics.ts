// Prometheus metrics (prom-client). One registry per process; each service serves it on its own
// port. Fly.io overwrites the labels app, region, host and instance: none is used here.
import http from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'docpipe_process_' });

export const httpRequestDuration = new Histogram({
  name: 'docpipe_http_request_duration_seconds',
  help: 'HTTP request duration by service, route and status code.',
  labelNames: ['service', 'method', 'route', 'status_code'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

export const eventsAppended = new Counter({
  name: 'docpipe_events_appended_total',
  help: 'Events appended to the event log, by event type.',
  labelNames: ['type'] as const,
  registers: [registry],
});

export const jobsCompleted = new Counter({
  name: 'docpipe_jobs_completed_total',
  help: 'Jobs a worker finished, by queue.',
  labelNames: ['queue'] as const,
  registers: [registry],
});

export const jobsFailed = new Counter({
  name: 'docpipe_jobs_failed_total',
  help: 'Job attempts that threw (each is retried until its retry limit), by queue.',
  labelNames: ['queue'] as const,
  registers: [registry],
});

export const stageDuration = new Histogram({
  name: 'docpipe_stage_duration_seconds',
  help: 'Duration of one run of a pipeline stage, by stage and outcome.',
  labelNames: ['stage', 'outcome'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
  registers: [registry],
});

export const documentsFailed = new Counter({
  name: 'docpipe_documents_failed_total',
  help: 'Documents that ended failed, by error code.',
  labelNames: ['code'] as const,
  registers: [registry],
});

/** A bare HTTP server for `/metrics`, kept off the service port so it is never public. */
export async function startMetricsServer(host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(err.message);
        },
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address ? address.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export const providerRequests = new Counter({
  name: 'docpipe_provider_requests_total',
  help: 'HTTP requests to external providers (llamaparse, openai, supabase), by operation and outcome (ok, rate_limited, server_error, client_error, network_error).',
  labelNames: ['provider', 'operation', 'outcome'] as const,
  registers: [registry],
});

export const providerRequestDuration = new Histogram({
  name: 'docpipe_provider_request_duration_seconds',
  help: 'Duration of one provider HTTP request, by provider and operation.',
  labelNames: ['provider', 'operation'] as const,
  buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  registers: [registry],
});

export const rateBudgetWait = new Histogram({
  name: 'docpipe_rate_budget_wait_seconds',
  help: 'Time spent waiting for the shared provider rate budget (token buckets in Postgres), by bucket.',
  labelNames: ['bucket'] as const,
  buckets: [0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
  registers: [registry],
});

export const embeddingTokens = new Counter({
  name: 'docpipe_embedding_tokens_total',
  help: 'Tokens sent to the embedder (usage.prompt_tokens as reported by the provider), by model: the cost driver.',
  labelNames: ['model'] as const,
  registers: [registry],
});

export const webhookDeliveries = new Counter({
  name: 'docpipe_webhook_deliveries_total',
  help: 'Webhook deliveries by provider and outcome (appended, duplicate, ignored, early, unknown_document, rejected).',
  labelNames: ['provider', 'outcome'] as const,
  registers: [registry],
});

export const webhookAuthFailures = new Counter({
  name: 'docpipe_webhook_auth_failures_total',
  help: 'Webhook deliveries answered 401, by provider and reason (missing, bad_credential, bad_signature).',
  labelNames: ['provider', 'reason'] as const,
  registers: [registry],
});

export const sandboxTasks = new Counter({
  name: 'docpipe_sandbox_tasks_total',
  help: 'Tasks of the parse/chunk sandbox by outcome: ok, error (the document was refused or unreadable), memory, time, crash (the child was killed or died), aborted (worker shutdown), unavailable (no child could be started).',
  labelNames: ['outcome'] as const,
  registers: [registry],
});

export const sandboxTaskDuration = new Histogram({
  name: 'docpipe_sandbox_task_duration_seconds',
  help: 'Time one sandbox task ran in its child process (queueing excluded), by outcome.',
  labelNames: ['outcome'] as const,
  buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
  registers: [registry],
});
