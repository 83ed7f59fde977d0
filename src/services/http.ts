// The Fastify base shared by the api and webhook services (and the worker's health port):
// request ids, one error shape for every 4xx/5xx, 5xx details kept out of responses, the HTTP
// duration histogram, and explicit server timeouts.
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyError, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from '../observability/logger.ts';
import { httpRequestDuration } from '../observability/metrics.ts';
import { ProviderError } from '../providers/types.ts';
import { HttpError } from './errors.ts';

export type App = FastifyInstance<
  import('node:http').Server,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  Logger,
  TypeBoxTypeProvider
>;

const REQUEST_ID = /^[\w.:-]{1,128}$/;

export interface HttpAppOptions {
  service: string;
  logger: Logger;
  bodyLimit?: number;
}

/** Maps Fastify's and plugins' own errors (validation, multipart, JWT) to our stable codes. */
function classify(err: FastifyError): { status: number; code: string; message: string; headers?: Record<string, string> } {
  if (err instanceof HttpError) return { status: err.statusCode, code: err.code, message: err.message, headers: err.headers };
  if (err.validation) return { status: 400, code: 'VALIDATION_ERROR', message: err.message };
  if (err instanceof ProviderError) {
    // A provider (storage, typically) failed on the request path: 503 with Retry-After when it
    // may pass, 502 when it will not (an access problem the operator must fix). The messages of
    // ProviderError never carry keys.
    if (err.permanent) return { status: 502, code: err.code, message: err.message };
    const retryAfter = String(Math.max(1, Math.ceil((err.details.retryAfterMs ?? 1000) / 1000)));
    return { status: 503, code: err.code, message: err.message, headers: { 'retry-after': retryAfter } };
  }
  const status = err.statusCode ?? 500;
  if (status >= 500) return { status, code: 'INTERNAL_ERROR', message: 'internal error' };
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'UNSUPPORTED_CONTENT_TYPE', message: err.message };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'BODY_TOO_LARGE', message: err.message };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'INVALID_JSON', message: err.message };
    default:
      return { status, code: status === 404 ? 'NOT_FOUND' : err.code?.startsWith('FST_') ? 'BAD_REQUEST' : (err.code ?? 'BAD_REQUEST'), message: err.message };
  }
}

export function createHttpApp(options: HttpAppOptions): App {
  const app = Fastify({
    loggerInstance: options.logger.child({ service: options.service }),
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: true }),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Explicit timeouts: a slow client cannot hold a socket forever. Uploads stream, so the
    // request timeout is generous; long-polls end well within it.
    connectionTimeout: 0,
    requestTimeout: 15 * 60 * 1000,
    keepAliveTimeout: 72_000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    trustProxy: false,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    httpRequestDuration.observe(
      { service: options.service, method: request.method, route, status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
    if (reply.statusCode >= 500) request.log.error({ statusCode: reply.statusCode, route }, 'request failed');
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const { status, code, message, headers } = classify(err);
    if (status >= 500) request.log.error({ err }, 'unhandled error');
    else request.log.info({ code, statusCode: status }, message);
    if (headers) reply.headers(headers);
    return reply.status(status).send({ error: { code, message, requestId: request.id } });
  });

  app.setNotFoundHandler((request, reply) => {
    return reply.status(404).send({ error: { code: 'ROUTE_NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}`, requestId: request.id } });
  });

  return app;
}

export interface ReadinessCheck {
  name: string;
  check(): Promise<void>;
}

/** `/healthz` (the process answers) and `/readyz` (every dependency answers), unauthenticated. */
export function registerHealth(app: App, checks: ReadinessCheck[]): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const results = await Promise.all(
      checks.map(async (c) => {
        try {
          await c.check();
          return { name: c.name, ok: true as const };
        } catch (err) {
          return { name: c.name, ok: false as const, error: (err as Error).message };
        }
      }),
    );
    const ready = results.every((r) => r.ok);
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready', checks: results });
  });
}
