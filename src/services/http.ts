// The Fastify base shared by the api and webhook services (and the worker's health port):
// request ids, one error shape for every 4xx/5xx, 5xx details kept out of responses, the HTTP
// duration histogram, strict JSON validation, explicit server timeouts and a connection cap.
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from '../observability/logger.ts';
import { bounded, ERROR_STATUS_CODES, httpErrorResponses, httpRequestDuration, httpRequests, METHODS, SERVICES, STATUS_CLASSES } from '../observability/metrics.ts';
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
/** Request headers a client may send (Node's own cap, 2,000, would drop the rest silently). */
export const MAX_HEADERS = 64;
/** Nesting of a JSON body: ours are flat; a deep one only costs the parser and the validator. */
export const MAX_JSON_DEPTH = 32;

/** The nesting depth of a parsed JSON value, without recursion (a deep value must not overflow the stack). */
export function jsonDepth(value: unknown, limit: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== 'object') continue;
    deepest = Math.max(deepest, depth);
    if (deepest > limit) return deepest;
    for (const child of Array.isArray(item) ? item : Object.values(item)) stack.push([child, depth + 1]);
  }
  return deepest;
}

export interface HttpAppOptions {
  /** api, webhook or worker (a metrics label: anything else is counted as `other`). */
  service: string;
  logger: Logger;
  bodyLimit?: number;
  /** server.maxConnections: connections past it are closed at once (MAX_CONNECTIONS). Unset: no cap. */
  maxConnections?: number;
}

/** Node's headersTimeout: a client gets this long to send its request line and headers. */
export const HEADERS_TIMEOUT_MS = 15_000;

/**
 * The client closed the connection before its request was complete: nothing can be answered,
 * and it is the client's doing, not ours (logged at info, never as an error).
 */
export function clientAborted(request: FastifyRequest): boolean {
  return !request.raw.complete && (request.raw.destroyed || request.raw.socket?.destroyed === true);
}

/** Ajv's message for a refused extra property names the schema path, not the property: name it. */
function validationMessage(err: FastifyError): string {
  const extra = err.validation?.find((e) => e.keyword === 'additionalProperties');
  const property = (extra?.params as { additionalProperty?: unknown } | undefined)?.additionalProperty;
  if (typeof property !== 'string') return err.message;
  const where = `${err.validationContext ?? 'body'}${extra!.instancePath ? extra!.instancePath.replaceAll('/', '.') : ''}`;
  return `${where} has a property that is not allowed: ${JSON.stringify(property.slice(0, 100))}`;
}

/** Maps Fastify's and plugins' own errors (validation, multipart, JWT) to our stable codes. */
function classify(err: FastifyError): { status: number; code: string; message: string; headers?: Record<string, string> } {
  if (err instanceof HttpError) return { status: err.statusCode, code: err.code, message: err.message, headers: err.headers };
  if (err.validation) return { status: 400, code: 'VALIDATION_ERROR', message: validationMessage(err) };
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

/**
 * Errors Node raises before there is a request to route (a head that is too slow, too large or
 * not HTTP), answered in the one error shape too instead of Fastify's own. Not logged: they
 * are the client's, and a flood of them must stay cheap.
 */
function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'REQUEST_TIMEOUT', 'the request did not arrive in time']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'HEADERS_TOO_LARGE', 'the request headers are too large']
        : [400, 'BAD_REQUEST', 'the request is not valid HTTP/1.1'];
  const requestId = randomUUID();
  const body = JSON.stringify({ error: { code, message, requestId } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

/** Requests answered with a deliberate 5xx (an HttpError), not logged as failures. */
const deliberate = new WeakSet<object>();
/** A request's refusal code (4xx, deliberate 5xx), logged by its access line. */
const refusals = new WeakMap<object, string>();

declare module 'fastify' {
  interface FastifyRequest {
    /** The client's address as the api resolves it (Fly-Client-IP behind Fly's proxy), for the access line; undefined elsewhere. */
    clientAddress?: string;
  }
}

/** Probes answered many times a minute: counted in the metrics, not logged. */
const QUIET_ROUTES = new Set(['/healthz', '/readyz']);

function statusClass(status: number): '1xx' | '2xx' | '3xx' | '4xx' | '5xx' {
  return status >= 500 ? '5xx' : status >= 400 ? '4xx' : status >= 300 ? '3xx' : status >= 200 ? '2xx' : '1xx';
}

export function createHttpApp(options: HttpAppOptions): App {
  const service = bounded(options.service, SERVICES);
  // The SLO's series exist from the start (a first 5xx must be visible to rate()).
  for (const status_class of STATUS_CLASSES) httpRequests.inc({ service, status_class }, 0);
  const app = Fastify({
    loggerInstance: options.logger.child({ service: options.service }),
    // A client's id is kept when it is plain (a bad one is refused in onRequest, below).
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    logController: new LogController({ requestIdLogLabel: 'requestId', disableRequestLogging: true }),
    clientErrorHandler,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Fastify's Ajv strips properties a schema does not allow by default: a client's typo or
    // a field it believes we honour would vanish silently. Refuse them (400 VALIDATION_ERROR).
    ajv: { customOptions: { removeAdditional: false } },
    // Explicit timeouts: a slow client cannot hold a socket forever. Uploads stream, so the
    // request timeout is generous (the API also cuts off bodies below a minimum rate, see
    // api/upload-guard.ts); long-polls end well within it.
    connectionTimeout: 0,
    requestTimeout: 15 * 60 * 1000,
    keepAliveTimeout: 72_000,
    http: {
      // Slowloris: a client dribbling its header bytes, or a connection that sends nothing,
      // is cut off after this (Node's default is 60 s, and requestTimeout is 15 minutes). Node
      // enforces these timeouts when it sweeps its connections (every 30 s by default): sweep
      // more often for the bound to hold.
      headersTimeout: HEADERS_TIMEOUT_MS,
      // Node's default, stated: a larger head is refused (431 HEADERS_TOO_LARGE) before routing.
      maxHeaderSize: 16 * 1024,
      connectionsCheckingInterval: 2_000,
    },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    trustProxy: false,
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  // Declared, so every request object has the same shape (the api sets it in its onRequest hook).
  app.decorateRequest('clientAddress', undefined);

  if (options.maxConnections !== undefined) {
    app.server.maxConnections = options.maxConnections;
    // Node closes connections past the cap silently; say so, at most once a minute (a flood
    // of drops must not become a flood of log lines).
    let dropped = 0;
    let reportedAt = 0;
    app.server.on('drop', () => {
      dropped++;
      const now = Date.now();
      if (now - reportedAt < 60_000) return;
      app.log.warn({ dropped, maxConnections: options.maxConnections }, 'connection limit reached: new connections are being closed (MAX_CONNECTIONS)');
      reportedAt = now;
      dropped = 0;
    });
  }

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // Checked before any route: what a client puts in a header must never reach a log line or a
    // table unless it is short and plain. An id of our own answers the refusal.
    const given = request.headers['x-request-id'];
    if (given !== undefined && (typeof given !== 'string' || !REQUEST_ID.test(given))) {
      throw new HttpError(400, 'INVALID_REQUEST_ID', 'X-Request-Id must be 1-128 characters of letters, digits, ".", ":", "_" or "-"');
    }
    if (request.raw.rawHeaders.length / 2 > MAX_HEADERS) {
      throw new HttpError(431, 'TOO_MANY_HEADERS', `at most ${MAX_HEADERS} request headers`);
    }
  });

  // JSON bodies: Fastify's parser (prototype poisoning refused), then a bound on nesting.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parseJson(request, body as string, (err: Error | null, value?: unknown) => {
      if (err) return done(err, undefined);
      if (jsonDepth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) return done(new HttpError(400, 'JSON_TOO_DEEP', `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`), undefined);
      done(null, value);
    });
  });

  // Metrics and the access line. The route is the matched pattern (a closed set), never the URL.
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const status = reply.statusCode;
    const durationMs = reply.elapsedTime;
    const status_class = statusClass(status);
    httpRequests.inc({ service, status_class });
    httpRequestDuration.observe({ service, method: bounded(request.method, METHODS), route, status_class }, durationMs / 1000);
    if (status >= 400) httpErrorResponses.inc({ service, route, status_code: bounded(String(status), ERROR_STATUS_CODES) });
    if (status >= 500 && !deliberate.has(request)) request.log.error({ statusCode: status, route, durationMs }, 'request failed');
    else if (!QUIET_ROUTES.has(route)) {
      // One line per request, the refusals' too (their stable code comes from the error handler;
      // the message is the client's, in its answer): a flood of refused requests costs one short
      // line each. Lines are written synchronously to stdout, so their size is what a slow log
      // reader makes the event loop wait for.
      const code = refusals.get(request);
      request.log.info({ method: request.method, route, statusCode: status, durationMs: Math.round(durationMs * 10) / 10, clientAddress: request.clientAddress, code }, 'request completed');
    }
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (clientAborted(request)) {
      // Whatever failed (storage, the multipart parser, the socket), the cause is the client
      // leaving: one info line, no stack; the answer is only for the metrics and the log.
      const code = err instanceof HttpError && err.code === 'UPLOAD_ABORTED' ? err.code : 'CLIENT_ABORTED';
      request.log.info({ code, statusCode: 400, route: request.routeOptions.url }, 'the client closed the connection before the request was complete');
      return reply.status(400).send({ error: { code, message: 'the client closed the connection before the request was complete', requestId: request.id } });
    }
    const { status, code, message, headers } = classify(err);
    // A 5xx we chose to send (SERVER_BUSY shedding load, a webhook BUSY) is no failure of ours:
    // under a flood it must not become a flood of error lines with stacks.
    if (status >= 500 && err instanceof HttpError) deliberate.add(request);
    if (status >= 500 && !deliberate.has(request)) request.log.error({ err }, 'unhandled error');
    // The access line (onResponse) logs the refusal: its code and message, once.
    else refusals.set(request, code);
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
