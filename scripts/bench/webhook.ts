// The webhook phase's server side: documents for the deliveries to act on, the bare Fastify
// baseline that takes the same request (in a process of its own, like the webhook it stands
// beside: `docpipe webhook` is started by ./service-process.ts), and the clean-up that keeps the
// seeded documents out of the later phases. The client side is scripts/bench/paced.ts.
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Sql } from '../../src/db/client.ts';
import { executeIn, type CommandContext } from '../../src/documents/commands.ts';
import { webhookCredential } from '../../src/security/webhook-auth.ts';
import type { WebhookTarget } from './paced.ts';
import { pinProcess } from './service-process.ts';

export const WEBHOOK_OWNER = 'bench-webhook';

/**
 * `count` documents that LlamaParse is working on (uploaded, parse started, submitted with
 * webhooks), through the real command handler: the same three commands as the webhook
 * integration test's `parsingDocument()`, here in one transaction per document. `concurrency`
 * documents are in flight at once. The worker must not be running: the upload enqueues a parse job.
 */
export async function seedParsingDocuments(
  ctx: CommandContext,
  secret: string,
  count: number,
  concurrency: number,
  progress: (done: number) => void,
): Promise<WebhookTarget[]> {
  const meta = { correlationId: randomUUID(), causationId: null, actor: 'bench', requestId: null };
  const targets: WebhookTarget[] = Array.from({ length: count }, () => {
    const documentId = randomUUID();
    return { documentId, jobId: randomUUID(), token: webhookCredential(secret, 'llamaparse', documentId, 1) };
  });
  let next = 0;
  let done = 0;
  let lastReport = Date.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < targets.length) {
        const { documentId: id, jobId } = targets[next++]!;
        await ctx.sql.begin(async (tx) => {
          await executeIn(tx, ctx, id, { type: 'Upload', ownerId: WEBHOOK_OWNER, fileName: 'a.pdf', mediaType: 'application/pdf', size: 10, sha256: 'ab'.repeat(32), storageKey: `documents/${id}/original`, idempotencyKey: null }, meta);
          await executeIn(tx, ctx, id, { type: 'StartParse', run: 1, parser: 'llamaparse' }, meta);
          await executeIn(tx, ctx, id, { type: 'SubmitParse', run: 1, parser: 'llamaparse', providerJobId: jobId, webhook: true, pollAfterSeconds: 3600, deadline: new Date(Date.now() + 3600_000).toISOString() }, meta);
        });
        done++;
        if (Date.now() - lastReport >= 2000) {
          lastReport = Date.now();
          progress(done);
        }
      }
    }),
  );
  return targets;
}

/** ParserCallbackReceived events appended to the seeded documents, and how many documents hold one. */
export async function countCallbacks(sql: Sql): Promise<{ events: number; documents: number }> {
  const [row] = await sql<{ events: number; documents: number }[]>`
    select count(*)::int as events, count(distinct e.stream_id)::int as documents
    from docpipe.events e
    join docpipe.document_status d on d.id = e.stream_id and d.owner_id = ${WEBHOOK_OWNER}
    where e.type = 'ParserCallbackReceived'`;
  return row ?? { events: 0, documents: 0 };
}

/**
 * Deletes the pg-boss jobs of the seeded documents (the parse job of each upload, the polling
 * backstop of each submit, the result job of each callback), so the worker started later never
 * runs them. The documents themselves stay, parked in `parsing`.
 */
export async function deleteSeededJobs(sql: Sql): Promise<number> {
  const rows = await sql`
    delete from pgboss.job j
    using docpipe.document_status d
    where d.owner_id = ${WEBHOOK_OWNER} and j.data->>'documentId' = d.id::text
    returning 1`;
  return rows.length;
}

/**
 * The baseline: a bare Fastify app with the webhook's route shape that parses the same JSON body
 * (Fastify's default parser) and answers `{"outcome":"appended"}`, with no auth and no database.
 */
export async function startWebhookBaseline(): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false });
  app.post<{ Params: { documentId: string }; Body: { event_id?: string } }>('/v1/webhooks/llamaparse/:documentId', async (request) => {
    if (typeof request.body?.event_id !== 'string') return { outcome: 'bad-body' };
    return { outcome: 'appended' };
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, url };
}

const SELF = fileURLToPath(import.meta.url);

/** The baseline in a child process (pinned to `cpu` where given), as the webhook runs in one. */
export function startWebhookBaselineProcess(cpu: number | null, timeoutMs = 30_000): Promise<{ pid: number; url: string; stop(): Promise<void> }> {
  return new Promise((resolve, reject) => {
    const child = fork(SELF, ['--serve-baseline'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    if (cpu !== null && child.pid) pinProcess(child.pid, cpu);
    const timer = setTimeout(() => (child.kill('SIGKILL'), reject(new Error('the webhook baseline did not start'))), timeoutMs);
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.once('exit', (code, signal) => (clearTimeout(timer), reject(new Error(`the webhook baseline exited (${code ?? signal})`))));
    child.once('message', (message: { url: string }) => {
      clearTimeout(timer);
      resolve({
        pid: child.pid!,
        url: message.url,
        async stop() {
          child.kill('SIGTERM');
          const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await exited;
          clearTimeout(kill);
        },
      });
    });
  });
}

if (process.argv[2] === '--serve-baseline' && process.send && path.resolve(process.argv[1] ?? '') === SELF) {
  const { app, url } = await startWebhookBaseline();
  process.send({ url });
  const stop = () => void app.close().finally(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('disconnect', stop);
}
