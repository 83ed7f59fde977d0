// The /v1/documents routes: upload (streamed to storage, sniffed, hashed), status with ETag and
// long-poll, list, history, delete and reprocess. Another user's document answers 404, exactly
// like a missing one, so ids cannot be probed. The status route reads through the process's
// status cache (status-cache.ts); the others read the database.
import { randomUUID } from 'node:crypto';
import type { Sql } from '../../db/client.ts';
import { execute, executeBatchIn, type CommandContext } from '../../documents/commands.ts';
import { observeCommitted } from '../../observability/pipeline-metrics.ts';
import { DomainError, type DocumentCommand } from '../../documents/document.ts';
import { documentPrefix, originalKey } from '../../documents/pipeline.ts';
import type { EventMetadata } from '../../events/catalog.ts';
import { ConcurrencyError, readStream } from '../../events/store.ts';
import type { DocumentStatusRow } from '../../projections/document-status.ts';
import { captureHead, sniffMediaType } from '../../providers/parser/sniff.ts';
import { ObjectTooLargeError, SUPPORTED_MEDIA_TYPES, type Storage } from '../../providers/types.ts';
import type { Principal } from '../../security/tokens.ts';
import { HttpError, notFound } from '../errors.ts';
import { clientAborted, type App } from '../http.ts';
import { assertStorableText, cleanFileName } from '../text.ts';
import { receiveSingleFile } from './multipart.ts';
import {
  Accepted, DocumentList, DocumentParams, DocumentView, ErrorBody, EventList, GetQuery, ListQuery, ReprocessBody, toView,
} from './schemas.ts';
import type { StatusCache } from './status-cache.ts';
import type { StatusWaiter } from './status-waiter.ts';
import type { UploadGuard } from './upload-guard.ts';
import { registerDirectUpload } from './uploads.ts';
import { Type } from 'typebox';

export interface DocumentRoutesOptions {
  ctx: CommandContext;
  storage: Storage;
  waiter: StatusWaiter;
  /** The status rows GET /v1/documents/:id answers from; told of the commands committed here. */
  cache: StatusCache;
  maxUploadBytes: number;
  longPollMaxSeconds: number;
  guard: UploadGuard;
  principal(request: unknown): Principal;
  /** Takes a slot for an open long-poll (throws 429 when none is free); returns its release. */
  longPoll(sub: string): () => void;
  /** A user asked for a document that exists but is another owner's (answered 404 all the same). */
  foreignAccess(request: unknown, id: string): void;
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A cursor time as this API writes it (UTC, up to microseconds) that Postgres accepts too. */
function isCursorTime(t: string): boolean {
  if (!CURSOR_TIME.test(t)) return false;
  const ms = Date.parse(t);
  // Date.parse takes 2024-02-30 or 24:00 (Postgres does not): the instant must print back the same.
  return ms >= 0 && new Date(ms).toISOString().slice(0, 19) === t.slice(0, 19);
}

function metadataFor(principal: Principal, requestId: string): EventMetadata {
  return { correlationId: requestId, causationId: requestId, actor: `user:${principal.sub}`, requestId };
}

/** Whose documents a principal may act on: its own, or (the service role) anyone's (null). */
function ownerScope(principal: Principal): string | null {
  return principal.role === 'service_role' ? null : principal.sub;
}

/**
 * Whose documents a request covers (a list, a search): the caller's own; for the service role
 * anyone's (null), or the one owner `?owner=` names. A user may name only themselves.
 */
export function requestedOwner(principal: Principal, owner: string | undefined): string | null {
  const scope = ownerScope(principal);
  if (owner !== undefined && scope !== null && owner !== scope) {
    throw new HttpError(403, 'FORBIDDEN_OWNER', 'only the service role may name another owner\'s documents');
  }
  return owner ?? scope;
}

/** The document's status row by id alone, whoever owns it (the caller decides who may see it). */
async function readStatus(sql: Sql, id: string): Promise<DocumentStatusRow | undefined> {
  const [row] = await sql<DocumentStatusRow[]>`select * from docpipe.document_status where id = ${id}`;
  return row;
}

function domainToHttp(err: unknown): never {
  if (err instanceof DomainError) {
    if (err.code === 'DOCUMENT_NOT_FOUND') throw notFound();
    throw new HttpError(409, err.code, err.message);
  }
  if (err instanceof ConcurrencyError) throw new HttpError(409, err.code, 'the document changed meanwhile; retry');
  throw err;
}

/**
 * Runs a user command, retrying briefly if a worker appended to the stream at the same moment.
 * Its change is evicted from this process's cache at once: the client that made it must see it
 * on its next GET, before the notification has come round.
 */
async function userCommand(options: DocumentRoutesOptions, id: string, command: DocumentCommand, meta: EventMetadata, hooks?: Parameters<typeof execute>[4]) {
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await execute(options.ctx, id, command, meta, hooks);
      const last = result.events.at(-1);
      if (last) options.cache.changed(id, last.streamVersion);
      return result;
    } catch (err) {
      if (err instanceof ConcurrencyError && attempt < 5) continue;
      domainToHttp(err);
    }
  }
}

export function registerDocumentRoutes(app: App, options: DocumentRoutesOptions): void {
  const { ctx, storage, waiter, cache } = options;
  const sql = ctx.sql;
  const errors = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody };
  /**
   * The owner's document, or 404 (missing, deleted, or another owner's); a miss on another
   * owner's document is reported (audit, threat detection). The same check whether the row comes
   * from the cache (`cached`, the status route) or the database: a cached row is anyone's.
   */
  const owned = async (request: unknown, id: string, principal: Principal, cached = false): Promise<DocumentStatusRow> => {
    const row = cached ? await cache.read(id, () => readStatus(sql, id)) : await readStatus(sql, id);
    if (!row || row.status === 'deleted') throw notFound();
    const owner = ownerScope(principal);
    if (owner !== null && row.owner_id !== owner) {
      options.foreignAccess(request, id);
      throw notFound();
    }
    return row;
  };

  app.post('/v1/documents', {
    schema: {
      headers: { type: 'object', properties: { 'idempotency-key': { type: 'string' } } },
      response: { 200: Accepted, 202: Accepted, ...errors, 408: ErrorBody, 413: ErrorBody, 415: ErrorBody, 422: ErrorBody, 429: ErrorBody, 503: ErrorBody },
    },
  }, async (request, reply) => {
    const principal = options.principal(request);
    const idempotencyKey = request.headers['idempotency-key'];
    if (idempotencyKey !== undefined && (typeof idempotencyKey !== 'string' || !IDEMPOTENCY_KEY.test(idempotencyKey))) {
      throw new HttpError(400, 'INVALID_IDEMPOTENCY_KEY', 'Idempotency-Key must be 1-255 printable ASCII characters');
    }
    if (/^application\/json\b/i.test(request.headers['content-type'] ?? '')) {
      // A direct upload (POST /v1/uploads, then PUT to storage) being registered.
      const done = await registerDirectUpload(options, principal, request.body, metadataFor(principal, request.id), request.log);
      if (!done.replay) reply.header('location', `/v1/documents/${done.id}`);
      return reply.status(done.replay ? 200 : 202).send({ id: done.id, status: done.status, run: done.run, statusUrl: `/v1/documents/${done.id}` });
    }
    if (!request.isMultipart()) {
      throw new HttpError(415, 'NOT_MULTIPART', 'send the document as multipart/form-data in a field named "file", or register a direct upload as JSON {"uploadId"}');
    }
    // Admitted (or refused with 429/503) before a byte of the body is read.
    const lease = options.guard.admit(request, reply, principal.sub);
    const id = randomUUID();
    const key = originalKey(id);
    const cleanup = () => storage.deletePrefix(documentPrefix(id)).catch((err: unknown) => request.log.warn({ err, key }, 'could not remove an upload'));
    // The first bytes are kept as they stream to storage and sniffed from memory: the stored
    // file is never opened again here.
    const head = captureHead();
    let received;
    try {
      received = await receiveSingleFile(request, { maxBytes: options.maxUploadBytes, signal: lease.signal, received: lease.received }, async (file) => {
        // pipe() carries the data and the end; a failed body fails the capture (and put with
        // it), and a capture that put gave up on releases the body. (Not stream.pipeline: it
        // costs an AbortController and a DOMException per upload.)
        file.pipe(head.stream);
        file.once('error', (err) => head.stream.destroy(err));
        head.stream.once('close', () => file.destroy());
        const stored = await storage.put(key, head.stream, { maxBytes: options.maxUploadBytes });
        if (file.truncated) throw new ObjectTooLargeError(options.maxUploadBytes);
        return stored;
      });
    } catch (err) {
      await cleanup();
      if (clientAborted(request)) throw new HttpError(400, 'UPLOAD_ABORTED', 'the client aborted the upload');
      // The rest of a refused body is not read: close the connection rather than drain it.
      if (!request.raw.complete) reply.header('connection', 'close');
      const code = (err as { code?: string }).code;
      if (err instanceof ObjectTooLargeError || code === 'FST_REQ_FILE_TOO_LARGE') {
        throw new HttpError(413, 'FILE_TOO_LARGE', `the file exceeds the limit of ${options.maxUploadBytes} bytes`);
      }
      throw err;
    }
    const stored = received.stored;
    // A body that goes on after its closing boundary (an epilogue) is not read to its end.
    if (!request.raw.complete) reply.header('connection', 'close');
    try {
      if (stored.size === 0) throw new HttpError(400, 'EMPTY_FILE', 'the file is empty');
      const mediaType = await sniffMediaType(head.head(), received.fileName);
      if (!mediaType) {
        throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', `the content is not one of the supported types: ${SUPPORTED_MEDIA_TYPES.join(', ')}`);
      }
      const upload: DocumentCommand = {
        type: 'Upload',
        ownerId: principal.sub,
        fileName: cleanFileName(received.fileName),
        mediaType,
        size: stored.size,
        sha256: stored.sha256,
        storageKey: key,
        idempotencyKey: idempotencyKey ?? null,
      };
      const outcome = await sql.begin(async (tx) => {
        // An Idempotency-Key is claimed in the same round trip as the command's reads (the
        // batch's `include`): the upload is recorded only if the claim took.
        const claim = idempotencyKey === undefined ? undefined : tx`
          insert into docpipe.idempotency_keys (owner_id, key, document_id, sha256)
          values (${principal.sub}, ${idempotencyKey}, ${id}, ${stored.sha256})
          on conflict do nothing returning 1`.then((rows) => [rows.length > 0]);
        const [result] = await executeBatchIn(tx, ctx, [{ documentId: id, command: upload, metadata: metadataFor(principal, request.id) }], { include: claim, fresh: true });
        if (result) {
          if (!result.ok) throw result.error;
          return { replay: false as const, id, status: 'uploaded', run: 1, events: result.events };
        }
        const [prior] = await tx<{ document_id: string; sha256: string; status: string | null; run: number | null }[]>`
          select k.document_id, k.sha256, s.status, s.run
          from docpipe.idempotency_keys k left join docpipe.document_status s on s.id = k.document_id
          where k.owner_id = ${principal.sub} and k.key = ${idempotencyKey!}`;
        if (prior!.sha256 !== stored.sha256) {
          throw new HttpError(409, 'IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was used for a different file');
        }
        return { replay: true as const, id: prior!.document_id, status: prior!.status ?? 'uploaded', run: prior!.run ?? 1 };
      });
      if (outcome.replay) {
        await cleanup();
        return reply.status(200).send({ id: outcome.id, status: outcome.status, run: outcome.run, statusUrl: `/v1/documents/${outcome.id}` });
      }
      observeCommitted(outcome.events);
      request.log.info({ documentId: id, size: stored.size, mediaType }, 'document accepted');
      return reply
        .status(202)
        .header('location', `/v1/documents/${id}`)
        .send({ id, status: outcome.status, run: outcome.run, statusUrl: `/v1/documents/${id}` });
    } catch (err) {
      await cleanup();
      throw err;
    }
  });

  app.get('/v1/documents/:id', {
    schema: { params: DocumentParams, querystring: GetQuery, response: { 200: DocumentView, 304: Type.Null(), ...errors } },
  }, async (request, reply) => {
    const principal = options.principal(request);
    const { id } = request.params;
    const waitSeconds = Math.min(request.query.wait ?? 0, options.longPollMaxSeconds);
    const ifNoneMatch = request.headers['if-none-match'];
    const seenVersion = ifNoneMatch ? Number(/^(?:W\/)?"(\d+)"$/.exec(ifNoneMatch.trim())?.[1] ?? NaN) : NaN;

    let row: DocumentStatusRow;
    if (waitSeconds > 0) {
      const release = options.longPoll(principal.sub);
      // Subscribe before reading, so a change between the read and the wait is not missed.
      const sub = waiter.subscribe(id);
      try {
        row = await owned(request, id, principal, true);
        const baseline = Number.isNaN(seenVersion) ? row.version : seenVersion;
        if (row.version === baseline && row.status !== 'ready' && row.status !== 'failed') {
          const aborted = new AbortController();
          request.raw.once('close', () => aborted.abort());
          // The notification that wakes the wait has evicted the row first (status-waiter.ts).
          if (await sub.wait(baseline, waitSeconds * 1000, aborted.signal)) row = await owned(request, id, principal, true);
        }
      } finally {
        sub.cancel();
        release();
      }
    } else {
      row = await owned(request, id, principal, true);
    }
    // `private`: the user's data, never for a shared cache; `no-cache`: a browser may keep it but
    // must ask again each time (If-None-Match, answered 304 only after the token and the owner
    // are checked). docs/CACHING.md.
    reply.header('etag', `"${row.version}"`).header('cache-control', 'private, no-cache');
    if (row.version === seenVersion) return reply.status(304).send(null);
    return toView(row);
  });

  app.get('/v1/documents', {
    schema: { querystring: ListQuery, response: { 200: DocumentList, ...errors } },
  }, async (request) => {
    const principal = options.principal(request);
    const { status, limit, cursor } = request.query;
    const owner = requestedOwner(principal, request.query.owner);
    let after: { t: string; i: string } | null = null;
    if (cursor) {
      try {
        after = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
        // Exactly the shapes this API issues, so nothing reaches Postgres that it cannot cast.
        if (typeof after?.t !== 'string' || typeof after?.i !== 'string' || !isCursorTime(after.t) || !UUID.test(after.i)) throw new Error();
      } catch {
        throw new HttpError(400, 'INVALID_CURSOR', 'the cursor is not one this API returned');
      }
    }
    // The cursor keeps uploaded_at to the microsecond (a JS Date would round it to the
    // millisecond and skip rows uploaded within the same one), and is sent as text so that
    // postgres.js does not round it through a Date either.
    const rows = await sql<(DocumentStatusRow & { cursor_at: string })[]>`
      select *, to_char(uploaded_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as cursor_at
      from docpipe.document_status
      where ${owner === null ? sql`true` : sql`owner_id = ${owner}`}
        and ${status ? sql`status = ${status}` : sql`status <> 'deleted'`}
        and ${after ? sql`(uploaded_at, id) < (${after.t}::text::timestamptz, ${after.i}::uuid)` : sql`true`}
      order by uploaded_at desc, id desc
      limit ${limit + 1}`;
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    const nextCursor =
      rows.length > limit && last ? Buffer.from(JSON.stringify({ t: last.cursor_at, i: last.id })).toString('base64url') : null;
    return { documents: page.map(toView), nextCursor };
  });

  app.get('/v1/documents/:id/events', {
    schema: { params: DocumentParams, response: { 200: EventList, ...errors } },
  }, async (request) => {
    const principal = options.principal(request);
    await owned(request, request.params.id, principal);
    const events = await readStream(sql, request.params.id);
    return {
      events: events.map((e) => ({
        position: e.globalPosition,
        version: e.streamVersion,
        type: e.type,
        typeVersion: e.typeVersion,
        data: e.data as unknown as Record<string, unknown>,
        correlationId: e.metadata.correlationId,
        causationId: e.metadata.causationId,
        actor: e.metadata.actor,
        requestId: e.metadata.requestId,
        createdAt: e.createdAt.toISOString(),
      })),
    };
  });

  app.delete('/v1/documents/:id', {
    schema: { params: DocumentParams, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    const principal = options.principal(request);
    const { id } = request.params;
    await owned(request, id, principal);
    await userCommand(options, id, { type: 'Delete', reason: null }, metadataFor(principal, request.id), {
      withEvents: async (tx) => {
        await tx`delete from docpipe.document_chunks where document_id = ${id}`;
        await tx`delete from docpipe.idempotency_keys where document_id = ${id}`;
      },
    });
    return reply.status(204).send(null);
  });

  app.post('/v1/documents/:id/reprocess', {
    schema: { params: DocumentParams, body: ReprocessBody, response: { 202: Accepted, ...errors } },
  }, async (request, reply) => {
    const principal = options.principal(request);
    const { id } = request.params;
    await owned(request, id, principal);
    const reason = request.body?.reason ?? null;
    assertStorableText('reason', reason);
    const result = await userCommand(options, id, { type: 'Reprocess', reason }, metadataFor(principal, request.id));
    return reply.status(202).send({ id, status: result.state.status, run: result.state.run, statusUrl: `/v1/documents/${id}` });
  });
}
