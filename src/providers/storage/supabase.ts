// Supabase Storage (supabase-js v2) as the object storage, for deployments where the API and the
// workers run on different machines (Fly). Objects live in one private bucket; every call uses the
// service role key, which bypasses row-level security. What the storage server really answers
// (docs/PROVIDERS.md, "Supabase Storage: answers docpipe relies on"): errors come as HTTP 400 with
// the real status as a string `statusCode` in the body; a wrong or expired key is `AccessDenied`
// on most routes but `NoSuchBucket` on download and info; signing an upload URL for a missing
// bucket answers a 404 `InvalidRequest` that is not about the object.
//
// Keys go into the URL path, and supabase-js puts them there as they are: each segment is
// percent-encoded here, or `a?b` would upload to `a` and `a%3Fb` to `a?b`.
//
// Streaming both ways: put pipes the body through a hashing, counting, size-limiting Transform
// straight into the upload request (`duplex: 'half'`); get and head read the response body as a
// stream (head sends a Range request and stops after n bytes). Nothing buffers whole files.
//
// Timeouts: `timeoutSeconds` bounds every wait on the network (for the response headers, and
// between two chunks of a request or response body), not the whole transfer, so a large upload
// is never cut while bytes keep moving, and a stalled server is abandoned after timeoutSeconds.
import { AsyncLocalStorage } from 'node:async_hooks';
import { Readable, pipeline } from 'node:stream';
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
import { createPutMeter } from './meter.ts';

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

/** The storage server, with its hard limits on, refuses more than 1000 paths in one delete. */
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

function bucketMissingMessage(bucket: string): string {
  return `storage bucket "${bucket}" is missing, or SUPABASE_SERVICE_ROLE_KEY has no access to it: run \`docpipe setup-storage\``;
}

/**
 * The messages of an `AccessDenied` about the key itself (jose's, from the server's JWT check):
 * a key signed for another project, garbage, or an expired key. Any other `AccessDenied` is
 * row-level security refusing a role (the anon key).
 */
const KEY_REJECTED = /signature verification failed|Invalid Compact JWS|"exp" claim timestamp check failed|\bjw[st]\b/i;

/** A storage error answer read without supabase-js (the signed upload route). */
class StorageAnswerError extends Error implements StorageErrorLike {
  readonly status: number;
  readonly statusCode?: string;
  readonly code?: string;
  constructor(status: number, body: { statusCode?: unknown; code?: unknown; message?: unknown } | null) {
    super(typeof body?.message === 'string' ? body.message : `HTTP ${status}`);
    this.name = 'StorageApiError';
    this.status = status;
    if (typeof body?.statusCode === 'string') this.statusCode = body.statusCode;
    if (typeof body?.code === 'string') this.code = body.code;
  }
}

/** `segment/segment` with each segment percent-encoded, for a URL path. */
function encodePath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

/** The `exp` claim of a signed upload token (a JWT, read without verifying: the server signed it). */
function tokenExpiry(token: string): Date | null {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? new Date(claims.exp * 1000) : null;
  } catch {
    return null;
  }
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
  const timedFetch = createTimedFetch(options.fetch ?? globalThis.fetch, timeoutSeconds, range);
  const client = createClient(options.url, serviceKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { fetch: timedFetch },
  });
  // supabase-js puts the bucket and the keys into URL paths unencoded (see the header comment).
  const bucketPath = encodeURIComponent(bucket);
  const files = () => client.storage.from(bucketPath);
  /** `${SUPABASE_URL}/storage/v1`, as supabase-js derives it. */
  const storageUrl = new URL('storage/v1', options.url.endsWith('/') ? options.url : `${options.url}/`).href;

  /** Never let the key into a message, whatever a server or library put there. */
  const scrub = (text: string) => (serviceKey.length >= 8 ? text.split(serviceKey).join('[redacted]') : text);

  /** Runs one storage call, counting and timing it; network-level throws become errors too. */
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
    // Signing an upload URL for a missing bucket answers "The related resource does not exist": a
    // 404 in the body of an HTTP 400 that is not about the object (an unknown route is a real 404).
    if (code === 'NoSuchBucket' || (code === 'InvalidRequest' && status === 404 && error.status !== 404)) {
      return new ProviderError('STORAGE_BUCKET_MISSING', bucketMissingMessage(bucket), true, details, cause);
    }
    if (code === 'NoSuchKey') return new ObjectNotFoundError(key ?? '');
    if (code === 'InvalidKey' && key !== undefined) return new InvalidKeyError(key);
    if (code === 'EntityTooLarge' || status === 413) {
      const err = new ObjectTooLargeError(0);
      err.message = 'file exceeds the size limit of the storage bucket';
      return err;
    }
    if ((code === 'AccessDenied' && KEY_REJECTED.test(message)) || status === 401 || code === 'InvalidJWT') {
      return new ProviderError(
        'STORAGE_AUTH_FAILED',
        `supabase storage rejected SUPABASE_SERVICE_ROLE_KEY on ${operation} (${message}): it is not a valid key of the project at SUPABASE_URL (mistyped, another project's, or expired)`,
        true,
        details,
        cause,
      );
    }
    if (code === 'AccessDenied' || status === 403) {
      return new ProviderError('STORAGE_ACCESS_DENIED', `supabase storage refused ${operation} (row-level security: SUPABASE_SERVICE_ROLE_KEY is not the service role key, the anon key perhaps): ${message}`, true, details, cause);
    }
    if (status === 429) return new ProviderError('STORAGE_RATE_LIMITED', `supabase storage rate-limited ${operation}: ${message}`, false, details, cause);
    if (status === undefined || status >= 500) {
      return new ProviderError('STORAGE_UNAVAILABLE', `supabase storage ${operation} failed (${status ?? 'no status'}): ${message}`, false, details, cause);
    }
    return new ProviderError('STORAGE_REQUEST_REJECTED', `supabase storage refused ${operation} (${status}${code ? ` ${code}` : ''}): ${message}`, true, details, cause);
  }

  async function statObject(key: string): Promise<{ size: number } | null> {
    const result = await send('stat', () => files().info(encodePath(key)));
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
      const meter = createPutMeter(putOptions, body);
      let sourceFailure: unknown;
      const source = body instanceof Readable ? body : Readable.from(body);
      source.once('error', (err) => {
        sourceFailure ??= err;
      });
      // A failing body or the meter's refusal destroys the meter stream, which aborts the upload
      // request, so the server never publishes a partial object; an aborted upload destroys the
      // source.
      pipeline(source, meter.stream, () => undefined);
      const result = await send('put', () =>
        files().upload(encodePath(key), meter.stream, {
          contentType: putOptions.contentType ?? 'application/octet-stream',
          upsert: true,
          duplex: 'half',
          // The server applies the bucket's file_size_limit only to an upload that declares its
          // length: a stream without one is stored whatever its size.
          ...(putOptions.size === undefined ? {} : { headers: { 'content-length': String(putOptions.size) } }),
        }),
      );
      // The server may answer before reading the whole body (an error): stop reading the source.
      if (!meter.stream.readableEnded) meter.stream.destroy();
      if (meter.failure) throw meter.failure;
      if (result.error && sourceFailure !== undefined) throw sourceFailure;
      if (result.error) throw toError(result.error, 'put', key);
      return { key, size: meter.size, sha256: meter.sha256() };
    },

    async get(key: string): Promise<Readable> {
      assertValidKey(key);
      const result = await send('get', () => files().download(encodePath(key)).asStream());
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
      const result = await range.run(`bytes=0-${length - 1}`, () => send('head', () => files().download(encodePath(key)).asStream()));
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
        // Paths go in the JSON body, unencoded. Absent paths are skipped, not errors.
        const result = await send('remove', () => files().remove(batch));
        if (result.error) throw toError(result.error, 'remove');
      }
    },

    async check(): Promise<void> {
      // A wrong key is AccessDenied here (STORAGE_AUTH_FAILED, naming the key); the anon key sees
      // no bucket at all, so "missing" must also say "or no access".
      const result = await send('check', () => client.storage.getBucket(bucketPath));
      if (result.error) throw toError(result.error, 'check');
    },

    async setup(): Promise<'created' | 'exists'> {
      const result = await send('setup', () => client.storage.createBucket(bucket, { public: false }));
      if (!result.error) return 'created';
      if (result.error.code === 'BucketAlreadyExists' || realStatus(result.error) === 409) return 'exists';
      throw toError(result.error, 'setup');
    },

    async createSignedUpload(key: string, opts: SignedUploadOptions): Promise<SignedUpload> {
      assertValidKey(key);
      // Called without supabase-js: its createSignedUploadUrl reads the token back out of the
      // answer's URL, which holds the key unencoded (a key with `?` or `#` loses its token).
      const path = `object/upload/sign/${bucketPath}/${encodePath(key)}`;
      const result = await send('sign_upload', async (): Promise<Answer<{ token?: unknown }>> => {
        const response = await timedFetch(`${storageUrl}/${path}`, {
          method: 'POST',
          headers: { apikey: serviceKey, authorization: `Bearer ${serviceKey}`, 'content-type': 'application/json' },
          body: '{}',
        });
        const answer = (await response.json().catch(() => null)) as Record<string, unknown> | null;
        return response.ok ? { data: answer ?? {}, error: null } : { data: null, error: new StorageAnswerError(response.status, answer) };
      });
      if (result.error) throw toError(result.error, 'sign_upload', key);
      const token = typeof result.data.token === 'string' ? result.data.token : '';
      // The URL's lifetime is the server's setting (UPLOAD_SIGNED_URL_EXPIRATION_TIME: 60 s by
      // default self-hosted, 2 h on hosted Supabase): the token says when it ends.
      const expiresAt = tokenExpiry(token);
      if (!expiresAt) throw new ProviderError('STORAGE_UNAVAILABLE', 'supabase storage answered a signed upload URL without a readable token expiry', false);
      return {
        url: `${storageUrl}/${path}?token=${encodeURIComponent(token)}`,
        method: 'PUT',
        // Whether the URL may overwrite is in the token (no upsert: it uploads once); the server
        // ignores an x-upsert header on this PUT.
        headers: { 'content-type': opts.contentType },
        expiresAt,
      };
    },
  };
}
