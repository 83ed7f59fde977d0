// The webhook service: parser callbacks arrive here. It verifies, de-duplicates, appends and
// enqueues; it never fetches or parses on the request path.
import type { Config } from '../../config.ts';
import type { CommandContext } from '../../documents/commands.ts';
import type { Logger } from '../../observability/logger.ts';
import { registerEdgeSecurity } from '../edge-security.ts';
import { createHttpApp, registerHealth, type App, type ReadinessCheck } from '../http.ts';
import { registerLlamaParseWebhook } from './llamaparse.ts';

export interface WebhookDeps {
  ctx: CommandContext;
  /** `http` is optional for tests that build a second webhook app from a partial config. */
  config: Pick<Config, 'webhook'> & Partial<Pick<Config, 'http'>>;
  logger: Logger;
  readiness?: ReadinessCheck[];
  /**
   * Will deliveries arrive? True (the default) for the webhook service on its own, which exists
   * for them whatever its own DOCPIPE_PARSER says (the worker's decides); false only for
   * `docpipe all` on the local parser, which never calls back.
   */
  expectsDeliveries?: boolean;
}

export async function buildWebhookApp(deps: WebhookDeps): Promise<App> {
  // Legacy result payloads carry the whole document's text: allow them, bounded.
  const app = createHttpApp({ service: 'webhook', logger: deps.logger, bodyLimit: 10 * 1024 * 1024, maxConnections: deps.config.http?.maxConnections });
  // Headers only: LlamaCloud calls from a server, so no browser origin is ever allowed (no CORS).
  await registerEdgeSecurity(app, { corsOrigins: [] });
  registerHealth(app, [{ name: 'database', check: async () => void (await deps.ctx.sql`select 1`) }, ...(deps.readiness ?? [])]);
  const { secret, llamaparseSigningSecret } = deps.config.webhook;
  // Warning about a secret that nothing would use would only teach people to ignore warnings.
  if ((deps.expectsDeliveries ?? true) && !secret && !llamaparseSigningSecret) {
    deps.logger.warn('neither WEBHOOK_SECRET nor LLAMAPARSE_WEBHOOK_SIGNING_SECRET is set: every webhook delivery will be refused and parses finish by polling only, later: set WEBHOOK_SECRET to the worker\'s value');
  }
  registerLlamaParseWebhook(app, { ctx: deps.ctx, secret, signingSecret: llamaparseSigningSecret });
  return app;
}
