// Direct-to-storage uploads, for files too large to stream through the API comfortably.
//   1. POST /v1/uploads {fileName, size, contentType} reserves a document id and returns a signed
//      upload URL for its storage key (Supabase Storage's own, or the API's fs route).
//   2. The client PUTs the bytes to that URL.
//   3. POST /v1/documents {"uploadId"} (or {"path"}) registers the document: the object must
//      exist with the declared size; its type is sniffed and its SHA-256 computed from storage,
//      never taken from the client, in one read of the object (sniffed as soon as its first
//      bytes are in, so an unsupported file is refused without reading the rest).
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Type } from 'typebox';
import { executeIn, type CommandContext } from '../../documents/commands.ts';
import { observeCommitted } from '../../observability/pipeline-metrics.ts';
import { documentPrefix, originalKey } from '../../documents/pipeline.ts';
import type { EventMetadata } from '../../events/catalog.ts';
import { SNIFF_BYTES, captureHead, sniffMediaType } from '../../providers/parser/sniff.ts';
import { SUPPORTED_MEDIA_TYPES, type MediaType, type Storage } from '../../providers/types.ts';
import type { Principal } from '../../security/tokens.ts';
import { HttpError } from '../errors.ts';
import type { App } from '../http.ts';
import { assertStorableText, cleanFileName } from '../text.ts';
import { ErrorBody } from './schemas.ts';

export interface UploadRoutesOptions {
  ctx: CommandContext;
  storage: Storage;
  directMaxBytes: number;
  urlTtlSeconds: number;
  principal(request: unknown): Principal;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ORIGINAL_KEY = /^documents\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/original$/i;

export const UploadRequest = Type.Object(
  {
    fileName: Type.String({ minLength: 1, maxLength: 255 }),
    size: Type.Integer({ minimum: 1, description: 'Exact size in bytes of the file that will be PUT' }),
    contentType: Type.String({ minLength: 1, maxLength: 200 }),
  },
  { additionalProperties: false },
);

export const UploadCreated = Type.Object({
  uploadId: Type.String(),
  path: Type.String(),
  upload: Type.Object({
    url: Type.String(),
    method: Type.Literal('PUT'),
    headers: Type.Record(Type.String(), Type.String()),
    expiresAt: Type.String(),
  }),
  register: Type.Object({ method: Type.Literal('POST'), url: Type.String(), body: Type.Object({ uploadId: Type.String() }) }),
});

export function registerUploadRoutes(app: App, options: UploadRoutesOptions): void {
  app.post('/v1/uploads', {
    // 502: storage refuses for good (STORAGE_BUCKET_MISSING, STORAGE_AUTH_FAILED); 503: it is down.
    schema: { body: UploadRequest, response: { 201: UploadCreated, 400: ErrorBody, 401: ErrorBody, 413: ErrorBody, 415: ErrorBody, 502: ErrorBody, 503: ErrorBody } },
  }, async (request, reply) => {
    const principal = options.principal(request);
    const { fileName, size, contentType } = request.body;
    // Text Postgres cannot store is a client bug here (JSON it wrote): refused, naming the field.
    // What else a file name carries (directories, controls, bidi characters) is cleaned, like a
    // multipart upload's.
    assertStorableText('fileName', fileName);
    assertStorableText('contentType', contentType);
    if (size > options.directMaxBytes) {
      throw new HttpError(413, 'FILE_TOO_LARGE', `the file exceeds the limit of ${options.directMaxBytes} bytes for direct uploads`);
    }
    const declared = contentType.split(';')[0]!.trim().toLowerCase();
    if (!(SUPPORTED_MEDIA_TYPES as readonly string[]).includes(declared)) {
      throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', `contentType must be one of ${SUPPORTED_MEDIA_TYPES.join(', ')} (the bytes are sniffed again at registration)`);
    }
    const id = randomUUID();
    const key = originalKey(id);
    const expiresAt = new Date(Date.now() + options.urlTtlSeconds * 1000);
    const signed = await options.storage.createSignedUpload(key, { expiresInSeconds: options.urlTtlSeconds, maxBytes: size, contentType: declared });
    await options.ctx.sql`
      insert into docpipe.pending_uploads (document_id, owner_id, storage_key, file_name, declared_size, declared_type, expires_at)
      values (${id}, ${principal.sub}, ${key}, ${cleanFileName(fileName)}, ${size}, ${declared}, ${new Date(Math.max(expiresAt.getTime(), signed.expiresAt.getTime()))})`;
    request.log.info({ documentId: id, size, contentType: declared, storage: options.storage.kind }, 'direct upload reserved');
    return reply.status(201).send({
      uploadId: id,
      path: key,
      upload: { url: signed.url, method: 'PUT', headers: signed.headers, expiresAt: signed.expiresAt.toISOString() },
      register: { method: 'POST', url: '/v1/documents', body: { uploadId: id } },
    });
  });
}

/**
 * One read of a stored object: its media type, sniffed once its first SNIFF_BYTES are in (or
 * at its end), and its SHA-256 and size. An unsupported type stops the read there (null).
 */
async function sniffAndHash(stream: Readable, fileName: string): Promise<{ mediaType: MediaType; sha256: string; size: number } | null> {
  const hash = createHash('sha256');
  const head = captureHead();
  let size = 0;
  let mediaType: MediaType | null | undefined;
  // Leaving the loop early (return) destroys the stream.
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    head.observe(chunk);
    hash.update(chunk);
    size += chunk.length;
    if (mediaType === undefined && size >= SNIFF_BYTES) {
      mediaType = await sniffMediaType(head.head(), fileName);
      if (!mediaType) return null;
    }
  }
  mediaType ??= await sniffMediaType(head.head(), fileName);
  return mediaType ? { mediaType, sha256: hash.digest('hex'), size } : null;
}

interface PendingUpload {
  expired: boolean;
  document_id: string;
  owner_id: string;
  storage_key: string;
  file_name: string;
  declared_size: string;
  declared_type: string;
}

/** The uploadId a registration body names: `{"uploadId": ...}` or `{"path": "documents/<id>/original"}`. */
function uploadIdOf(body: unknown): string {
  const b = (body ?? {}) as { uploadId?: unknown; path?: unknown };
  if (typeof b.uploadId === 'string' && UUID.test(b.uploadId)) return b.uploadId.toLowerCase();
  const match = typeof b.path === 'string' ? ORIGINAL_KEY.exec(b.path) : null;
  if (match) return match[1]!.toLowerCase();
  throw new HttpError(400, 'INVALID_REGISTRATION', 'send {"uploadId": "<id from POST /v1/uploads>"} or {"path": "<path from POST /v1/uploads>"}');
}

/**
 * POST /v1/documents with a JSON body: registers a direct upload. Answers like the multipart
 * upload (202 and the new document), or 200 when the upload is already registered.
 */
export async function registerDirectUpload(
  options: Pick<UploadRoutesOptions, 'ctx' | 'storage'>,
  principal: Principal,
  body: unknown,
  meta: EventMetadata,
  log: App['log'],
): Promise<{ replay: boolean; id: string; status: string; run: number }> {
  const { ctx, storage } = options;
  const id = uploadIdOf(body);
  const [pending] = await ctx.sql<PendingUpload[]>`
    select *, expires_at < now() as expired from docpipe.pending_uploads where document_id = ${id} and owner_id = ${principal.sub}`;
  if (!pending) {
    // Registered before (a retried request): answer with the document, as idempotent uploads do.
    const [row] = await ctx.sql<{ status: string; run: number }[]>`
      select status, run from docpipe.document_status where id = ${id} and owner_id = ${principal.sub} and status <> 'deleted'`;
    if (row) return { replay: true, id, status: row.status, run: row.run };
    throw new HttpError(404, 'UPLOAD_NOT_FOUND', 'no pending upload with this id (it expired, was registered and deleted, or belongs to someone else)');
  }
  const key = pending.storage_key;
  const discard = async () => {
    await storage.deletePrefix(documentPrefix(id)).catch((err: unknown) => log.warn({ err, key }, 'could not remove a rejected upload'));
    await ctx.sql`delete from docpipe.pending_uploads where document_id = ${id}`;
  };
  if (pending.expired) {
    await discard();
    throw new HttpError(410, 'UPLOAD_EXPIRED', 'the reservation expired before it was registered; reserve a new upload');
  }
  const found = await storage.stat(key);
  if (!found) throw new HttpError(409, 'UPLOAD_NOT_RECEIVED', 'the file has not been uploaded to the signed URL yet');
  const declaredSize = Number(pending.declared_size);
  if (found.size !== declaredSize) {
    await discard();
    throw new HttpError(422, 'UPLOAD_SIZE_MISMATCH', `the uploaded file has ${found.size} bytes, ${declaredSize} were declared; reserve a new upload`);
  }
  const read = await sniffAndHash(await storage.get(key), pending.file_name);
  if (!read) {
    await discard();
    throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', `the content is not one of the supported types: ${SUPPORTED_MEDIA_TYPES.join(', ')}`);
  }
  const { mediaType, sha256, size } = read;
  if (size !== declaredSize) throw new HttpError(409, 'UPLOAD_CHANGED', 'the uploaded file changed while it was being registered; retry');

  const result = await ctx.sql.begin(async (tx) => {
    // Claiming the reservation serialises two registrations of the same upload.
    const claimed = await tx`delete from docpipe.pending_uploads where document_id = ${id} and owner_id = ${principal.sub} returning 1`;
    if (claimed.length === 0) return null;
    return executeIn(tx, ctx, id, {
      type: 'Upload',
      ownerId: principal.sub,
      fileName: pending.file_name,
      mediaType,
      size,
      sha256,
      storageKey: key,
      idempotencyKey: null,
    }, meta);
  });
  if (!result) {
    // Claimed meanwhile: by a concurrent registration (answer as a replay) or by the sweeper.
    const [row] = await ctx.sql<{ status: string; run: number }[]>`
      select status, run from docpipe.document_status where id = ${id} and owner_id = ${principal.sub} and status <> 'deleted'`;
    if (row) return { replay: true, id, status: row.status, run: row.run };
    throw new HttpError(410, 'UPLOAD_EXPIRED', 'the reservation expired before it was registered; reserve a new upload');
  }
  observeCommitted(result.events);
  log.info({ documentId: id, size, mediaType }, 'direct upload registered');
  return { replay: false, id, status: 'uploaded', run: 1 };
}
