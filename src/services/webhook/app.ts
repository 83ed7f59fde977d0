// The webhook service: parser callbacks arrive here. It verifies, de-duplicates, appends and
// enqueues; it never fetches or parses on the request path.
import type { Config } from '../../config.ts';
import type { CommandContext } from '../../documents/commands.ts';
import type { Logger } from '../../observability/logger.ts';
import { createAudit } from '../../security/audit.ts';
import { createThreats, type ThreatSettings } from '../../security/threats.ts';
import { clientAddress } from '../api/limits.ts';
import { registerEdgeSecurity } from '../edge-security.ts';
import { HttpError } from '../errors.ts';
import { createHttpApp, registerHealth, type App, type ReadinessCheck } from '../http.ts';
import { registerLlamaParseWebhook } from './llamaparse.ts';

/** The defaults of config.ts, for a webhook app built from a partial config. */
const DEFAULT_THREATS: ThreatSettings = { authFailuresToBlock: 50, blockSeconds: 900, foreignIdsToFlag: 20, forgedWebhooksToFlag: 20, webhookFailuresPerAddress: 30 };

export interface WebhookDeps {
  ctx: CommandContext;
  /** `http` and `security` are optional for tests that build a second webhook app from a partial config. */
  config: Pick<Config, 'webhook'> & Partial<Pick<Config, 'http' | 'security'>>;
  logger: Logger;
  readiness?: ReadinessCheck[];
  /**
   * Will deliveries arrive? True (the default) for the webhook service on its own, which exists
   * for them whatever its own DOCPIPE_PARSER says (the worker's decides); false only for
   * `docpipe all` on the local parser, which never calls back.
   */
  expectsDeliveries?: boolean;
}

/** Largest webhook body accepted (413 beyond). */
export const WEBHOOK_BODY_LIMIT = 64 * 1024;

export async function buildWebhookApp(deps: WebhookDeps): Promise<App> {
  // A delivery names its job and nothing more (about 200 bytes): 64 KiB is ample, and a sender
  // with a valid credential still cannot make the service buffer more.
  const app = createHttpApp({ service: 'webhook', logger: deps.logger, bodyLimit: WEBHOOK_BODY_LIMIT, maxConnections: deps.config.http?.maxConnections });
  // Headers only: LlamaCloud calls from a server, so no browser origin is ever allowed (no CORS).
  await registerEdgeSecurity(app, { corsOrigins: [] });
  registerHealth(app, [{ name: 'database', check: async () => void (await deps.ctx.sql`select 1`) }, ...(deps.readiness ?? [])]);
  const { secret, llamaparseSigningSecret } = deps.config.webhook;
  // Warning about a secret that nothing would use would only teach people to ignore warnings.
  if ((deps.expectsDeliveries ?? true) && !secret && !llamaparseSigningSecret) {
    deps.logger.warn('neither WEBHOOK_SECRET nor LLAMAPARSE_WEBHOOK_SIGNING_SECRET is set: every webhook delivery will be refused and parses finish by polling only, later: set WEBHOOK_SECRET to the worker\'s value');
  }
  const audit = createAudit({ sql: deps.ctx.sql, logger: deps.logger });
  app.addHook('onClose', async () => audit.close());
  const threats = createThreats({ settings: deps.config.security?.threats ?? DEFAULT_THREATS, audit, logger: deps.logger });
  const trustProxy = deps.config.http?.trustProxy ?? 'none';
  // Per address, only what fails authentication is counted: an address past
  // WEBHOOK_FAILURES_PER_ADDRESS failures this minute is refused before anything is read, while
  // LlamaCloud, whose deliveries authenticate, is never limited (docs/SECURITY.md).
  app.addHook('onRequest', async (request) => {
    if (!request.routeOptions.url?.startsWith('/v1/webhooks/')) return;
    const address = clientAddress(request, trustProxy);
    if (threats.webhookLimited(address)) {
      audit.aggregate({ actor: `address:${address}`, action: 'ratelimit.webhook', outcome: 'refused', clientAddress: address, userAgent: request.headers['user-agent'] ?? null });
      throw new HttpError(429, 'RATE_LIMITED', 'too many webhook deliveries from this address failed authentication; retry in 60 s', { 'retry-after': '60' });
    }
  });
  registerLlamaParseWebhook(app, {
    ctx: deps.ctx,
    secret,
    signingSecret: llamaparseSigningSecret,
    onRejected: (request, reason) => {
      const address = clientAddress(request, trustProxy);
      audit.aggregate({ actor: `address:${address}`, action: 'webhook.auth_failed', outcome: 'denied', clientAddress: address, userAgent: request.headers['user-agent'] ?? null, details: { reason } });
      threats.webhookForged({ clientAddress: address, userAgent: request.headers['user-agent'] ?? null, requestId: request.id });
    },
  });
  return app;
}
