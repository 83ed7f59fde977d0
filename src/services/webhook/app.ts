// The webhook service: parser callbacks arrive here (the LlamaParse routes come with the
// LlamaParse adapter). It verifies, de-duplicates, appends and enqueues; it never fetches or
// parses on the request path.
import type { Sql } from '../../db/client.ts';
import type { Logger } from '../../observability/logger.ts';
import { createHttpApp, registerHealth, type App, type ReadinessCheck } from '../http.ts';

export interface WebhookDeps {
  sql: Sql;
  logger: Logger;
  readiness?: ReadinessCheck[];
}

export function buildWebhookApp(deps: WebhookDeps): App {
  const app = createHttpApp({ service: 'webhook', logger: deps.logger, bodyLimit: 10 * 1024 * 1024 });
  registerHealth(app, [{ name: 'database', check: async () => void (await deps.sql`select 1`) }, ...(deps.readiness ?? [])]);
  return app;
}
