// Supabase Storage (supabase-js v2) as the object storage, for deployments where the API and the
// workers run on different machines (Fly). Objects live in one private bucket; every call uses the
// service role key, which bypasses row-level security. What the storage server really answers
// (../../CONTRACTS.md "Supabase Storage"): errors come as HTTP 400 with the real status as a string
// `statusCode` in the body, and an invalid key is answered "bucket not found", so readiness says
// "missing bucket, or a key without access to it".
//
// Streaming both ways: put pipes the body through a hashing, counting, size-limiting Transform
// straight into the upload request (`duplex: 'half'`); get and head read the response body as a
// stream (head sends a Range request and stops after n bytes). Nothing buffers whole files.
//
// Timeouts: `timeoutSeconds` bounds every wait on the network (for the response headers, and
// between two chunks of a request or response body), not the whole transfer, so a large upload
// is never cut while bytes keep moving, and a stalled server is abandoned after timeoutSeconds.
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream';
import type { ReadableStream as NodeWebReadableStream } from 'node:stream/web';
import { createClient } from '@supabase/supabase-js';
import { providerRequestDuration, providerRequests } from '../../observability/metrics.ts';
import {
  InvalidKeyError,
  ObjectNotFoundError,
  ObjectTooLargeError,
  ProviderError,
  type PutOptions,
  type SignedUpload,
  type SignedUploadOptions,
  type Storage,
  type StoredObject,
} from '../types.ts';
import { assertValidKey, normalizePrefix } from './keys.ts';

export interface SupabaseStorageOptions {
  /** The project URL (`https://<ref>.supabase.co`), without `/storage/v1`. */
  url: string;
  /** The service role key (or a secret key): storage calls bypass row-level security. */
  serviceKey: string;
  bucket: string;
  /** Longest wait on the network for one step of a request (see the header comment). */
  timeoutSeconds: number;
  /** Replaces the global fetch (tests). */
  fetch?: typeof fetch;
}

/** Supabase fixes the lifetime of a signed upload URL at two hours. */
export const SUPABASE_SIGNED_UPLOAD_TTL_MS = 2 * 60 * 60 * 1000;
/** The storage server refuses more than 1000 paths in one delete. */
const REMOVE_BATCH = 1000;
const LIST_PAGE = 1000;

type Outcome = 'ok' | 'rate_limited' | 'server_error' | 'client_error' | 'network_error';

/** What supabase-js returns for a failed call: StorageApiError (an answer) or StorageUnknownError. */
interface StorageErrorLike extends Error {
  status?: number;
  statusCode?: string;
  code?: string;
}

/** What supabase-js calls resolve to. */
type Answer<T> = { data: T | null; error: StorageErrorLike | null };
type Result<T> = { data: T; error: null } | { data: null; error: StorageErrorLike };

class StorageTimeoutError extends Error {
  constructor(seconds: number) {
    super(`supabase storage did not answer within ${seconds}s`);
    this.name = 'StorageTimeoutError';
  }
}

export function bucketMissingMessage(bucket: string): string {
  return `storage bucket "${bucket}" is missing, or SUPABASE_SERVICE_ROLE_KEY has no access to it: run \`docpipe setup-storage\``;
}

function isApiError(error: StorageErrorLike): boolean {
  return error.name === 'StorageApiError' || typeof error.status === 'number';
}

/** The status the storage server meant: the string `statusCode` of the body, else the HTTP status. */
function realStatus(error: StorageErrorLike): number | undefined {
  const fromBody = Number.parseInt(String(error.statusCode ?? ''), 10);
  if (Number.isFinite(fromBody)) return fromBody;
  return typeof error.status === 'number' ? error.status : undefined;
}

function outcomeOf(error: StorageErrorLike | null): Outcome {
  if (!error) return 'ok';
  if (!isApiError(error)) return 'network_error';
  const status = realStatus(error) ?? 500;
  if (status === 429) return 'rate_limited';
  return status >= 500 ? 'server_error' : 'client_error';
}

/**
 * The fetch supabase-js uses: an AbortController armed while waiting on the network (see the
 * header comment), and an optional Range header for the call in progress (head).
 */
function createTimedFetch(base: typeof fetch, timeoutSeconds: number, range: AsyncLocalStorage<string>): typeof fetch {
  const timeoutMs = timeoutSeconds * 1000;
  return async (input, init = {}) => {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new StorageTimeoutError(timeoutSeconds)), timeoutMs);
    };
    const disarm = () => clearTimeout(timer);
    const signal = init.signal ? AbortSignal.any([init.signal, controller.signal]) : controller.signal;

    let body = init.body;
    if (body && typeof body === 'object' && Symbol.asyncIterator in body) {
      const source = body as AsyncIterable<Uint8Array>;
      body = (async function* () {
        for await (const chunk of source) {
          arm();
          yield chunk;
        }
        arm();
      })();
    }
    const headers = new Headers(init.headers);
    const wanted = range.getStore();
    if (wanted) headers.set('range', wanted);

    arm();
    let response: Response;
    try {
      response = await base(input, { ...init, body, headers, signal });
    } finally {
      disarm();
    }
    if (!response.body || [101, 204, 205, 304].includes(response.status)) return response;
    const reader = response.body.getReader();
    const timed = new ReadableStream<Uint8Array>(
      {
        async pull(controller2) {
          arm();
          try {
            const { done, value } = await reader.read();
            if (done) controller2.close();
            else controller2.enqueue(value);
          } catch (err) {
            controller2.error(err);
          } finally {
            disarm();
          }
        },
        async cancel(reason) {
          disarm();
          await reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(timed, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

export function createSupabaseStorage(options: SupabaseStorageOptions): Storage {
  const { bucket, serviceKey, timeoutSeconds } = options;
  if (!bucket) throw new Error('createSupabaseStorage: a bucket is required');
  if (!serviceKey) throw new Error('createSupabaseStorage: a service key is required');
  if (!(timeoutSeconds > 0)) throw new Error('createSupabaseStorage: timeoutSeconds must be positive');
  const range = new AsyncLocalStorage<string>();
  const client = createClient(options.url, serviceKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { fetch: createTimedFetch(options.fetch ?? globalThis.fetch, timeoutSeconds, range) },
  });
  const files = () => client.storage.from(bucket);

  /** Never let the key into a message, whatever a server or library put there. */
  const scrub = (text: string) => (serviceKey.length >= 8 ? text.split(serviceKey).join('[redacted]') : text);

  /** Runs one supabase-js call, counting and timing it; network-level throws become errors too. */
  async function send<T>(operation: string, run: () => PromiseLike<Answer<T>>): Promise<Result<T>> {
    const end = providerRequestDuration.startTimer({ provider: 'supabase', operation });
    let result: Result<T>;
    try {
      const answer = await run();
      result = answer.error ? { data: null, error: answer.error } : { data: answer.data as T, error: null };
    } catch (err) {
      result = { data: null, error: err instanceof Error ? (err as StorageErrorLike) : new Error(String(err)) };
    }
    end();
    providerRequests.inc({ provider: 'supabase', operation, outcome: outcomeOf(result.error) });
    return result;
  }

  /** Maps a supabase-js error to the Storage contract's errors. */
  function toError(error: StorageErrorLike, operation: string, key?: string): Error {
    const cause = { cause: error };
    const message = scrub(error.message || 'unknown error');
    if (!isApiError(error)) {
      return new ProviderError('STORAGE_UNAVAILABLE', `supabase storage ${operation} failed: ${message}`, false, {}, cause);
    }
    const status = realStatus(error);
    const details = status === undefined ? {} : { status };
    const code = error.code ?? (Number.isFinite(Number(error.statusCode)) ? undefined : error.statusCode);
    if (code === 'NoSuchBucket') return new ProviderError('STORAGE_BUCKET_MISSING', bucketMissingMessage(bucket), true, details, cause);
    if (code === 'NoSuchKey' || (status === 404 && key !== undefined)) return new ObjectNotFoundError(key ?? '');
    if (code === 'InvalidKey' && key !== undefined) return new InvalidKeyError(key);
    if (code === 'EntityTooLarge' || status === 413) {
      const err = new ObjectTooLargeError(0);
      err.message = 'file exceeds the size limit of the storage bucket';
      return err;
    }
    if (code === 'AccessDenied' || status === 403) {
      return new ProviderError('STORAGE_ACCESS_DENIED', `supabase storage refused ${operation} (row-level security, or a key that is not the service role key): ${message}`, true, details, cause);
    }
    if (status === 401 || code === 'InvalidJWT') {
      return new ProviderError('STORAGE_AUTH_FAILED', `supabase storage rejected SUPABASE_SERVICE_ROLE_KEY on ${operation}: ${message}`, true, details, cause);
    }
    if (status === 429) return new ProviderError('STORAGE_RATE_LIMITED', `supabase storage rate-limited ${operation}: ${message}`, false, details, cause);
    if (status === undefined || status >= 500) {
      return new ProviderError('STORAGE_UNAVAILABLE', `supabase storage ${operation} failed (${status ?? 'no status'}): ${message}`, false, details, cause);
    }
    return new ProviderError('STORAGE_REQUEST_REJECTED', `supabase storage refused ${operation} (${status}${code ? ` ${code}` : ''}): ${message}`, true, details, cause);
  }

  async function statObject(key: string): Promise<{ size: number } | null> {
    const result = await send('stat', () => files().info(key));
    if (result.error) {
      const err = toError(result.error, 'stat', key);
      if (err instanceof ObjectNotFoundError) return null;
      throw err;
    }
    const size = Number(result.data.size ?? (result.data.metadata as { size?: unknown } | undefined)?.size);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new ProviderError('STORAGE_UNAVAILABLE', `supabase storage answered no size for an object`, false);
    }
    return { size };
  }

  async function listFolder(folder: string): Promise<{ files: string[]; folders: string[] }> {
    const found = { files: [] as string[], folders: [] as string[] };
    for (let offset = 0; ; offset += LIST_PAGE) {
      const result = await send('list', () => files().list(folder, { limit: LIST_PAGE, offset, sortBy: { column: 'name', order: 'asc' } }));
      if (result.error) throw toError(result.error, 'list');
      for (const entry of result.data) {
        // Folders are synthesised by the server from the keys and carry no id.
        (entry.id === null || entry.id === undefined ? found.folders : found.files).push(`${folder}/${entry.name}`);
      }
      if (result.data.length < LIST_PAGE) return found;
    }
  }

  return {
    kind: 'supabase',

    async put(key: string, body: Readable | AsyncIterable<Uint8Array>, putOptions: PutOptions = {}): Promise<StoredObject> {
      assertValidKey(key);
      const { maxBytes } = putOptions;
      const hash = createHash('sha256');
      let size = 0;
      let tooLarge: ObjectTooLargeError | undefined;
      let sourceFailure: unknown;
      const meter = new Transform({
        transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
          size += chunk.length;
          if (maxBytes !== undefined && size > maxBytes) {
            tooLarge = new ObjectTooLargeError(maxBytes);
            callback(tooLarge);
            return;
          }
          hash.update(chunk);
          callback(null, chunk);
        },
      });
      const source = body instanceof Readable ? body : Readable.from(body);
      source.once('error', (err) => {
        sourceFailure ??= err;
      });
      // A failing body or the size limit destroys the meter, which aborts the upload request, so
      // the server never publishes a partial object; an aborted upload destroys the source.
      pipeline(source, meter, () => undefined);
      const result = await send('put', () =>
        files().upload(key, meter, {
          contentType: putOptions.contentType ?? 'application/octet-stream',
          upsert: true,
          duplex: 'half',
        }),
      );
      // The server may answer before reading the whole body (an error): stop reading the source.
      if (!meter.readableEnded) meter.destroy();
      if (tooLarge) throw tooLarge;
      if (result.error && sourceFailure !== undefined) throw sourceFailure;
      if (result.error) throw toError(result.error, 'put', key);
      return { key, size, sha256: hash.digest('hex') };
    },

    async get(key: string): Promise<Readable> {
      assertValidKey(key);
      const result = await send('get', () => files().download(key).asStream());
      if (result.error) throw toError(result.error, 'get', key);
      return Readable.fromWeb(result.data as unknown as NodeWebReadableStream<Uint8Array>);
    },

    async head(key: string, length: number): Promise<Buffer> {
      if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`head length must be a non-negative integer, got ${length}`);
      assertValidKey(key);
      if (length === 0) {
        if ((await statObject(key)) === null) throw new ObjectNotFoundError(key);
        return Buffer.alloc(0);
      }
      const result = await range.run(`bytes=0-${length - 1}`, () => send('head', () => files().download(key).asStream()));
      if (result.error) {
        const err = toError(result.error, 'head', key);
        // A range of an empty object is unsatisfiable (416): the object exists and is empty.
        if (realStatus(result.error) === 416 || result.error.code === 'InvalidRange') {
          if ((await statObject(key)) === null) throw new ObjectNotFoundError(key);
          return Buffer.alloc(0);
        }
        throw err;
      }
      // Whether the server honoured the range (206) or sent everything (200), stop at `length`.
      const reader = (result.data as ReadableStream<Uint8Array>).getReader();
      const parts: Buffer[] = [];
      let filled = 0;
      try {
        while (filled < length) {
          const { done, value } = await reader.read();
          if (done) break;
          parts.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
          filled += value.byteLength;
        }
      } finally {
        await reader.cancel().catch(() => undefined);
      }
      return Buffer.concat(parts).subarray(0, length);
    },

    async stat(key: string): Promise<{ size: number } | null> {
      assertValidKey(key);
      return statObject(key);
    },

    async deletePrefix(prefix: string): Promise<void> {
      // Like fs: whole segments (`documents/<id>` is that key and everything under
      // `documents/<id>/`, never `documents/<id>-other`); a trailing slash is tolerated.
      const base = normalizePrefix(prefix);
      const keys: string[] = [base];
      const pending = [base];
      while (pending.length > 0) {
        const folder = pending.pop()!;
        const found = await listFolder(folder);
        keys.push(...found.files);
        pending.push(...found.folders);
      }
      for (let i = 0; i < keys.length; i += REMOVE_BATCH) {
        const batch = keys.slice(i, i + REMOVE_BATCH);
        const result = await send('remove', () => files().remove(batch));
        if (result.error) {
          const err = toError(result.error, 'remove', batch[0]);
          if (!(err instanceof ObjectNotFoundError)) throw err;
        }
      }
    },

    async check(): Promise<void> {
      const result = await send('check', () => client.storage.getBucket(bucket));
      if (!result.error) return;
      const err = toError(result.error, 'check');
      if (err instanceof ProviderError && (err.code === 'STORAGE_BUCKET_MISSING' || err.details.status === 404)) {
        throw new Error(bucketMissingMessage(bucket), { cause: result.error });
      }
      throw err;
    },

    async setup(): Promise<'created' | 'exists'> {
      const result = await send('setup', () => client.storage.createBucket(bucket, { public: false }));
      if (!result.error) return 'created';
      if (result.error.code === 'BucketAlreadyExists' || realStatus(result.error) === 409) return 'exists';
      const err = toError(result.error, 'setup');
      if (err instanceof ProviderError && err.code === 'STORAGE_BUCKET_MISSING') {
        throw new Error(`cannot create storage bucket "${bucket}": SUPABASE_SERVICE_ROLE_KEY is invalid or has no access to storage`, { cause: result.error });
      }
      throw err;
    },

    async createSignedUpload(key: string, opts: SignedUploadOptions): Promise<SignedUpload> {
      assertValidKey(key);
      const result = await send('sign_upload', () => files().createSignedUploadUrl(key));
      if (result.error) throw toError(result.error, 'sign_upload', key);
      return {
        url: result.data.signedUrl,
        method: 'PUT',
        // What uploadToSignedUrl sends with a raw body; without upsert the URL uploads once.
        headers: { 'content-type': opts.contentType, 'x-upsert': 'false' },
        expiresAt: new Date(Date.now() + SUPABASE_SIGNED_UPLOAD_TTL_MS),
      };
    },
  };
}
