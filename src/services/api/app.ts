// The API service: Fastify with multipart uploads, bearer-JWT auth on every /v1 route, the
// document routes, search and health, and bounds on what uploads may hold (upload-guard.ts).
// `buildApiApp` wires it from a runtime; tests call it directly.
import { createHash } from 'node:crypto';
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../../config.ts';
import { migrationsCurrent } from '../../db/migrate.ts';
import type { VectorStore } from '../../db/vectors.ts';
import type { CommandContext } from '../../documents/commands.ts';
import type { Logger } from '../../observability/logger.ts';
import { authFailures } from '../../observability/metrics.ts';
import type { Embedder, Storage } from '../../providers/types.ts';
import { createAudit, type Audit, type AuditEntry } from '../../security/audit.ts';
import { createJwksCache } from '../../security/jwks.ts';
import { createThreats, type RequestContext } from '../../security/threats.ts';
import { AuthError, createAuthVerifier, type JwtSettings, type Principal } from '../../security/tokens.ts';
import { HttpError } from '../errors.ts';
import { registerEdgeSecurity } from '../edge-security.ts';
import { createHttpApp, registerHealth, type App, type ReadinessCheck } from '../http.ts';
import { registerAdminRoutes } from './admin.ts';
import { ErrorBody } from './schemas.ts';
import { registerDocumentRoutes } from './documents.ts';
import { budgetOf, clientAddress, createLimits } from './limits.ts';
import { StatusCache } from './status-cache.ts';
import { StatusWaiter } from './status-waiter.ts';
import { registerSearchRoutes } from './search.ts';
import { registerFsUploadRoute } from './storage-upload.ts';
import { createUploadGuard } from './upload-guard.ts';
import { registerUploadRoutes } from './uploads.ts';
import { registerUsageRoutes } from './usage.ts';
import { costSettings } from '../../documents/usage.ts';
import { createUploadTokens } from '../../providers/storage/upload-token.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

const ALLOWED_ROLES = new Set(['authenticated', 'service_role']);
const API_VERSION = '1.0.0';
export const OPENAPI_CACHE_CONTROL = 'public, max-age=3600';

/** Whether an If-None-Match header names `etag` (or is `*`); weak and strong forms compare alike (RFC 9110 13.1.2). */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t.replace(/^W\//, '') === etag;
  });
}

export interface ApiDeps {
  config: Pick<Config, 'maxUploadBytes' | 'longPollMaxSeconds' | 'searchEmbedTimeoutSeconds' | 'uploads' | 'http' | 'security' | 'parser' | 'embedder' | 'pricing'>;
  jwt: JwtSettings;
  /** JWT_JWKS_URL: ES256/RS256 user tokens by kid, beside (or instead of) the HS256 secret. */
  jwksUrl?: string;
  logger: Logger;
  ctx: CommandContext;
  storage: Storage;
  /** Embeds search queries, as the worker embeds chunks. */
  embedder: Embedder;
  /** Where the embeddings are (runtime.vectors). */
  vectors: VectorStore;
  /** Key of the fs storage's signed upload URLs (PUT /v1/storage/upload); see runtime.uploadSigningKey. */
  uploadSigningKey: Buffer;
  /** Extra readiness checks (the queue, for one). */
  readiness?: ReadinessCheck[];
}

export interface ApiApp {
  app: App;
  waiter: StatusWaiter;
  /** The status rows GET /v1/documents/:id answers from (emptied whenever the waiter's LISTEN drops). */
  statusCache: StatusCache;
  /** The api's audit log writer (flush() writes the aggregated rows now). */
  audit: Audit;
  /** Every route registered, one entry per method. */
  routes: { method: string; url: string }[];
}

export async function buildApiApp(deps: ApiDeps): Promise<ApiApp> {
  const app = createHttpApp({ service: 'api', logger: deps.logger, maxConnections: deps.config.http.maxConnections });
  const guard = createUploadGuard({
    perUser: deps.config.http.uploadConcurrencyPerUser,
    max: deps.config.http.uploadConcurrencyMax,
    minBytesPerSecond: deps.config.http.uploadMinBytesPerSecond,
  });
  app.addHook('onClose', async () => guard.close());
  const statusCache = new StatusCache();
  const waiter = new StatusWaiter(deps.ctx.sql, deps.logger, statusCache);
  await waiter.start();
  app.addHook('preClose', () => waiter.close());
  // Nothing the api answers may be stored unless its route says so (docs/CACHING.md): every
  // answer carries a user's data, a credential (signed upload URLs) or a state that changes.
  // The status route (private, no-cache, ETag) and the OpenAPI document (public) say otherwise.
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    done(null, payload);
  });

  await registerEdgeSecurity(app, { corsOrigins: deps.config.http.corsOrigins ?? [] });
  // The OpenAPI document, generated from the route schemas (GET /openapi.json, public). Every /v1
  // route may also answer what the edge decides before it runs: 401 (authentication), 403 (role,
  // blocked address) and 429 (budgets); they are added to each route's responses here, so that
  // the document (and the serializer) cannot forget them.
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'docpipe API', version: API_VERSION, description: 'Document ingestion: upload, parse, chunk, embed. Errors are {"error": {"code", "message", "requestId"}}.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT (Supabase Auth)' } } },
      security: [{ bearer: [] }],
    },
    hideUntagged: false,
  });
  const routes: ApiApp['routes'] = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) routes.push({ method, url: route.url });
    if (!route.url.startsWith('/v1/') || !route.schema) return;
    const responses = (route.schema.response ??= {}) as Record<string, unknown>;
    for (const status of [401, 403, 429]) responses[status] ??= ErrorBody;
  });
  // The same for everyone and changed only by a deploy: cacheable by anyone for an hour, then
  // revalidated by its ETag (a hash of the document), so a deploy's new routes reach clients
  // within the hour and an unchanged document costs a 304. Built once, at the first request
  // (every route is registered by then).
  let openapi: { body: string; etag: string } | null = null;
  app.get('/openapi.json', { schema: { hide: true } }, async (request, reply) => {
    if (!openapi) {
      const body = JSON.stringify(app.swagger());
      openapi = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
    }
    reply.header('etag', openapi.etag).header('cache-control', OPENAPI_CACHE_CONTROL);
    if (etagMatches(request.headers['if-none-match'], openapi.etag)) return reply.status(304).send();
    return reply.type('application/json; charset=utf-8').send(openapi.body);
  });
  await app.register(multipart, { limits: { fileSize: deps.config.maxUploadBytes } });

  const jwks = deps.jwksUrl ? createJwksCache({ url: deps.jwksUrl, logger: deps.logger }) : null;
  if (jwks) {
    app.addHook('onClose', async () => jwks.close());
    // Before the first request, without blocking start-up on an outage: a set that cannot be
    // fetched now is fetched again on the first unknown kid.
    if (await jwks.refresh()) deps.logger.info({ jwks: deps.jwksUrl, keys: jwks.state().keys }, 'JWKS loaded');
  }
  const verify = createAuthVerifier({ ...deps.jwt, jwks });
  app.decorateRequest('principal', null);
  await app.register(rateLimit, { global: false });
  const limits = createLimits(app, deps.config.http.rateLimits);
  const trustProxy = deps.config.http.trustProxy;
  const audit = createAudit({ sql: deps.ctx.sql, logger: deps.logger });
  app.addHook('onClose', async () => audit.close());
  const threats = createThreats({ settings: deps.config.security.threats, audit, logger: deps.logger });
  const contextOf = (request: FastifyRequest): RequestContext => ({
    clientAddress: clientAddress(request, trustProxy),
    userAgent: request.headers['user-agent'] ?? null,
    requestId: request.id,
  });

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    // Health checks (Fly's, every few seconds) and preflights (no credentials; with CORS_ORIGINS
    // the CORS plugin answers them) are not counted.
    if (request.method === 'OPTIONS' || request.url === '/healthz' || request.url === '/readyz') return;
    const context = contextOf(request);
    const address = context.clientAddress;
    // The access line says who sent the request (Fly-Client-IP behind Fly's proxy); a field, not a
    // child logger per request (services/http.ts writes it).
    request.clientAddress = address;
    const blocked = threats.blockedUntil(address);
    if (blocked !== null) {
      const seconds = String(Math.max(1, Math.ceil((blocked - Date.now()) / 1000)));
      authFailures.inc({ reason: 'blocked' });
      throw new HttpError(403, 'ADDRESS_BLOCKED', `this address is blocked after repeated authentication failures; retry in ${seconds} s`, { 'retry-after': seconds });
    }
    // The address's budget first: a flood of bad tokens or scans costs no verification.
    try {
      await limits.address(request, address);
    } catch (err) {
      audit.aggregate({ actor: `address:${address}`, action: 'ratelimit.address', outcome: 'refused', clientAddress: address, userAgent: context.userAgent });
      throw err;
    }
    // Routes marked public (the fs upload route) authenticate by their own signed token instead,
    // like Supabase's signed upload URLs.
    // By the route matched, not the raw URL (`/%761/...` and absolute-form targets reach /v1 routes too).
    if (!request.routeOptions.url?.startsWith('/v1/') || (request.routeOptions.config as { public?: boolean }).public === true) return;
    const header = request.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    try {
      if (!match) throw new AuthError('AUTH_MISSING_TOKEN', 'an Authorization: Bearer <jwt> header is required');
      request.principal = await verify(match[1]!);
    } catch (err) {
      if (err instanceof AuthError) {
        audit.aggregate({ actor: `address:${address}`, action: 'auth.denied', outcome: 'denied', clientAddress: address, userAgent: context.userAgent, details: { code: err.code } });
        // A missing token costs nothing to check; a presented one that fails counts toward a block.
        if (err.code !== 'AUTH_MISSING_TOKEN') threats.authFailed(context);
        authFailures.inc({ reason: err.code === 'AUTH_MISSING_TOKEN' ? 'missing' : err.code === 'AUTH_TOKEN_EXPIRED' ? 'expired' : 'invalid' });
        throw new HttpError(401, err.code, err.message, { 'www-authenticate': 'Bearer' });
      }
      throw err;
    }
    const principal = request.principal;
    // Supabase's roles: `authenticated` users act on their own documents, `service_role` is the
    // backend's own key; `anon` (a signed-out client) and anything else may do nothing here.
    if (!ALLOWED_ROLES.has(principal.role ?? '')) {
      audit.aggregate({ actor: `user:${principal.sub}`, role: principal.role, action: 'auth.forbidden_role', outcome: 'denied', clientAddress: address, userAgent: context.userAgent });
      authFailures.inc({ reason: 'forbidden_role' });
      throw new HttpError(403, 'AUTH_FORBIDDEN_ROLE', `the token's role ${JSON.stringify(principal.role)} may not use this API (authenticated or service_role only)`);
    }
    try {
      await limits.user(request, reply, principal.sub, budgetOf(request));
    } catch (err) {
      audit.aggregate({ actor: `user:${principal.sub}`, role: principal.role, action: `ratelimit.${budgetOf(request)}`, outcome: 'refused', clientAddress: address, userAgent: context.userAgent });
      throw err;
    }
  });

  // What is recorded one row each: deletes, reprocess, and everything the service role does.
  app.addHook('onResponse', async (request, reply) => {
    const principal = request.principal;
    if (!principal) return;
    const route = request.routeOptions.url ?? '';
    const action =
      request.method === 'DELETE' && route === '/v1/documents/:id' ? 'document.delete'
        : request.method === 'POST' && route === '/v1/documents/:id/reprocess' ? 'document.reprocess'
          : principal.role === 'service_role' ? `service.${request.method} ${route || request.url.split('?')[0]}`
            : null;
    if (!action) return;
    const context = contextOf(request);
    // Successes one row each; refusals aggregated, so that a client repeating a refused request
    // cannot write a row per request.
    const write = reply.statusCode < 400 ? (e: AuditEntry) => void audit.record(e) : (e: AuditEntry) => audit.aggregate(e);
    write({
      actor: `user:${principal.sub}`,
      role: principal.role,
      action,
      target: (request.params as { id?: string } | undefined)?.id ?? null,
      outcome: reply.statusCode < 400 ? 'success' : reply.statusCode === 401 || reply.statusCode === 403 || reply.statusCode === 404 ? 'denied' : 'failed',
      clientAddress: context.clientAddress,
      userAgent: context.userAgent,
      requestId: request.id,
      details: { status: reply.statusCode },
    });
  });

  registerHealth(app, [
    { name: 'database', check: async () => void (await deps.ctx.sql`select 1`) },
    {
      name: 'migrations',
      check: async () => {
        if (!(await migrationsCurrent(deps.ctx.sql))) throw new Error('pending migrations: run `docpipe migrate`');
      },
    },
    ...(deps.readiness ?? []),
  ]);

  const principal = (request: unknown) => {
    const p = (request as FastifyRequest).principal;
    if (!p) throw new HttpError(401, 'AUTH_MISSING_TOKEN', 'authentication required');
    return p;
  };
  registerUploadRoutes(app, {
    ctx: deps.ctx,
    storage: deps.storage,
    directMaxBytes: deps.config.uploads.directMaxBytes,
    urlTtlSeconds: deps.config.uploads.urlTtlSeconds,
    principal,
  });
  if (deps.storage.kind === 'fs') {
    await app.register(async (scope) => registerFsUploadRoute(scope as never, { storage: deps.storage, tokens: createUploadTokens(deps.uploadSigningKey), guard }));
  }

  registerAdminRoutes(app, { sql: deps.ctx.sql, principal });
  registerUsageRoutes(app, { sql: deps.ctx.sql, cost: costSettings(deps.config), principal });
  registerSearchRoutes(app, {
    sql: deps.ctx.sql,
    embedder: deps.embedder,
    vectors: deps.vectors,
    embedTimeoutMs: deps.config.searchEmbedTimeoutSeconds * 1000,
    principal,
  });
  registerDocumentRoutes(app, {
    ctx: deps.ctx,
    storage: deps.storage,
    waiter,
    cache: statusCache,
    maxUploadBytes: deps.config.maxUploadBytes,
    longPollMaxSeconds: deps.config.longPollMaxSeconds,
    guard,
    principal,
    longPoll: limits.longPoll,
    foreignAccess: (request, id) => {
      const principal = (request as FastifyRequest).principal!;
      const context = contextOf(request as FastifyRequest);
      audit.aggregate({ actor: `user:${principal.sub}`, role: principal.role, action: 'document.foreign_access', outcome: 'denied', ...context, details: { lastTarget: id } });
      threats.foreignAccess(principal.sub, id, context);
    },
  });
  return { app, waiter, statusCache, audit, routes };
}
