// POST /v1/webhooks/llamaparse/:documentId. LlamaCloud calls it when a parse job ends. The
// handler authenticates, de-duplicates by event id and appends ParserCallbackReceived (which
// enqueues the job that fetches the result), all in one transaction. It never fetches or parses
// here: a delivery costs a few statements, and the provider's 30 s timeout is never near.
//
// Payload: the event `{event_id, event_type, timestamp, data: {id, job_id}}`, as a JSON object or
// JSON-encoded into a string (webhook_output_format "string", LlamaCloud's default). It names
// only the job: the result is fetched by the worker, never taken from a request.
import { createHash } from 'node:crypto';
import { executeBatchIn, type CommandContext } from '../../documents/commands.ts';
import { observeCommitted } from '../../observability/pipeline-metrics.ts';
import type { EventMetadata } from '../../events/catalog.ts';
import { createBatcher } from '../../util/batcher.ts';
import { ConcurrencyError } from '../../events/store.ts';
import { webhookAuthFailures, webhookDeliveries, webhookHandling } from '../../observability/metrics.ts';
import { WEBHOOK_TOKEN_HEADER, verifyLcSignature, verifyWebhookCredential } from '../../security/webhook-auth.ts';
import { HttpError, notFound } from '../errors.ts';
import type { FastifyRequest } from 'fastify';
import { jsonDepth, MAX_JSON_DEPTH, type App } from '../http.ts';
import { invalidText } from '../text.ts';

const PROVIDER = 'llamaparse';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** The events that end a job; parse.pending / parse.running carry nothing to act on. */
const TERMINAL_EVENTS = new Set(['parse.success', 'parse.error', 'parse.partial_success', 'parse.cancelled']);

export interface LlamaParseWebhookOptions {
  ctx: CommandContext;
  /** WEBHOOK_SECRET: verifies the per-document credential. */
  secret: string | undefined;
  /** LLAMAPARSE_WEBHOOK_SIGNING_SECRET: when set, event deliveries must carry a valid LC-Signature. */
  signingSecret: string | undefined;
  /** A delivery refused for its authentication (audit, threat detection). */
  onRejected?(request: FastifyRequest, reason: string): void;
}

type Delivery = { eventId: string; eventType: string; jobId: string | null } & {
  /** A value that would be stored but that Postgres cannot hold; refused once the sender is authenticated. */
  invalidText?: HttpError;
};

declare module 'fastify' {
  interface FastifyRequest {
    rawBody?: Buffer;
    /** The verified per-document credential of a webhook delivery (set before the body is read). */
    webhookCredential?: { run: number } | null;
  }
}

function str(value: unknown, max = 200): string | null {
  return typeof value === 'string' && value.length > 0 && value.length <= max ? value : null;
}

/** Reads an event delivery; anything else is a 400. */
function readDelivery(body: unknown, raw: Buffer, headerEventId: string | undefined, documentId: string): Delivery {
  let payload = body;
  if (typeof payload === 'string') {
    try {
      payload = JSON.parse(payload);
    } catch {
      throw new HttpError(400, 'INVALID_WEBHOOK_PAYLOAD', 'the body is a string that is not JSON');
    }
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new HttpError(400, 'INVALID_WEBHOOK_PAYLOAD', 'the body must be a JSON object (or a JSON-encoded one)');
  }
  const p = payload as Record<string, unknown>;
  // Without an event id (a sender that leaves it out) the document and the body's hash identify
  // the delivery (two documents' identical bodies are different deliveries). Hashed only then.
  const bodyHash = () => `sha256:${createHash('sha256').update(documentId.toLowerCase()).update('\n').update(raw).digest('hex')}`;
  if (typeof p.event_type === 'string') {
    const data = (p.data ?? {}) as Record<string, unknown>;
    const eventType = str(p.event_type, 64);
    if (!eventType) throw new HttpError(400, 'INVALID_WEBHOOK_PAYLOAD', 'event_type must be a short string');
    // These end up in webhook_deliveries and in the event's jsonb, where a NUL or an unpaired
    // surrogate would fail the transaction with a 500.
    const stored: [string, unknown][] = [['X-Webhook-Event-Id', headerEventId], ['event_id', p.event_id], ['event_type', eventType], ['data.job_id', data.job_id], ['data.id', data.id]];
    const bad = stored.map(([field, value]) => invalidText(field, value)).find((e) => e !== null);
    return {
      eventId: str(headerEventId) ?? str(p.event_id) ?? bodyHash(),
      eventType,
      jobId: str(data.job_id) ?? str(data.id),
      ...(bad ? { invalidText: bad } : {}),
    };
  }
  throw new HttpError(400, 'INVALID_WEBHOOK_PAYLOAD', 'expected a LlamaParse event {event_id, event_type, data}');
}

interface PendingDelivery {
  documentId: string;
  delivery: Delivery;
  run: number | null;
  metadata: EventMetadata;
}

type Recorded =
  | { outcome: 'appended' | 'duplicate' | 'unknown_document' | 'busy' }
  | { outcome: 'ignored' | 'early'; reason: string };

/**
 * Records deliveries in batches (see util/batcher.ts): per batch one transaction claims every
 * event id in webhook_deliveries (a redelivery finds its id taken and appends nothing), runs
 * the claimed commands with executeBatchIn, and forgets the claims of unknown documents and of
 * deliveries that came too early (so their redelivery is not a duplicate). A concurrent append
 * by a worker aborts a batch; its deliveries are then recorded one by one, retried briefly.
 */
function createDeliveryRecorder(ctx: CommandContext) {
  async function once(items: PendingDelivery[]): Promise<Recorded[]> {
    // Copies of one event id within the batch: the first one stands for all.
    const first = new Map<string, number>();
    items.forEach((it, i) => first.has(it.delivery.eventId) || first.set(it.delivery.eventId, i));
    const unique = [...first.values()].map((i) => items[i]!);
    const results = await ctx.sql.begin(async (tx) => {
      // The claim goes out with executeBatchIn's reads (one round trip); only claimed deliveries run.
      const claim = tx<{ event_id: string }[]>`
        insert into docpipe.webhook_deliveries ${tx(
          unique.map((u) => ({
            provider: PROVIDER,
            event_id: u.delivery.eventId,
            document_id: u.documentId,
            provider_job_id: u.delivery.jobId,
            event_type: u.delivery.eventType,
            outcome: 'appended',
          })) as never,
          'provider', 'event_id', 'document_id', 'provider_job_id', 'event_type', 'outcome',
        )}
        on conflict do nothing returning event_id`.then((rows) => {
        const claimed = new Set(rows.map((r) => r.event_id));
        return unique.map((u) => claimed.has(u.delivery.eventId));
      });
      const byEvent = new Map<string, Recorded>();
      const outcomes = await executeBatchIn(
        tx,
        ctx,
        unique.map((u) => ({
          documentId: u.documentId,
          command: { type: 'RecordParserCallback', providerJobId: u.delivery.jobId, run: u.run, eventId: u.delivery.eventId, eventType: u.delivery.eventType },
          metadata: u.metadata,
        })),
        {
          include: claim,
          // Forget the claims of deliveries that were not kept, and mark the ignored ones, in
          // the same round trip as the projection and the jobs.
          afterDecide: (all) => {
            const forget: string[] = [];
            const ignored: string[] = [];
            all.forEach((o, i) => {
              if (o === null || o.ok) return;
              const id = unique[i]!.delivery.eventId;
              if (o.error.code === 'DOCUMENT_NOT_FOUND') {
                forget.push(id);
                byEvent.set(id, { outcome: 'unknown_document' });
              } else if (o.error.code === 'PROVIDER_JOB_NOT_RECORDED') {
                forget.push(id);
                byEvent.set(id, { outcome: 'early', reason: o.error.message });
              } else {
                ignored.push(id);
                byEvent.set(id, { outcome: 'ignored', reason: o.error.message });
              }
            });
            return Promise.all([
              forget.length > 0 ? tx`delete from docpipe.webhook_deliveries where provider = ${PROVIDER} and event_id = any(${forget})` : undefined,
              ignored.length > 0 ? tx`update docpipe.webhook_deliveries set outcome = 'ignored' where provider = ${PROVIDER} and event_id = any(${ignored})` : undefined,
            ]);
          },
        },
      );
      outcomes.forEach((o, i) => {
        if (o?.ok) {
          observeCommitted(o.events);
          byEvent.set(unique[i]!.delivery.eventId, { outcome: 'appended' });
        }
      });
      return byEvent;
    });
    return items.map((it, i) => {
      const r = results.get(it.delivery.eventId) ?? { outcome: 'duplicate' as const };
      // A later copy within the batch is a duplicate of a claimed delivery (appended or ignored);
      // a delivery that was not kept (unknown document, too early) gives its copies its answer.
      const kept = r.outcome === 'appended' || r.outcome === 'ignored';
      return first.get(it.delivery.eventId) !== i && kept ? { outcome: 'duplicate' as const } : r;
    });
  }

  const recordBatch = async (items: PendingDelivery[]): Promise<Recorded[]> => {
    try {
      return await once(items);
    } catch (err) {
      if (!(err instanceof ConcurrencyError)) throw err;
    }
    const results: Recorded[] = [];
    for (const item of items) {
      let recorded: Recorded = { outcome: 'busy' };
      for (let attempt = 1; attempt <= 4; attempt++) {
        try {
          recorded = (await once([item]))[0]!;
          break;
        } catch (err) {
          if (!(err instanceof ConcurrencyError)) throw err;
        }
      }
      results.push(recorded);
    }
    return results;
  };
  // One batch at a time per process: under load the batches grow, and CPU per delivery falls
  // (measured: 4 parallel batchers over shares of the documents made smaller batches and cost
  // 40 % more CPU per delivery for no better p99 on 2 cores).
  return createBatcher(recordBatch, { maxBatch: 64 });
}

export function registerLlamaParseWebhook(app: App, options: LlamaParseWebhookOptions): void {
  const { ctx } = options;
  const recorder = createDeliveryRecorder(ctx);

  // Keep the raw bytes: LC-Signature is an HMAC over exactly what was sent.
  // JSON only: LlamaCloud sends application/json, and only that parser keeps the raw bytes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    request.rawBody = body as Buffer;
    let value: unknown;
    try {
      value = JSON.parse((body as Buffer).toString('utf8'));
    } catch {
      return done(new HttpError(400, 'INVALID_JSON', 'the body is not valid JSON'), undefined);
    }
    if (jsonDepth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH) return done(new HttpError(400, 'JSON_TOO_DEEP', `the JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`), undefined);
    done(null, value);
  });

  function reject(request: FastifyRequest, documentId: string, reason: 'missing' | 'bad_credential' | 'bad_signature' | 'missing_signature'): never {
    webhookAuthFailures.inc({ provider: PROVIDER, reason });
    options.onRejected?.(request, reason);
    webhookDeliveries.inc({ provider: PROVIDER, outcome: 'rejected' });
    request.log.warn({ documentId, reason, ip: request.ip }, 'webhook rejected: authentication failed');
    throw new HttpError(401, 'WEBHOOK_UNAUTHORIZED', 'the webhook credential or signature is missing or invalid');
  }

  /**
   * Counts a delivery and how long it took: from its arrival (Fastify's request start) to now,
   * which for an appended one is after its event committed (the recorder answers after the
   * commit of its batch).
   */
  function delivered(reply: { elapsedTime: number }, outcome: 'appended' | 'duplicate' | 'ignored' | 'early' | 'unknown_document'): void {
    webhookDeliveries.inc({ provider: PROVIDER, outcome });
    webhookHandling.observe({ provider: PROVIDER, outcome }, reply.elapsedTime / 1000);
  }

  type Route = { Params: { documentId: string } };
  const tokenOf = (request: FastifyRequest<Route>) => {
    const header = request.headers[WEBHOOK_TOKEN_HEADER];
    return typeof header === 'string' ? header : undefined;
  };

  app.post<Route>('/v1/webhooks/llamaparse/:documentId', {
    // The credential needs no body: check it before reading one, so an unauthenticated caller
    // cannot make the service buffer and parse 10 MB. Only a request that carries an
    // LC-Signature (verifiable only over the body) is read without a valid credential.
    onRequest: async (request) => {
      const { documentId } = request.params;
      const token = tokenOf(request);
      request.webhookCredential = options.secret && UUID.test(documentId) ? verifyWebhookCredential(options.secret, PROVIDER, documentId, token) : null;
      if (!request.webhookCredential && !(options.signingSecret && request.headers['lc-signature'] !== undefined)) {
        reject(request, documentId, token ? 'bad_credential' : 'missing');
      }
    },
  }, async (request, reply) => {
    const { documentId } = request.params;
    const raw = request.rawBody ?? Buffer.alloc(0);
    const delivery = readDelivery(request.body, raw, request.headers['x-webhook-event-id'] as string | undefined, documentId);

    // Authentication: the per-document credential (a webhook_headers entry of the job), and
    // LC-Signature when a signing secret is configured (docpipe then sends it with every job, so
    // every delivery carries one; a signature that is present must verify).
    const token = tokenOf(request);
    const credential = request.webhookCredential ?? null;
    const signature = request.headers['lc-signature'] as string | undefined;
    let signed = false;
    if (options.signingSecret) {
      if (signature === undefined) reject(request, documentId, 'missing_signature');
      if (!verifyLcSignature(options.signingSecret, raw, signature)) reject(request, documentId, 'bad_signature');
      signed = true;
    }
    if (!credential && !signed) reject(request, documentId, token ? 'bad_credential' : 'missing');
    if (!UUID.test(documentId)) throw notFound();
    if (delivery.invalidText) throw delivery.invalidText;

    if (!TERMINAL_EVENTS.has(delivery.eventType)) {
      delivered(reply, 'ignored');
      request.log.info({ documentId, eventType: delivery.eventType }, 'webhook ignored: not a terminal event');
      return reply.send({ outcome: 'ignored' });
    }

    const result = await recorder.submit({
      documentId,
      delivery,
      run: credential?.run ?? null,
      metadata: { correlationId: request.id, causationId: delivery.eventId, actor: `webhook:${PROVIDER}`, requestId: request.id },
    });
    switch (result.outcome) {
      case 'unknown_document':
        delivered(reply, 'unknown_document');
        throw notFound();
      case 'early':
        // Any non-2xx makes LlamaCloud deliver again (after 1 s, then 2 s).
        delivered(reply, 'early');
        request.log.info({ documentId, providerJobId: delivery.jobId }, 'webhook arrived before the job was recorded; asking for a redelivery');
        throw new HttpError(409, 'PROVIDER_JOB_NOT_RECORDED', result.reason, { 'retry-after': '1' });
      case 'busy':
        throw new HttpError(503, 'BUSY', 'the document is changing; retry', { 'retry-after': '1' });
      case 'ignored':
        request.log.info({ documentId, providerJobId: delivery.jobId, eventType: delivery.eventType, reason: result.reason }, 'webhook ignored');
        break;
      default:
        break;
    }
    const outcome = result.outcome;
    delivered(reply, outcome);
    return reply.send({ outcome });
  });
}
