// `PUT /v1/storage/upload?token=...`: where the fs storage's signed upload URLs point
// (Storage.createSignedUpload of providers/storage/fs.ts). The token is the whole credential (no
// JWT): it binds the key, the size limit and the content type, and expires. The body is any
// content type, streamed unparsed and unbuffered into storage.put, which hashes, limits and
// publishes the object atomically. Like a Supabase signed upload URL without upsert, a URL
// uploads once: a PUT to a key that already holds an object is refused (409 UPLOAD_EXISTS).
// The upload counts against the process-wide upload cap and the minimum transfer rate
// (upload-guard.ts); there is no user to count it against.
import { PassThrough, addAbortSignal } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { ErrorBody } from './schemas.ts';
import { ObjectTooLargeError, type Storage } from '../../providers/types.ts';
import { UploadTokenError, type UploadTokens } from '../../providers/storage/upload-token.ts';
import { HttpError } from '../errors.ts';
import { clientAborted, type App } from '../http.ts';
import type { UploadGuard, UploadLease } from './upload-guard.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route authenticates its own requests (a signed token): skip the bearer-JWT hook. */
    public?: boolean;
  }
}

export const FS_UPLOAD_PATH = '/v1/storage/upload';

export interface FsUploadRouteDeps {
  storage: Storage;
  tokens: UploadTokens;
  /** The API's upload guard (caps, minimum rate). Storage contract tests run the route without one. */
  guard?: UploadGuard;
}

/**
 * Adds `PUT /v1/storage/upload` in its own encapsulated context (its catch-all content-type
 * parser does not leak into the rest of the app). The route carries `config: { public: true }`:
 * an app-wide JWT hook must let it through, the token is checked here.
 */
export function registerFsUploadRoute(app: App, deps: FsUploadRouteDeps): void {
  // Keys being written right now through this route, so two concurrent PUTs of one URL cannot
  // both pass the "already exists" check.
  const inFlight = new Set<string>();

  void app.register(async (scope) => {
    // Every body, whatever its content type (or none), is handed through unread.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request: FastifyRequest, _payload: unknown, done: (err: Error | null, body?: unknown) => void) => done(null));

    scope.put(FS_UPLOAD_PATH, {
      config: { public: true },
      schema: {
        description: 'The signed upload URL of fs storage (Supabase Storage has its own): the raw body is the file.',
        security: [],
        querystring: Type.Object({ token: Type.Optional(Type.String()) }),
        response: {
          200: Type.Object({ key: Type.String(), size: Type.Integer() }),
          ...Object.fromEntries([400, 401, 403, 408, 409, 413, 429, 503].map((status) => [status, ErrorBody])),
        },
      },
    }, async (request: FastifyRequest, reply: FastifyReply) => {
      const token = (request.query as Record<string, unknown> | undefined)?.token;
      const refuse = (error: HttpError): never => {
        discardBody(request, reply);
        throw error;
      };
      let claims;
      try {
        claims = deps.tokens.verify(typeof token === 'string' ? token : '');
      } catch (err) {
        if (err instanceof UploadTokenError) refuse(new HttpError(401, err.code, err.message));
        throw err;
      }
      const declared = Number(request.headers['content-length']);
      if (Number.isFinite(declared) && declared > claims.maxBytes) {
        refuse(new HttpError(413, 'FILE_TOO_LARGE', `file exceeds the limit of ${claims.maxBytes} bytes`));
      }
      // Claimed synchronously, before any await: two concurrent PUTs of one URL cannot both pass.
      if (inFlight.has(claims.key)) refuse(new HttpError(409, 'UPLOAD_EXISTS', 'this upload URL is already being used'));
      let lease: UploadLease | undefined;
      try {
        lease = deps.guard?.admit(request, reply, null);
      } catch (err) {
        discardBody(request, reply);
        throw err;
      }
      const signal = lease?.signal;
      inFlight.add(claims.key);
      try {
        if ((await deps.storage.stat(claims.key)) !== null) {
          refuse(new HttpError(409, 'UPLOAD_EXISTS', 'this upload URL has already been used: the object exists'));
        }
        // A PassThrough between the socket and storage.put: put destroys its body on failure
        // (too large, disk full), and destroying request.raw itself would reset the connection
        // before the error response could be sent.
        const body = new PassThrough();
        // It can be destroyed (client gone, too slow) before put's pipeline listens to it; the
        // pipeline still sees the error, but an 'error' event without a listener would throw.
        body.on('error', () => {});
        request.raw.pipe(body);
        // Listening beside the pipe, in the same tick, so no chunk flows before either listens.
        if (lease) request.raw.on('data', (chunk: Buffer) => lease.received(chunk.length));
        request.raw.once('error', (err) => body.destroy(err));
        request.raw.once('aborted', () => body.destroy(new Error('the client aborted the upload')));
        // Cut off below the minimum rate: put fails and removes its temp file.
        if (signal) addAbortSignal(signal, body);
        try {
          const stored = await deps.storage.put(claims.key, body, { maxBytes: claims.maxBytes, contentType: claims.contentType });
          return reply.status(200).send({ key: stored.key, size: stored.size });
        } catch (err) {
          request.raw.unpipe(body);
          if (signal?.aborted) throw signal.reason;
          // The client went away mid-body: its fault, nothing stored (put publishes whole or not
          // at all). Logged once, at info, by the error handler.
          if (clientAborted(request)) throw new HttpError(400, 'UPLOAD_ABORTED', 'the client aborted the upload');
          discardBody(request, reply);
          if (err instanceof ObjectTooLargeError) throw new HttpError(413, 'FILE_TOO_LARGE', err.message);
          throw err;
        }
      } finally {
        inFlight.delete(claims.key);
      }
    });
  });
}

/** Reads and drops the rest of a refused body, and closes the connection after the answer. */
function discardBody(request: FastifyRequest, reply: FastifyReply): void {
  reply.header('connection', 'close');
  if (!request.raw.readableEnded) request.raw.resume();
}
