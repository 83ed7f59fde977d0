// The webhook service: parser callbacks arrive here. It verifies, de-duplicates, appends and
// enqueues; it never fetches or parses on the request path.
import type { Config } from '../../config.ts';
import type { CommandContext } from '../../documents/commands.ts';
import type { Logger } from '../../observability/logger.ts';
import { createHttpApp, registerHealth, type App, type ReadinessCheck } from '../http.ts';
import { registerLlamaParseWebhook } from './llamaparse.ts';

export interface WebhookDeps {
  ctx: CommandContext;
  /**
   * `http` and `parser` are optional for tests that build a second webhook app from a partial
   * config; without `parser`, the app assumes a parser that uses webhooks.
   */
  config: Pick<Config, 'webhook'> & Partial<Pick<Config, 'http' | 'parser'>>;
  logger: Logger;
  readiness?: ReadinessCheck[];
}

export function buildWebhookApp(deps: WebhookDeps): App {
  // Legacy result payloads carry the whole document's text: allow them, bounded.
  const app = createHttpApp({ service: 'webhook', logger: deps.logger, bodyLimit: 10 * 1024 * 1024, maxConnections: deps.config.http?.maxConnections });
  registerHealth(app, [{ name: 'database', check: async () => void (await deps.ctx.sql`select 1`) }, ...(deps.readiness ?? [])]);
  const { secret, llamaparseSigningSecret } = deps.config.webhook;
  // Only a parser that calls back (LlamaParse) sends anything here; the local parser never does,
  // and warning about a secret it cannot use would only teach people to ignore warnings.
  const parserUsesWebhooks = deps.config.parser === undefined || deps.config.parser.kind === 'llamaparse';
  if (parserUsesWebhooks && !secret && !llamaparseSigningSecret) {
    deps.logger.warn('neither WEBHOOK_SECRET nor LLAMAPARSE_WEBHOOK_SIGNING_SECRET is set: every webhook delivery will be refused and parses finish by polling only, later: set WEBHOOK_SECRET to the worker\'s value');
  }
  registerLlamaParseWebhook(app, { ctx: deps.ctx, secret, signingSecret: llamaparseSigningSecret });
  return app;
}
