// Security headers (helmet) and CORS for the public services, the api and the webhook.
//
// Every answer is JSON (or empty), never a page, so the headers are those of an API: nothing may
// frame, script or embed a response (CSP `default-src 'none'; frame-ancestors 'none'`), browsers
// must not sniff a type, send a referrer or load a response cross-origin without CORS, and HSTS
// holds clients to https for a year (TLS ends at Fly's edge, which sets it too: fly.*.toml).
// CORS is off unless CORS_ORIGINS lists origins: then only those, without credentials (the API
// takes bearer tokens, never cookies), exposing the headers a browser client needs to read.
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import type { App } from './http.ts';

export const HSTS_MAX_AGE_SECONDS = 365 * 24 * 3600;

/** Response headers a browser client may read (CORS): caching, creation, and back-off. */
export const EXPOSED_HEADERS = ['ETag', 'Location', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset', 'RateLimit-Policy', 'X-Request-Id'];

export async function registerEdgeSecurity(app: App, options: { corsOrigins: string[] }): Promise<void> {
  await app.register(helmet, {
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    strictTransportSecurity: { maxAge: HSTS_MAX_AGE_SECONDS, includeSubDomains: true },
    referrerPolicy: { policy: 'no-referrer' },
    frameguard: { action: 'deny' },
    crossOriginResourcePolicy: { policy: 'same-origin' },
    // Headers for HTML documents: meaningless on JSON, and noise in every answer.
    crossOriginEmbedderPolicy: false,
    crossOriginOpenerPolicy: false,
    originAgentCluster: false,
    xDnsPrefetchControl: false,
    xDownloadOptions: false,
    xPermittedCrossDomainPolicies: false,
    xXssProtection: false,
  });
  if (options.corsOrigins.length === 0) return;
  await app.register(cors, {
    origin: options.corsOrigins,
    credentials: false,
    methods: ['GET', 'POST', 'PUT', 'DELETE'],
    allowedHeaders: ['Authorization', 'Content-Type', 'Idempotency-Key', 'If-None-Match', 'X-Request-Id'],
    exposedHeaders: EXPOSED_HEADERS,
    maxAge: 600,
    strictPreflight: true,
  });
}
