// The API service: Fastify with multipart uploads, bearer-JWT auth on every /v1 route, the
// document routes and health, and bounds on what uploads may hold (upload-guard.ts).
// `buildApiApp` wires it from a runtime; tests call it directly.
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../../config.ts';
import { migrationsCurrent } from '../../db/migrate.ts';
import type { CommandContext } from '../../documents/commands.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Storage } from '../../providers/types.ts';
import { createJwksCache } from '../../security/jwks.ts';
import { AuthError, createAuthVerifier, type JwtSettings, type Principal } from '../../security/tokens.ts';
import { HttpError } from '../errors.ts';
import { registerEdgeSecurity } from '../edge-security.ts';
import { createHttpApp, registerHealth, type App, type ReadinessCheck } from '../http.ts';
import { registerDocumentRoutes } from './documents.ts';
import { budgetOf, clientAddress, createLimits } from './limits.ts';
import { StatusWaiter } from './status-waiter.ts';
import { registerFsUploadRoute } from './storage-upload.ts';
import { createUploadGuard } from './upload-guard.ts';
import { registerUploadRoutes } from './uploads.ts';
import { createUploadTokens } from '../../providers/storage/upload-token.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

const ALLOWED_ROLES = new Set(['authenticated', 'service_role']);

export interface ApiDeps {
  config: Pick<Config, 'maxUploadBytes' | 'longPollMaxSeconds' | 'uploads' | 'http'>;
  jwt: JwtSettings;
  /** JWT_JWKS_URL: ES256/RS256 user tokens by kid, beside (or instead of) the HS256 secret. */
  jwksUrl?: string;
  logger: Logger;
  ctx: CommandContext;
  storage: Storage;
  /** Key of the fs storage's signed upload URLs (PUT /v1/storage/upload); see runtime.uploadSigningKey. */
  uploadSigningKey: Buffer;
  /** Extra readiness checks (the queue, for one). */
  readiness?: ReadinessCheck[];
}

export interface ApiApp {
  app: App;
  waiter: StatusWaiter;
}

export async function buildApiApp(deps: ApiDeps): Promise<ApiApp> {
  const app = createHttpApp({ service: 'api', logger: deps.logger, maxConnections: deps.config.http.maxConnections });
  const guard = createUploadGuard({
    perUser: deps.config.http.uploadConcurrencyPerUser,
    max: deps.config.http.uploadConcurrencyMax,
    minBytesPerSecond: deps.config.http.uploadMinBytesPerSecond,
  });
  app.addHook('onClose', async () => guard.close());
  const waiter = new StatusWaiter(deps.ctx.sql, deps.logger);
  await waiter.start();
  app.addHook('preClose', () => waiter.close());

  await registerEdgeSecurity(app, { corsOrigins: deps.config.http.corsOrigins ?? [] });
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
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    // Health checks (Fly's, every few seconds) and preflights (no credentials; with CORS_ORIGINS
    // the CORS plugin answers them) are not counted.
    if (request.method === 'OPTIONS' || request.url === '/healthz' || request.url === '/readyz') return;
    // The address's budget first: a flood of bad tokens or scans costs no verification.
    await limits.address(request, clientAddress(request, trustProxy));
    // Routes marked public (the fs upload route) authenticate by their own signed token instead,
    // like Supabase's signed upload URLs.
    if (!request.url.startsWith('/v1/') || (request.routeOptions.config as { public?: boolean }).public === true) return;
    const header = request.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    try {
      if (!match) throw new AuthError('AUTH_MISSING_TOKEN', 'an Authorization: Bearer <jwt> header is required');
      request.principal = await verify(match[1]!);
    } catch (err) {
      if (err instanceof AuthError) throw new HttpError(401, err.code, err.message, { 'www-authenticate': 'Bearer' });
      throw err;
    }
    // Supabase's roles: `authenticated` users act on their own documents, `service_role` is the
    // backend's own key; `anon` (a signed-out client) and anything else may do nothing here.
    if (!ALLOWED_ROLES.has(request.principal.role ?? '')) {
      throw new HttpError(403, 'AUTH_FORBIDDEN_ROLE', `the token's role ${JSON.stringify(request.principal.role)} may not use this API (authenticated or service_role only)`);
    }
    await limits.user(request, reply, request.principal.sub, budgetOf(request));
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

  registerDocumentRoutes(app, {
    ctx: deps.ctx,
    storage: deps.storage,
    waiter,
    maxUploadBytes: deps.config.maxUploadBytes,
    longPollMaxSeconds: deps.config.longPollMaxSeconds,
    guard,
    principal,
    longPoll: limits.longPoll,
  });
  return { app, waiter };
}
