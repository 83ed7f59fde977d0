// A faithful in-memory fake of the Supabase Storage API (`${SUPABASE_URL}/storage/v1`) on
// 127.0.0.1, for the storage contract tests and for scripts that need a Supabase without a
// network. It answers what supabase-js 2.119 calls, the way the real storage server answers
// (as documented by Supabase and observed against the open-source storage server):
//
// - errors are HTTP 400 with the real status as a *string* `statusCode` in the body
//   (`{"statusCode":"404","error":"not_found","message":"Object not found","code":"NoSuchKey"}`);
//   only 5xx are sent with their own HTTP status;
// - a missing or wrong `apikey` / `Authorization: Bearer` is answered NoSuchBucket, never 401;
// - uploads take a raw body (`content-type` is the object's type) or multipart with the file under
//   the empty field name; `x-upsert: true` overwrites, otherwise KeyAlreadyExists;
// - signed upload URLs (`POST /object/upload/sign/...`) carry a token bound to bucket and path,
//   valid for 2 h, and need no apikey to PUT to; upsert comes from the token, not the PUT.
//
// Fault injection per test: failNext(), setDelayMs(), deleteBucket(), setRowLevelSecurityDenied(),
// advanceClock(); the same over HTTP under `/_fake/` for scripts (see registerAdmin).
import { createHmac, randomUUID, timingSafeEqual, createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

export interface FakeObject {
  bytes: Buffer;
  contentType: string;
  cacheControl: string;
  id: string;
  createdAt: string;
  updatedAt: string;
}

export interface FakeBucket {
  id: string;
  name: string;
  owner: string;
  public: boolean;
  file_size_limit: number | null;
  allowed_mime_types: string[] | null;
  created_at: string;
  updated_at: string;
}

export interface FakeRequest {
  method: string;
  /** The request path without the query string, e.g. `/storage/v1/object/documents/a/b`. */
  path: string;
  status: number;
  /** upload, update, download, head, info, list, remove, sign, signedDownload, signUpload, uploadSigned, getBucket, listBuckets, createBucket, deleteBucket, unknown. */
  operation: string;
}

/** The body of a storage error; the HTTP status is 400 unless `statusCode` is 5xx. */
export interface FakeErrorBody {
  statusCode: string;
  error: string;
  message: string;
  code?: string;
}

/** What an injected fault answers: an HTTP status (4xx as the 400-with-statusCode form), an error body, or a dropped connection. */
export type FakeFault = number | FakeErrorBody | 'reset';

export interface FakeSupabaseStorageOptions {
  serviceKey?: string;
  port?: number;
  /** Buckets that exist from the start (private). */
  buckets?: string[];
  /** The server-wide upload limit in bytes (the real default is 50 MB). */
  fileSizeLimit?: number;
}

export interface FakeSupabaseStorage {
  /** SUPABASE_URL to configure: the origin, WITHOUT `/storage/v1`. */
  readonly url: string;
  readonly serviceKey: string;
  /** `bucket/key` -> the object. */
  readonly objects: Map<string, FakeObject>;
  readonly buckets: Map<string, FakeBucket>;
  /** Every storage request answered, in order (not the `/_fake/` admin calls). */
  readonly requests: FakeRequest[];
  /**
   * The next `count` requests matching `match` answer `fault`. A string matches an operation name
   * (`upload`, `download`, `getBucket`...) or a prefix of `"METHOD /path"` or of the path; a RegExp
   * is tested against `"METHOD /path"`.
   */
  failNext(match: string | RegExp, fault: FakeFault, count?: number): void;
  /** Every storage request waits this long before it is handled. */
  setDelayMs(ms: number): void;
  /** Removes a bucket and its objects, as if deleted in the dashboard. */
  deleteBucket(name: string): void;
  /** Writes (uploads, signed upload URLs, bucket creation) answer AccessDenied; deletes delete nothing. */
  setRowLevelSecurityDenied(denied: boolean): void;
  /** Moves the fake's clock forward (token expiry). */
  advanceClock(ms: number): void;
  /** Clears faults, delay, the RLS switch, the clock offset and the request log (keeps data). */
  reset(): void;
  close(): Promise<void>;
}

export const FAKE_ERRORS = {
  noSuchKey: (): FakeErrorBody => ({ statusCode: '404', error: 'not_found', message: 'Object not found', code: 'NoSuchKey' }),
  keyAlreadyExists: (): FakeErrorBody => ({ statusCode: '409', error: 'Duplicate', message: 'The resource already exists', code: 'KeyAlreadyExists' }),
  noSuchBucket: (): FakeErrorBody => ({ statusCode: '404', error: 'Bucket not found', message: 'Bucket not found', code: 'NoSuchBucket' }),
  bucketAlreadyExists: (): FakeErrorBody => ({ statusCode: '409', error: 'Duplicate', message: 'The resource already exists', code: 'BucketAlreadyExists' }),
  bucketNotEmpty: (): FakeErrorBody => ({ statusCode: '409', error: 'Bucket not empty', message: 'The bucket you tried to delete is not empty', code: 'BucketNotEmpty' }),
  accessDenied: (): FakeErrorBody => ({ statusCode: '403', error: 'Unauthorized', message: 'new row violates row-level security policy', code: 'AccessDenied' }),
  entityTooLarge: (): FakeErrorBody => ({ statusCode: '413', error: 'Payload too large', message: 'The object exceeded the maximum allowed size', code: 'EntityTooLarge' }),
  invalidKey: (key: string): FakeErrorBody => ({ statusCode: '400', error: 'InvalidKey', message: `Invalid key: ${key}`, code: 'InvalidKey' }),
  invalidRange: (): FakeErrorBody => ({ statusCode: '416', error: 'InvalidRange', message: 'The requested range is not satisfiable', code: 'InvalidRange' }),
  invalidJwt: (message: string): FakeErrorBody => ({ statusCode: '400', error: 'Unauthorized', message, code: 'InvalidJWT' }),
  invalidRequest: (message: string): FakeErrorBody => ({ statusCode: '400', error: 'Bad Request', message, code: 'InvalidRequest' }),
  internal: (): FakeErrorBody => ({ statusCode: '500', error: 'Internal Server Error', message: 'Internal Server Error', code: 'InternalError' }),
};

/** The 400-with-statusCode body for a bare status (failNext(op, 404)). */
function errorForStatus(status: number): FakeErrorBody {
  switch (status) {
    case 401:
      return FAKE_ERRORS.invalidJwt('invalid signature');
    case 403:
      return FAKE_ERRORS.accessDenied();
    case 404:
      return FAKE_ERRORS.noSuchKey();
    case 409:
      return FAKE_ERRORS.keyAlreadyExists();
    case 413:
      return FAKE_ERRORS.entityTooLarge();
    case 429:
      return { statusCode: '429', error: 'too_many_requests', message: 'Too many requests', code: 'SlowDown' };
    default:
      return status >= 500
        ? { statusCode: String(status), error: 'Internal Server Error', message: 'Internal Server Error', code: 'InternalError' }
        : FAKE_ERRORS.invalidRequest(`injected ${status}`);
  }
}

/** The storage server's own key rule (storage `isValidKey`). */
const VALID_KEY = /^(\w|\/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$/;
const SIGNED_UPLOAD_TTL_S = 2 * 60 * 60;
const STORAGE_PREFIX = '/storage/v1';

class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

class StorageFailure extends Error {
  constructor(readonly body: FakeErrorBody) {
    super(body.message);
  }
}

const fail = (body: FakeErrorBody): never => {
  throw new StorageFailure(body);
};

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

async function readRaw(raw: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of raw) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

async function readJson(raw: IncomingMessage): Promise<Record<string, unknown>> {
  const text = (await readRaw(raw)).toString('utf8');
  if (text.trim() === '') return {};
  try {
    const parsed: unknown = JSON.parse(text);
    return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : {};
  } catch {
    return fail(FAKE_ERRORS.invalidRequest('body is not valid JSON'));
  }
}

function splitBucketPath(rest: string): { bucket: string; key: string } {
  const slash = rest.indexOf('/');
  if (slash <= 0) return { bucket: rest, key: '' };
  return { bucket: rest.slice(0, slash), key: rest.slice(slash + 1) };
}

function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export async function startFakeSupabaseStorage(options: FakeSupabaseStorageOptions = {}): Promise<FakeSupabaseStorage> {
  const serviceKey = options.serviceKey ?? `fake-service-role-${randomUUID()}`;
  const globalLimit = options.fileSizeLimit ?? 50 * 1024 * 1024;
  const tokenSecret = randomUUID();
  const objects = new Map<string, FakeObject>();
  const buckets = new Map<string, FakeBucket>();
  const requests: FakeRequest[] = [];
  let faults: Array<{ match: string | RegExp; fault: FakeFault; remaining: number }> = [];
  let delayMs = 0;
  let rlsDenied = false;
  let clockOffsetMs = 0;
  const closing = new AbortController();
  const now = () => Date.now() + clockOffsetMs;
  const iso = () => new Date(now()).toISOString();

  function addBucket(name: string, init: { public?: boolean; file_size_limit?: number | null; allowed_mime_types?: string[] | null } = {}): FakeBucket {
    const at = iso();
    const bucket: FakeBucket = {
      id: name,
      name,
      owner: '',
      public: init.public ?? false,
      file_size_limit: init.file_size_limit ?? null,
      allowed_mime_types: init.allowed_mime_types ?? null,
      created_at: at,
      updated_at: at,
    };
    buckets.set(name, bucket);
    return bucket;
  }
  for (const name of options.buckets ?? []) addBucket(name);

  // --- tokens: HS256 JWTs, like the server's -------------------------------------------------
  function signToken(claims: Record<string, unknown>): string {
    const head = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const sig = createHmac('sha256', tokenSecret).update(`${head}.${body}`).digest('base64url');
    return `${head}.${body}.${sig}`;
  }
  function verifyToken(token: string | undefined): Record<string, unknown> {
    const parts = (token ?? '').split('.');
    if (parts.length !== 3) return fail(FAKE_ERRORS.invalidJwt('jwt malformed'));
    const expected = createHmac('sha256', tokenSecret).update(`${parts[0]}.${parts[1]}`).digest();
    const given = Buffer.from(parts[2]!, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return fail(FAKE_ERRORS.invalidJwt('invalid signature'));
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    if (typeof claims.exp !== 'number' || claims.exp * 1000 <= now()) return fail(FAKE_ERRORS.invalidJwt('jwt expired'));
    return claims;
  }

  // --- helpers ---------------------------------------------------------------------------------
  function authorized(request: FastifyRequest): boolean {
    return request.headers.apikey === serviceKey && request.headers.authorization === `Bearer ${serviceKey}`;
  }
  function bucketOrFail(name: string): FakeBucket {
    return buckets.get(name) ?? fail(FAKE_ERRORS.noSuchBucket());
  }
  function validKeyOrFail(key: string): string {
    if (key === '' || !VALID_KEY.test(key)) fail(FAKE_ERRORS.invalidKey(key));
    return key;
  }
  function objectOrFail(bucket: string, key: string): FakeObject {
    return objects.get(`${bucket}/${key}`) ?? fail(FAKE_ERRORS.noSuchKey());
  }
  function etag(object: FakeObject): string {
    return `"${createHash('md5').update(object.bytes).digest('hex')}"`;
  }
  function fileMetadata(object: FakeObject) {
    return {
      eTag: etag(object),
      size: object.bytes.length,
      mimetype: object.contentType,
      cacheControl: object.cacheControl,
      lastModified: object.updatedAt,
      contentLength: object.bytes.length,
      httpStatusCode: 200,
    };
  }
  function objectRow(bucket: string, key: string, object: FakeObject) {
    return {
      bucket_id: bucket,
      name: key,
      id: object.id,
      owner: null,
      created_at: object.createdAt,
      updated_at: object.updatedAt,
      last_accessed_at: object.updatedAt,
      metadata: fileMetadata(object),
    };
  }

  /** Reads an upload body (raw or multipart), never keeping more than the limit in memory. */
  async function readUpload(request: FastifyRequest, limit: number): Promise<{ bytes: Buffer; contentType: string; cacheControl: string }> {
    const type = request.headers['content-type'] ?? '';
    if (/^multipart\/form-data/i.test(type)) {
      const form = await new Request('http://fake.invalid/', {
        method: 'POST',
        headers: { 'content-type': type },
        body: Readable.toWeb(request.raw) as unknown as RequestInit['body'],
        duplex: 'half',
      }).formData();
      let file: File | undefined;
      const named = form.get('');
      if (named instanceof File) file = named;
      else form.forEach((value) => void (file ??= value instanceof File ? value : undefined));
      if (!file) return fail(FAKE_ERRORS.invalidRequest('no file in the multipart body'));
      if (file.size > limit) return fail(FAKE_ERRORS.entityTooLarge());
      const cache = form.get('cacheControl');
      return {
        bytes: Buffer.from(await file.arrayBuffer()),
        contentType: file.type || 'text/plain;charset=UTF-8',
        cacheControl: typeof cache === 'string' ? `max-age=${cache}` : 'no-cache',
      };
    }
    const parts: Buffer[] = [];
    let size = 0;
    for await (const part of request.raw) {
      size += (part as Buffer).length;
      // Past the limit, keep reading (so the client gets the answer) but keep nothing.
      if (size <= limit) parts.push(part as Buffer);
    }
    if (size > limit) return fail(FAKE_ERRORS.entityTooLarge());
    const cache = request.headers['cache-control'];
    return {
      bytes: Buffer.concat(parts),
      contentType: type || 'application/octet-stream',
      cacheControl: typeof cache === 'string' ? cache : 'no-cache',
    };
  }

  async function store(request: FastifyRequest, bucketName: string, key: string, upsert: boolean): Promise<FakeObject> {
    const bucket = bucketOrFail(bucketName);
    const limit = Math.min(globalLimit, bucket.file_size_limit ?? Number.POSITIVE_INFINITY);
    // The whole body is read before any answer, as a client expects.
    const upload = await readUpload(request, limit);
    if (rlsDenied) fail(FAKE_ERRORS.accessDenied());
    const existing = objects.get(`${bucketName}/${key}`);
    if (existing && !upsert) fail(FAKE_ERRORS.keyAlreadyExists());
    const at = iso();
    const object: FakeObject = { ...upload, id: existing?.id ?? randomUUID(), createdAt: existing?.createdAt ?? at, updatedAt: at };
    objects.set(`${bucketName}/${key}`, object);
    return object;
  }

  function serveObject(request: FastifyRequest, object: FakeObject, head: boolean): Reply {
    const headers: Record<string, string> = {
      'content-type': object.contentType,
      'cache-control': object.cacheControl,
      etag: etag(object),
      'last-modified': new Date(object.updatedAt).toUTCString(),
      'accept-ranges': 'bytes',
    };
    const size = object.bytes.length;
    const range = request.headers.range;
    if (typeof range === 'string' && !head) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      if (m && (m[1] !== '' || m[2] !== '')) {
        let start: number;
        let end: number;
        if (m[1] === '') {
          start = Math.max(0, size - Number(m[2]));
          end = size - 1;
        } else {
          start = Number(m[1]);
          end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
        }
        if (start >= size || start > end) return fail(FAKE_ERRORS.invalidRange());
        headers['content-range'] = `bytes ${start}-${end}/${size}`;
        return new Reply(206, object.bytes.subarray(start, end + 1), headers);
      }
    }
    if (head) return new Reply(200, null, { ...headers, 'content-length': String(size) });
    return new Reply(200, object.bytes, headers);
  }

  function list(bucketName: string, body: Record<string, unknown>): Reply {
    bucketOrFail(bucketName);
    let prefix = typeof body.prefix === 'string' ? body.prefix : '';
    if (prefix.length > 0 && !prefix.endsWith('/')) prefix += '/';
    const limit = typeof body.limit === 'number' ? body.limit : 100;
    const offset = typeof body.offset === 'number' ? body.offset : 0;
    const search = typeof body.search === 'string' ? body.search.toLowerCase() : '';
    const sortBy = (body.sortBy ?? {}) as { column?: string; order?: string };
    const entries = new Map<string, { name: string } & Record<string, unknown>>();
    for (const [fullKey, object] of objects) {
      if (!fullKey.startsWith(`${bucketName}/`)) continue;
      const key = fullKey.slice(bucketName.length + 1);
      if (!key.startsWith(prefix)) continue;
      const rest = key.slice(prefix.length);
      const slash = rest.indexOf('/');
      const name = slash === -1 ? rest : rest.slice(0, slash);
      if (search && !name.toLowerCase().startsWith(search)) continue;
      if (slash !== -1) {
        if (!entries.has(name)) entries.set(name, { name, id: null, updated_at: null, created_at: null, last_accessed_at: null, metadata: null });
      } else {
        entries.set(name, {
          name,
          id: object.id,
          updated_at: object.updatedAt,
          created_at: object.createdAt,
          last_accessed_at: object.updatedAt,
          metadata: fileMetadata(object),
        });
      }
    }
    const sorted = [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (sortBy.order === 'desc') sorted.reverse();
    return new Reply(200, sorted.slice(offset, offset + limit));
  }

  // --- the router --------------------------------------------------------------------------------
  function operationOf(method: string, path: string): string {
    if (path === '/bucket') return method === 'POST' ? 'createBucket' : 'listBuckets';
    if (path.startsWith('/bucket/')) return method === 'DELETE' ? 'deleteBucket' : method === 'POST' ? 'emptyBucket' : 'getBucket';
    if (path.startsWith('/object/list/')) return 'list';
    if (path.startsWith('/object/upload/sign/')) return method === 'PUT' ? 'uploadSigned' : 'signUpload';
    if (path.startsWith('/object/sign/')) return method === 'GET' ? 'signedDownload' : 'sign';
    if (path.startsWith('/object/info/')) return 'info';
    if (path.startsWith('/object/')) {
      if (method === 'DELETE') return 'remove';
      if (method === 'POST') return 'upload';
      if (method === 'PUT') return 'update';
      if (method === 'HEAD') return 'head';
      return 'download';
    }
    return 'unknown';
  }

  async function route(request: FastifyRequest, operation: string, path: string, query: URLSearchParams): Promise<Reply> {
    const method = request.method;
    // Signed URLs carry their own credential; everything else needs the key, and a wrong key is
    // answered "bucket not found", as the real server does.
    if (operation !== 'uploadSigned' && operation !== 'signedDownload' && !authorized(request)) {
      await readRaw(request.raw).catch(() => undefined);
      return fail(FAKE_ERRORS.noSuchBucket());
    }
    const afterPrefix = (prefix: string) => splitBucketPath(path.slice(prefix.length));
    switch (operation) {
      case 'listBuckets':
        return new Reply(200, [...buckets.values()]);
      case 'getBucket':
        return new Reply(200, bucketOrFail(path.slice('/bucket/'.length)));
      case 'createBucket': {
        const body = await readJson(request.raw);
        const name = typeof body.name === 'string' ? body.name : typeof body.id === 'string' ? body.id : '';
        if (!name) return fail(FAKE_ERRORS.invalidRequest('body must have required property name'));
        if (rlsDenied) return fail(FAKE_ERRORS.accessDenied());
        if (buckets.has(name)) return fail(FAKE_ERRORS.bucketAlreadyExists());
        addBucket(name, {
          public: body.public === true,
          file_size_limit: typeof body.file_size_limit === 'number' ? body.file_size_limit : null,
          allowed_mime_types: Array.isArray(body.allowed_mime_types) ? (body.allowed_mime_types as string[]) : null,
        });
        return new Reply(200, { name });
      }
      case 'deleteBucket': {
        const name = path.slice('/bucket/'.length);
        bucketOrFail(name);
        if ([...objects.keys()].some((k) => k.startsWith(`${name}/`))) return fail(FAKE_ERRORS.bucketNotEmpty());
        buckets.delete(name);
        return new Reply(200, { message: 'Successfully deleted' });
      }
      case 'emptyBucket': {
        const name = path.slice('/bucket/'.length).replace(/\/empty$/, '');
        bucketOrFail(name);
        for (const k of [...objects.keys()]) if (k.startsWith(`${name}/`)) objects.delete(k);
        return new Reply(200, { message: 'Successfully emptied' });
      }
      case 'list': {
        const body = await readJson(request.raw);
        return list(path.slice('/object/list/'.length), body);
      }
      case 'signUpload': {
        const { bucket, key } = afterPrefix('/object/upload/sign/');
        bucketOrFail(bucket);
        validKeyOrFail(key);
        await readRaw(request.raw);
        if (rlsDenied) return fail(FAKE_ERRORS.accessDenied());
        const token = signToken({ url: `${bucket}/${key}`, upsert: request.headers['x-upsert'] === 'true', iat: Math.floor(now() / 1000), exp: Math.floor(now() / 1000) + SIGNED_UPLOAD_TTL_S });
        return new Reply(200, { url: `/object/upload/sign/${encodePath(`${bucket}/${key}`)}?token=${token}`, token });
      }
      case 'uploadSigned': {
        const { bucket, key } = afterPrefix('/object/upload/sign/');
        let claims: Record<string, unknown>;
        try {
          claims = verifyToken(query.get('token') ?? undefined);
          if (claims.url !== `${bucket}/${key}`) fail(FAKE_ERRORS.invalidJwt('invalid signature'));
        } catch (err) {
          await readRaw(request.raw).catch(() => undefined);
          throw err;
        }
        await store(request, bucket, key, claims.upsert === true);
        return new Reply(200, { Key: `${bucket}/${key}` });
      }
      case 'sign': {
        const { bucket, key } = afterPrefix('/object/sign/');
        const body = await readJson(request.raw);
        bucketOrFail(bucket);
        objectOrFail(bucket, key);
        const expiresIn = typeof body.expiresIn === 'number' ? body.expiresIn : 60;
        const token = signToken({ url: `${bucket}/${key}`, iat: Math.floor(now() / 1000), exp: Math.floor(now() / 1000) + expiresIn });
        return new Reply(200, { signedURL: `/object/sign/${encodePath(`${bucket}/${key}`)}?token=${token}` });
      }
      case 'signedDownload': {
        const { bucket, key } = afterPrefix('/object/sign/');
        const claims = verifyToken(query.get('token') ?? undefined);
        if (claims.url !== `${bucket}/${key}`) fail(FAKE_ERRORS.invalidJwt('invalid signature'));
        bucketOrFail(bucket);
        return serveObject(request, objectOrFail(bucket, key), false);
      }
      case 'info': {
        const rest = path.slice('/object/info/'.length).replace(/^(authenticated|public)\//, '');
        const { bucket, key } = splitBucketPath(rest);
        bucketOrFail(bucket);
        const object = objectOrFail(bucket, key);
        return new Reply(200, {
          id: object.id,
          version: object.id,
          name: key,
          bucket_id: bucket,
          size: object.bytes.length,
          content_type: object.contentType,
          cache_control: object.cacheControl,
          etag: etag(object),
          metadata: {},
          last_modified: object.updatedAt,
          created_at: object.createdAt,
        });
      }
      case 'remove': {
        const bucket = path.slice('/object/'.length);
        const body = await readJson(request.raw);
        bucketOrFail(bucket);
        const prefixes = body.prefixes;
        if (!Array.isArray(prefixes) || prefixes.length === 0 || prefixes.length > 1000) {
          return fail(FAKE_ERRORS.invalidRequest('body/prefixes must NOT have more than 1000 items'));
        }
        const deleted: unknown[] = [];
        if (!rlsDenied) {
          for (const p of prefixes) {
            const key = typeof p === 'string' ? p : (p as { path?: string }).path;
            const object = key === undefined ? undefined : objects.get(`${bucket}/${key}`);
            if (key !== undefined && object) {
              objects.delete(`${bucket}/${key}`);
              deleted.push(objectRow(bucket, key, object));
            }
          }
        }
        return new Reply(200, deleted);
      }
      case 'upload':
      case 'update': {
        const { bucket, key } = afterPrefix('/object/');
        try {
          bucketOrFail(bucket);
          validKeyOrFail(key);
        } catch (err) {
          await readRaw(request.raw).catch(() => undefined);
          throw err;
        }
        const object = await store(request, bucket, key, operation === 'update' || request.headers['x-upsert'] === 'true');
        return new Reply(200, { Id: object.id, Key: `${bucket}/${key}` });
      }
      case 'download':
      case 'head': {
        const rest = path.slice('/object/'.length).replace(/^authenticated\//, '');
        const { bucket, key } = splitBucketPath(rest);
        bucketOrFail(bucket);
        return serveObject(request, objectOrFail(bucket, key), method === 'HEAD');
      }
      default:
        await readRaw(request.raw).catch(() => undefined);
        return new Reply(404, { statusCode: '404', error: 'Not Found', message: `Route ${method}:${path} not found` });
    }
  }

  function takeFault(method: string, path: string, operation: string): FakeFault | undefined {
    const line = `${method} ${path}`;
    const relative = path.startsWith(STORAGE_PREFIX) ? path.slice(STORAGE_PREFIX.length) : path;
    const hit = faults.find((f) =>
      typeof f.match === 'string'
        ? f.match === operation || line.startsWith(f.match) || path.startsWith(f.match) || relative.startsWith(f.match) || `${method} ${relative}`.startsWith(f.match)
        : f.match.test(line),
    );
    if (!hit) return undefined;
    hit.remaining -= 1;
    if (hit.remaining <= 0) faults = faults.filter((f) => f !== hit);
    return hit.fault;
  }

  const app = Fastify({ logger: false, forceCloseConnections: true });
  // Bodies are read by the handlers themselves: raw uploads, multipart, JSON.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request: FastifyRequest, _payload: unknown, done: (err: Error | null, body?: unknown) => void) => done(null));

  function sendError(reply: FastifyReply, body: FakeErrorBody) {
    const status = Number(body.statusCode) >= 500 ? Number(body.statusCode) : 400;
    return reply.status(status).header('content-type', 'application/json').send(JSON.stringify(body));
  }

  app.route({
    method: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'],
    url: `${STORAGE_PREFIX}/*`,
    exposeHeadRoute: false,
    handler: async (request, reply) => {
      const url = new URL(request.url, 'http://fake.invalid');
      const fullPath = url.pathname;
      let path: string;
      try {
        path = fullPath.slice(STORAGE_PREFIX.length).split('/').map(decodeURIComponent).join('/');
      } catch {
        path = fullPath.slice(STORAGE_PREFIX.length);
      }
      const operation = operationOf(request.method, path);
      (request as FastifyRequest & { fakeOperation?: string }).fakeOperation = operation;
      if (delayMs > 0) await sleep(delayMs, closing.signal);
      const fault = takeFault(request.method, fullPath, operation);
      if (fault === 'reset') {
        requests.push({ method: request.method, path: fullPath, status: 0, operation });
        reply.hijack();
        request.raw.socket.destroy();
        return;
      }
      if (fault !== undefined) {
        await readRaw(request.raw).catch(() => undefined);
        return sendError(reply, typeof fault === 'number' ? errorForStatus(fault) : fault);
      }
      try {
        const answer = await route(request, operation, path, url.searchParams);
        reply.status(answer.status).headers(answer.headers);
        if (answer.body === null) return reply.send();
        if (Buffer.isBuffer(answer.body)) return reply.send(answer.body);
        return reply.header('content-type', 'application/json').send(JSON.stringify(answer.body));
      } catch (err) {
        if (err instanceof StorageFailure) return sendError(reply, err.body);
        if (request.raw.destroyed || request.raw.errored) {
          // The client went away mid-body: nothing was stored and there is no one to answer.
          reply.hijack();
          request.raw.socket?.destroy();
          return;
        }
        return sendError(reply, FAKE_ERRORS.internal());
      }
    },
  });

  app.addHook('onResponse', async (request, reply) => {
    if (!request.url.startsWith(STORAGE_PREFIX)) return;
    const operation = (request as FastifyRequest & { fakeOperation?: string }).fakeOperation ?? 'unknown';
    requests.push({ method: request.method, path: request.url.split('?')[0]!, status: reply.statusCode, operation });
  });

  const control = {
    failNext(match: string | RegExp, fault: FakeFault, count = 1) {
      faults.push({ match, fault, remaining: count });
    },
    setDelayMs(ms: number) {
      delayMs = ms;
    },
    deleteBucket(name: string) {
      buckets.delete(name);
      for (const k of [...objects.keys()]) if (k.startsWith(`${name}/`)) objects.delete(k);
    },
    setRowLevelSecurityDenied(denied: boolean) {
      rlsDenied = denied;
    },
    advanceClock(ms: number) {
      clockOffsetMs += ms;
    },
    reset() {
      faults = [];
      delayMs = 0;
      rlsDenied = false;
      clockOffsetMs = 0;
      requests.length = 0;
    },
  };

  registerAdmin(app, control, { objects, buckets, requests });

  const address = await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });
  return {
    url: address.replace('localhost', '127.0.0.1'),
    serviceKey,
    objects,
    buckets,
    requests,
    ...control,
    async close() {
      closing.abort();
      await app.close();
    },
  };
}

/**
 * `/_fake/` admin API, for scripts that run the fake in another process:
 *   POST /_fake/fail {match, regex?, status | error | "reset", count?}    POST /_fake/delay {ms}
 *   POST /_fake/rls {denied}    DELETE /_fake/buckets/:name    POST /_fake/clock {advanceMs}
 *   POST /_fake/reset    GET /_fake/requests    GET /_fake/objects
 */
function registerAdmin(
  app: FastifyInstance,
  control: Pick<FakeSupabaseStorage, 'failNext' | 'setDelayMs' | 'deleteBucket' | 'setRowLevelSecurityDenied' | 'advanceClock' | 'reset'>,
  state: Pick<FakeSupabaseStorage, 'objects' | 'buckets' | 'requests'>,
): void {
  const json = (request: FastifyRequest) => readJson(request.raw).catch(() => ({}) as Record<string, unknown>);
  app.post('/_fake/fail', async (request, reply) => {
    const body = await json(request);
    if (typeof body.match !== 'string') return reply.status(400).send({ error: 'match (string) is required' });
    const match = body.regex === true ? new RegExp(body.match) : body.match;
    const fault = (body.status ?? body.error) as FakeFault | undefined;
    if (fault === undefined) return reply.status(400).send({ error: 'status or error is required' });
    control.failNext(match, fault, typeof body.count === 'number' ? body.count : 1);
    return { ok: true };
  });
  app.post('/_fake/delay', async (request) => {
    const body = await json(request);
    control.setDelayMs(typeof body.ms === 'number' ? body.ms : 0);
    return { ok: true };
  });
  app.post('/_fake/rls', async (request) => {
    const body = await json(request);
    control.setRowLevelSecurityDenied(body.denied === true);
    return { ok: true };
  });
  app.post('/_fake/clock', async (request) => {
    const body = await json(request);
    control.advanceClock(typeof body.advanceMs === 'number' ? body.advanceMs : 0);
    return { ok: true };
  });
  app.delete('/_fake/buckets/:name', async (request) => {
    control.deleteBucket((request.params as { name: string }).name);
    return { ok: true };
  });
  app.post('/_fake/reset', async () => {
    control.reset();
    return { ok: true };
  });
  app.get('/_fake/requests', async () => state.requests);
  app.get('/_fake/objects', async () =>
    [...state.objects].map(([key, o]) => ({ key, size: o.bytes.length, contentType: o.contentType })),
  );
}
