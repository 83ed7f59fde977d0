// A faithful in-memory fake of the Supabase Storage API (`${SUPABASE_URL}/storage/v1`) on
// 127.0.0.1, for the storage contract tests and for scripts that need a Supabase without a
// network. It answers what supabase-js 2.119 calls the way the open-source storage server
// (supabase/storage 1.11.2) answers, awkward parts included:
//
// - errors are HTTP 400 with the real status as a *string* `statusCode` in the body
//   (`{"statusCode":"404","error":"not_found","message":"Object not found","code":"NoSuchKey"}`);
//   only 5xx, an unsatisfiable range (416) and an unknown route (404) keep their own HTTP status;
// - keys are HS256 JWTs signed with the project's secret (`serviceKey`, `anonKey`, signKey()).
//   No Authorization header: InvalidRequest. A wrong, garbled or expired key: AccessDenied with
//   jose's message on bucket calls, upload, list, remove and sign, but NoSuchBucket on download
//   and info. The anon key meets row-level security: writes AccessDenied, get bucket
//   NoSuchBucket, reads NoSuchKey, list and remove `[]`. (`apikey` is the gateway's business.)
// - the path is percent-decoded segment by segment, as Fastify decodes the server's `*` param:
//   an unencoded `?` starts the query and `#` never arrives, so unencoded keys collide;
// - an upload's size is checked against the limits only when it declares a content-length; a
//   stream without one is stored whatever the bucket's `file_size_limit`;
// - signed upload URLs (`POST /object/upload/sign/...`) answer the key unencoded in `url`, and a
//   token (`{url, upsert, scope:"upload", iat, exp}`) that lives `signedUploadTtlSeconds` (the
//   server's default 60 s); signing an existing path without upsert is KeyAlreadyExists, a missing
//   bucket a 404 InvalidRequest, an invalid key is accepted (the PUT fails). The PUT needs no key;
//   its x-upsert is ignored (the token decides).
//
// Fault injection per test: failNext(), setDelayMs(), deleteBucket(), setRowLevelSecurityDenied(),
// setSignedUploadTtl(), advanceClock(); the same over HTTP under `/_fake/` for scripts (see
// registerAdmin).
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
  /** The request path as sent (still percent-encoded), without the query string. */
  path: string;
  status: number;
  /** upload, update, download, head, info, list, remove, sign, signedDownload, signUpload, uploadSigned, getBucket, listBuckets, createBucket, deleteBucket, emptyBucket, unknown. */
  operation: string;
}

/** The body of a storage error; the HTTP status is 400 unless `statusCode` is 5xx or 416. */
export interface FakeErrorBody {
  statusCode: string;
  error: string;
  message: string;
  code?: string;
}

/** What an injected fault answers: an HTTP status (4xx as the 400-with-statusCode form), an error body, or a dropped connection. */
export type FakeFault = number | FakeErrorBody | 'reset';

export interface FakeSupabaseStorageOptions {
  port?: number;
  /** Buckets that exist from the start (private). */
  buckets?: string[];
  /** The server-wide upload limit in bytes (the real default is 50 MB). */
  fileSizeLimit?: number;
  /** UPLOAD_SIGNED_URL_EXPIRATION_TIME: lifetime of a signed upload URL (the server's default 60 s; hosted Supabase documents 2 h). */
  signedUploadTtlSeconds?: number;
  /** The server's hard limits (a delete of more than 1,000 paths is refused); on by default. */
  hardLimits?: boolean;
}

export interface FakeSupabaseStorage {
  /** SUPABASE_URL to configure: the origin, WITHOUT `/storage/v1`. */
  readonly url: string;
  /** The service_role key: an HS256 JWT signed with the project's secret. */
  readonly serviceKey: string;
  /** The anon key: valid, but every table is behind row-level security. */
  readonly anonKey: string;
  /** `bucket/key` -> the object. */
  readonly objects: Map<string, FakeObject>;
  readonly buckets: Map<string, FakeBucket>;
  /** Every storage request answered, in order (not the `/_fake/` admin calls). */
  readonly requests: FakeRequest[];
  /** A key signed with the project's secret, for `role`, expiring after `expiresInSeconds` (negative: already expired). */
  signKey(role: string, expiresInSeconds?: number): string;
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
  /** The service key meets row-level security as the anon key does (a project whose policies refuse it). */
  setRowLevelSecurityDenied(denied: boolean): void;
  /** The lifetime of the signed upload URLs signed from now on. */
  setSignedUploadTtl(seconds: number): void;
  /** Moves the fake's clock forward (token expiry). */
  advanceClock(ms: number): void;
  /** Clears faults, delay, the RLS switch, the signed URL lifetime, the clock offset and the request log (keeps data). */
  reset(): void;
  close(): Promise<void>;
}

export const FAKE_ERRORS = {
  noSuchKey: (): FakeErrorBody => ({ statusCode: '404', error: 'not_found', message: 'Object not found', code: 'NoSuchKey' }),
  keyAlreadyExists: (): FakeErrorBody => ({ statusCode: '409', error: 'Duplicate', message: 'The resource already exists', code: 'KeyAlreadyExists' }),
  noSuchBucket: (): FakeErrorBody => ({ statusCode: '404', error: 'Bucket not found', message: 'Bucket not found', code: 'NoSuchBucket' }),
  bucketAlreadyExists: (): FakeErrorBody => ({ statusCode: '409', error: 'Duplicate', message: 'The resource already exists', code: 'BucketAlreadyExists' }),
  bucketNotEmpty: (): FakeErrorBody => ({ statusCode: '409', error: 'Bucket not empty', message: 'The bucket you tried to delete is not empty', code: 'BucketNotEmpty' }),
  invalidBucketName: (): FakeErrorBody => ({ statusCode: '400', error: 'Invalid Input', message: 'Bucket name invalid', code: 'InvalidBucketName' }),
  /** Row-level security refusing the role (`message` defaults to the policy's), or a rejected key (jose's message). */
  accessDenied: (message = 'new row violates row-level security policy'): FakeErrorBody => ({ statusCode: '403', error: 'Unauthorized', message, code: 'AccessDenied' }),
  entityTooLarge: (): FakeErrorBody => ({ statusCode: '413', error: 'Payload too large', message: 'The object exceeded the maximum allowed size', code: 'EntityTooLarge' }),
  invalidKey: (key: string): FakeErrorBody => ({ statusCode: '400', error: 'InvalidKey', message: `Invalid key: ${key}`, code: 'InvalidKey' }),
  /** Answered with HTTP 416, not 400. */
  invalidRange: (): FakeErrorBody => ({ statusCode: '416', error: 'invalid_range', message: 'invalid range provided', code: 'InvalidRange' }),
  /** A signed URL's token that does not verify (no `code`, as the server sends it). */
  invalidJwt: (message: string): FakeErrorBody => ({ statusCode: '400', error: 'InvalidJWT', message }),
  /** A signed URL's token for another path or action. */
  invalidSignature: (message = 'Invalid signature'): FakeErrorBody => ({ statusCode: '400', error: 'InvalidSignature', message }),
  /** A request that fails the route's schema (a missing header, property or query parameter). */
  invalidRequest: (message: string): FakeErrorBody => ({ statusCode: '400', error: 'Error', message, code: 'InvalidRequest' }),
  /** A foreign key to a missing row (signing an upload URL in a missing bucket): a 404 not about the object. */
  relatedResourceMissing: (): FakeErrorBody => ({ statusCode: '404', error: 'InvalidRequest', message: 'The related resource does not exist', code: 'InvalidRequest' }),
  internal: (): FakeErrorBody => ({ statusCode: '500', error: 'Internal', message: 'Internal Server Error', code: 'InternalError' }),
};

/** The 400-with-statusCode body for a bare status (failNext(op, 404)). */
function errorForStatus(status: number): FakeErrorBody {
  switch (status) {
    case 401:
      return { statusCode: '401', error: 'Unauthorized', message: 'Invalid JWT', code: 'InvalidJWT' };
    case 403:
      return FAKE_ERRORS.accessDenied();
    case 404:
      return FAKE_ERRORS.noSuchKey();
    case 409:
      return FAKE_ERRORS.keyAlreadyExists();
    case 413:
      return FAKE_ERRORS.entityTooLarge();
    case 416:
      return FAKE_ERRORS.invalidRange();
    case 429:
      return { statusCode: '429', error: 'too_many_requests', message: 'Too many requests', code: 'SlowDown' };
    default:
      return status >= 500
        ? { statusCode: String(status), error: 'Internal', message: 'Internal Server Error', code: 'InternalError' }
        : FAKE_ERRORS.invalidRequest(`injected ${status}`);
  }
}

/** The storage server's own rules (storage `isValidKey`, `isValidBucketName`). */
const VALID_KEY = /^(\w|\/|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$/;
const VALID_BUCKET_NAME = /^(\w|!|-|\.|\*|'|\(|\)| |&|\$|@|=|;|:|\+|,|\?)*$/;
const NON_ASCII = /[^\x00-\x7f]/;
const STORAGE_PREFIX = '/storage/v1';
const BULK_LIMIT = 1000;
const DEFAULT_SIGNED_UPLOAD_TTL_S = 60;
const ROW_LEVEL_SECURITY = 'new row violates row-level security policy';
const JOSE = {
  malformed: 'Invalid Compact JWS',
  signature: 'signature verification failed',
  expired: '"exp" claim timestamp check failed',
};

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

/** Who a request speaks for: the service role, a role behind row-level security, or a rejected key (jose's message). */
type Caller = { kind: 'service' } | { kind: 'restricted' } | { kind: 'rejected'; message: string };

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

/** Byte order of the UTF-8 names, as the server's "C" collation sorts them. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export async function startFakeSupabaseStorage(options: FakeSupabaseStorageOptions = {}): Promise<FakeSupabaseStorage> {
  const globalLimit = options.fileSizeLimit ?? 50 * 1024 * 1024;
  const hardLimits = options.hardLimits ?? true;
  const projectSecret = randomUUID();
  const objects = new Map<string, FakeObject>();
  const buckets = new Map<string, FakeBucket>();
  const requests: FakeRequest[] = [];
  let faults: Array<{ match: string | RegExp; fault: FakeFault; remaining: number }> = [];
  let delayMs = 0;
  let rlsDenied = false;
  let signedUploadTtlS = options.signedUploadTtlSeconds ?? DEFAULT_SIGNED_UPLOAD_TTL_S;
  let clockOffsetMs = 0;
  const closing = new AbortController();
  const now = () => Date.now() + clockOffsetMs;
  const nowS = () => Math.floor(now() / 1000);
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

  // --- JWTs: HS256 with the project's secret, for keys and for signed URLs -----------------------
  function signJwt(header: Record<string, unknown>, claims: Record<string, unknown>): string {
    const head = Buffer.from(JSON.stringify(header)).toString('base64url');
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
    const sig = createHmac('sha256', projectSecret).update(`${head}.${body}`).digest('base64url');
    return `${head}.${body}.${sig}`;
  }
  function signKey(role: string, expiresInSeconds = 10 * 365 * 24 * 3600): string {
    return signJwt({ alg: 'HS256', typ: 'JWT' }, { iss: 'supabase', role, iat: nowS(), exp: nowS() + expiresInSeconds });
  }
  /** The claims of a valid token, or jose's message for why it is not. */
  function verifyJwt(token: string): { claims: Record<string, unknown> } | { problem: string } {
    const parts = token.split('.');
    if (parts.length !== 3) return { problem: JOSE.malformed };
    let claims: Record<string, unknown>;
    try {
      JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
      claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    } catch {
      return { problem: JOSE.malformed };
    }
    const expected = createHmac('sha256', projectSecret).update(`${parts[0]}.${parts[1]}`).digest();
    const given = Buffer.from(parts[2]!, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { problem: JOSE.signature };
    if (typeof claims.exp === 'number' && claims.exp <= nowS()) return { problem: JOSE.expired };
    return { claims };
  }
  const serviceKey = signKey('service_role');
  const anonKey = signKey('anon');

  // --- helpers ---------------------------------------------------------------------------------
  function callerOf(request: FastifyRequest): Caller {
    const header = request.headers.authorization;
    if (typeof header !== 'string') return fail(FAKE_ERRORS.invalidRequest("headers must have required property 'authorization'"));
    const verified = verifyJwt(header.replace(/^Bearer\s+/i, ''));
    if ('problem' in verified) return { kind: 'rejected', message: verified.problem };
    return verified.claims.role === 'service_role' && !rlsDenied ? { kind: 'service' } : { kind: 'restricted' };
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
  function objectHeaders(object: FakeObject): Record<string, string> {
    return {
      etag: etag(object),
      'cache-control': object.cacheControl,
      'last-modified': new Date(object.updatedAt).toUTCString(),
    };
  }
  /** A row as remove answers it. */
  function deletedRow(bucket: string, key: string, object: FakeObject) {
    return {
      bucket_id: bucket,
      name: key,
      id: object.id,
      owner: '',
      owner_id: '',
      version: object.id,
      created_at: object.createdAt,
      updated_at: object.updatedAt,
      last_accessed_at: object.updatedAt,
      metadata: fileMetadata(object),
      user_metadata: null,
    };
  }

  /** Reads an upload body (raw or multipart); the limit applies to a declared length only. */
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
      // The multipart parser counts the file's bytes, so its limit always applies.
      if (file.size > limit) return fail(FAKE_ERRORS.entityTooLarge());
      const cache = form.get('cacheControl');
      return {
        bytes: Buffer.from(await file.arrayBuffer()),
        contentType: file.type || 'text/plain;charset=UTF-8',
        cacheControl: typeof cache === 'string' ? `max-age=${cache}` : 'no-cache',
      };
    }
    const declared = request.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) return fail(FAKE_ERRORS.entityTooLarge());
    const cache = request.headers['cache-control'];
    return {
      bytes: await readRaw(request.raw),
      contentType: type || 'application/octet-stream',
      cacheControl: typeof cache === 'string' ? cache : 'no-cache',
    };
  }

  async function store(request: FastifyRequest, bucketName: string, key: string, upsert: boolean): Promise<FakeObject> {
    const bucket = bucketOrFail(bucketName);
    validKeyOrFail(key);
    const limit = Math.min(globalLimit, bucket.file_size_limit ?? Number.POSITIVE_INFINITY);
    // The whole body is read before any answer, as a client expects.
    const upload = await readUpload(request, limit);
    const existing = objects.get(`${bucketName}/${key}`);
    if (existing && !upsert) fail(FAKE_ERRORS.keyAlreadyExists());
    const at = iso();
    const object: FakeObject = { ...upload, id: existing?.id ?? randomUUID(), createdAt: existing?.createdAt ?? at, updatedAt: at };
    objects.set(`${bucketName}/${key}`, object);
    return object;
  }

  /** The claims of a signed URL's token for `bucket/key` and `scope`, or the server's refusal. */
  function signedClaims(token: string | null, bucket: string, key: string, scope: 'upload' | 'download'): Record<string, unknown> {
    if (token === null) return fail(FAKE_ERRORS.invalidRequest("querystring must have required property 'token'"));
    const verified = verifyJwt(token);
    if ('problem' in verified) return fail(FAKE_ERRORS.invalidJwt(verified.problem));
    if (verified.claims.scope !== scope) return fail(FAKE_ERRORS.invalidSignature(`Token is not scoped for ${scope}`));
    if (verified.claims.url !== `${bucket}/${key}`) return fail(FAKE_ERRORS.invalidSignature());
    return verified.claims;
  }

  function serveObject(request: FastifyRequest, object: FakeObject, head: boolean): Reply {
    const headers: Record<string, string> = {
      ...objectHeaders(object),
      'content-type': object.contentType,
      'accept-ranges': 'bytes',
      'x-robots-tag': 'none',
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
        // Also every range of an empty object.
        if (start >= size || start > end) return fail(FAKE_ERRORS.invalidRange());
        headers['content-range'] = `bytes ${start}-${end}/${size}`;
        return new Reply(206, object.bytes.subarray(start, end + 1), headers);
      }
    }
    if (head) return new Reply(200, null, { ...headers, 'content-length': String(size) });
    return new Reply(200, object.bytes, headers);
  }

  function list(bucketName: string, body: Record<string, unknown>): Reply {
    if (!buckets.has(bucketName)) return new Reply(200, []);
    let prefix = typeof body.prefix === 'string' ? body.prefix : '';
    if (prefix.length > 0 && !prefix.endsWith('/')) prefix += '/';
    const limit = typeof body.limit === 'number' ? body.limit : 100;
    const offset = typeof body.offset === 'number' ? body.offset : 0;
    const search = typeof body.search === 'string' ? body.search.toLowerCase() : '';
    const sortBy = (body.sortBy ?? {}) as { column?: string; order?: string };
    // Each entry with the path it sorts by: the server orders the objects' full names, so a
    // folder `a` (`a/...`) comes after `a-sibling` (`a-sibling/...`): `-` sorts before `/`.
    const entries = new Map<string, { sortKey: string; entry: { name: string } & Record<string, unknown> }>();
    for (const [fullKey, object] of objects) {
      if (!fullKey.startsWith(`${bucketName}/`)) continue;
      const key = fullKey.slice(bucketName.length + 1);
      if (!key.startsWith(prefix)) continue;
      const rest = key.slice(prefix.length);
      const slash = rest.indexOf('/');
      const name = slash === -1 ? rest : rest.slice(0, slash);
      if (search && !name.toLowerCase().startsWith(search)) continue;
      if (slash !== -1) {
        if (!entries.has(name)) entries.set(name, { sortKey: `${name}/`, entry: { name, id: null, updated_at: null, created_at: null, last_accessed_at: null, metadata: null } });
      } else {
        entries.set(name, {
          sortKey: name,
          entry: { name, id: object.id, updated_at: object.updatedAt, created_at: object.createdAt, last_accessed_at: object.updatedAt, metadata: fileMetadata(object) },
        });
      }
    }
    const sorted = [...entries.values()].sort((a, b) => byteOrder(a.sortKey, b.sortKey)).map((e) => e.entry);
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

  /** Operations whose signed URL is the credential. */
  const KEYLESS = new Set(['uploadSigned', 'signedDownload', 'unknown']);
  /** Operations that answer a rejected key as a missing bucket (they look the object up first). */
  const READS = new Set(['download', 'head', 'info']);

  async function route(request: FastifyRequest, operation: string, path: string, query: URLSearchParams): Promise<Reply> {
    const method = request.method;
    const caller: Caller = KEYLESS.has(operation) ? { kind: 'service' } : callerOf(request);
    if (caller.kind === 'rejected') return fail(READS.has(operation) ? FAKE_ERRORS.noSuchBucket() : FAKE_ERRORS.accessDenied(caller.message));
    const restricted = caller.kind === 'restricted';
    const afterPrefix = (prefix: string) => splitBucketPath(path.slice(prefix.length));
    switch (operation) {
      case 'listBuckets':
        return new Reply(200, restricted ? [] : [...buckets.values()]);
      case 'getBucket':
        if (restricted) return fail(FAKE_ERRORS.noSuchBucket());
        return new Reply(200, bucketOrFail(path.slice('/bucket/'.length)));
      case 'createBucket': {
        const body = await readJson(request.raw);
        const name = typeof body.name === 'string' ? body.name : typeof body.id === 'string' ? body.id : '';
        if (!name) return fail(FAKE_ERRORS.invalidRequest("body must have required property 'name'"));
        if (name.length > 63 || !VALID_BUCKET_NAME.test(name)) return fail(FAKE_ERRORS.invalidBucketName());
        if (restricted) return fail(FAKE_ERRORS.accessDenied());
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
        if (restricted) return fail(FAKE_ERRORS.noSuchBucket());
        bucketOrFail(name);
        if ([...objects.keys()].some((k) => k.startsWith(`${name}/`))) return fail(FAKE_ERRORS.bucketNotEmpty());
        buckets.delete(name);
        return new Reply(200, { message: 'Successfully deleted' });
      }
      case 'emptyBucket': {
        const name = path.slice('/bucket/'.length).replace(/\/empty$/, '');
        if (restricted) return fail(FAKE_ERRORS.noSuchBucket());
        bucketOrFail(name);
        for (const k of [...objects.keys()]) if (k.startsWith(`${name}/`)) objects.delete(k);
        return new Reply(200, { message: 'Successfully emptied' });
      }
      case 'list': {
        const body = await readJson(request.raw);
        return restricted ? new Reply(200, []) : list(path.slice('/object/list/'.length), body);
      }
      case 'signUpload': {
        const { bucket, key } = afterPrefix('/object/upload/sign/');
        await readRaw(request.raw);
        if (restricted) return fail(FAKE_ERRORS.accessDenied());
        const upsert = request.headers['x-upsert'] === 'true';
        if (!upsert && objects.has(`${bucket}/${key}`)) return fail(FAKE_ERRORS.keyAlreadyExists());
        if (!buckets.has(bucket)) return fail(FAKE_ERRORS.relatedResourceMissing());
        // The key is not validated here: an invalid one fails on the PUT.
        const token = signJwt({ alg: 'HS256' }, { url: `${bucket}/${key}`, upsert, scope: 'upload', iat: nowS(), exp: nowS() + signedUploadTtlS });
        // The path goes back as it was decoded, unencoded.
        return new Reply(200, { url: `/object/upload/sign/${bucket}/${key}?token=${token}`, token });
      }
      case 'uploadSigned': {
        const { bucket, key } = afterPrefix('/object/upload/sign/');
        const claims = signedClaims(query.get('token'), bucket, key, 'upload');
        await store(request, bucket, key, claims.upsert === true);
        return new Reply(200, { Key: `${bucket}/${key}` });
      }
      case 'sign': {
        const { bucket, key } = afterPrefix('/object/sign/');
        const body = await readJson(request.raw);
        if (restricted) return fail(FAKE_ERRORS.noSuchKey());
        bucketOrFail(bucket);
        objectOrFail(bucket, key);
        const expiresIn = typeof body.expiresIn === 'number' ? body.expiresIn : 60;
        const token = signJwt({ alg: 'HS256' }, { url: `${bucket}/${key}`, scope: 'download', iat: nowS(), exp: nowS() + expiresIn });
        return new Reply(200, { signedURL: `/object/sign/${bucket}/${key}?token=${token}` });
      }
      case 'signedDownload': {
        const { bucket, key } = afterPrefix('/object/sign/');
        signedClaims(query.get('token'), bucket, key, 'download');
        bucketOrFail(bucket);
        return serveObject(request, objectOrFail(bucket, key), false);
      }
      case 'info': {
        const rest = path.slice('/object/info/'.length).replace(/^(authenticated|public)\//, '');
        const { bucket, key } = splitBucketPath(rest);
        if (NON_ASCII.test(key)) return fail(FAKE_ERRORS.invalidKey(key));
        if (restricted) return fail(FAKE_ERRORS.noSuchKey());
        bucketOrFail(bucket);
        const object = objectOrFail(bucket, key);
        return new Reply(
          200,
          {
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
          },
          objectHeaders(object),
        );
      }
      case 'remove': {
        const bucket = path.slice('/object/'.length);
        const body = await readJson(request.raw);
        const prefixes = body.prefixes;
        if (!Array.isArray(prefixes)) return fail(FAKE_ERRORS.invalidRequest("body must have required property 'prefixes'"));
        if (prefixes.length === 0) return fail(FAKE_ERRORS.invalidRequest('body/prefixes must NOT have fewer than 1 items'));
        if (hardLimits && prefixes.length > BULK_LIMIT) {
          return fail(FAKE_ERRORS.invalidRequest(`Bulk object requests are limited to ${BULK_LIMIT} objects per request.`));
        }
        const deleted: unknown[] = [];
        if (!restricted) {
          for (const p of prefixes) {
            const key = typeof p === 'string' ? p : (p as { path?: string }).path;
            const object = key === undefined ? undefined : objects.get(`${bucket}/${key}`);
            if (key !== undefined && object) {
              objects.delete(`${bucket}/${key}`);
              deleted.push(deletedRow(bucket, key, object));
            }
          }
        }
        return new Reply(200, deleted);
      }
      case 'upload':
      case 'update': {
        const { bucket, key } = afterPrefix('/object/');
        if (restricted) return fail(FAKE_ERRORS.accessDenied());
        const object = await store(request, bucket, key, operation === 'update' || request.headers['x-upsert'] === 'true');
        return new Reply(200, { Id: object.id, Key: `${bucket}/${key}` });
      }
      case 'download':
      case 'head': {
        const rest = path.slice('/object/'.length).replace(/^authenticated\//, '');
        const { bucket, key } = splitBucketPath(rest);
        if (NON_ASCII.test(key)) return fail(FAKE_ERRORS.invalidKey(key));
        if (restricted) return fail(FAKE_ERRORS.noSuchKey());
        bucketOrFail(bucket);
        return serveObject(request, objectOrFail(bucket, key), method === 'HEAD');
      }
      default:
        return new Reply(404, { statusCode: '404', error: 'Not Found', message: `Route ${method}:${STORAGE_PREFIX}${path} not found`, code: 'InvalidRequest' });
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
    const real = Number(body.statusCode);
    const status = real >= 500 || real === 416 ? real : 400;
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
        // Each segment decoded once, as the server's router decodes its `*` parameter.
        path = fullPath.slice(STORAGE_PREFIX.length).split('/').map(decodeURIComponent).join('/');
      } catch {
        await readRaw(request.raw).catch(() => undefined);
        return sendError(reply, FAKE_ERRORS.invalidRequest(`'${fullPath}' is not a valid url component`));
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
        if (err instanceof StorageFailure) {
          // A refusal before the body was read: read it, so the client gets the answer.
          if (!request.raw.readableEnded) await readRaw(request.raw).catch(() => undefined);
          return sendError(reply, err.body);
        }
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
    setSignedUploadTtl(seconds: number) {
      signedUploadTtlS = seconds;
    },
    advanceClock(ms: number) {
      clockOffsetMs += ms;
    },
    reset() {
      faults = [];
      delayMs = 0;
      rlsDenied = false;
      signedUploadTtlS = options.signedUploadTtlSeconds ?? DEFAULT_SIGNED_UPLOAD_TTL_S;
      clockOffsetMs = 0;
      requests.length = 0;
    },
  };

  registerAdmin(app, control, { objects, buckets, requests });

  const address = await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });
  return {
    url: address.replace('localhost', '127.0.0.1'),
    serviceKey,
    anonKey,
    objects,
    buckets,
    requests,
    signKey,
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
 *   POST /_fake/signed-upload-ttl {seconds}    POST /_fake/reset    GET /_fake/requests
 *   GET /_fake/objects
 */
function registerAdmin(
  app: FastifyInstance,
  control: Pick<FakeSupabaseStorage, 'failNext' | 'setDelayMs' | 'deleteBucket' | 'setRowLevelSecurityDenied' | 'setSignedUploadTtl' | 'advanceClock' | 'reset'>,
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
  app.post('/_fake/signed-upload-ttl', async (request, reply) => {
    const body = await json(request);
    if (typeof body.seconds !== 'number' || !(body.seconds > 0)) return reply.status(400).send({ error: 'seconds (a positive number) is required' });
    control.setSignedUploadTtl(body.seconds);
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
