// The process logger: pino JSON to stdout, or readable lines (pino-pretty) for a person at a
// terminal. Services derive child loggers that carry the request id (HTTP) or the job's request
// and correlation ids (worker), so one upload can be followed across the api, the queue and the
// worker.
//
// Every line has `level`, `time`, `service` and `msg`; the other stable fields are `requestId`,
// `documentId`, `correlationId`, `run`, `stage`, `durationMs` and `err` (docs/OPERATIONS.md).
//
// Secrets never reach a line:
// - pino's redaction censors credentials by name: fields named like one (token, secret,
//   password, apiKey, signature...) at the top of a line, and the authorization, cookie,
//   API-key and signature headers under `req.headers`, `request.headers`, `res.headers`,
//   `response.headers` and `err.headers`;
// - the second level (`headers.authorization`, `auth.token`, `upload.url`) is the log formatter's:
//   pino 10's redaction (@pinojs/redact) is no longer compiled code, and a path with a wildcard
//   first (`*.token`) sends every field of every line through it: with these names as `*.name`
//   paths a two-line benchmark took 38 µs a line, against 1.2 µs with this formatter (1.1 with no
//   redaction at all). The formatter looks at the own keys of the line's plain-object fields only
//   (not errors, arrays or class instances), and copies nothing unless it changes something;
// - serializers replace the query values of URL fields (`url`, `signedUrl`, `uploadUrl`, and
//   `req.url`): a signed URL's credential is its query (`?token=`, `X-Amz-Signature=`), and
//   redaction matches names, not values. A serializer runs only when the line has the field.
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger, type LoggerOptions as PinoOptions } from 'pino';

export type { Logger };

/** json: one JSON object per line (machines, Fly logs); pretty: readable lines; auto: pretty on a TTY. */
export type LogFormat = 'json' | 'pretty' | 'auto';

export interface LoggerOptions {
  /** Default json: only the CLI chooses by the terminal (LOG_FORMAT, config.ts). */
  format?: LogFormat;
  /**
   * The `service` of lines whose logger does not name one (default `docpipe`): the CLI passes its
   * command (`all`, `api`, `migrate`...). The HTTP apps and the worker bind their own.
   */
  service?: string;
  /** Where JSON lines go (default stdout); tests pass a collector. */
  destination?: DestinationStream;
}

export const REDACTED = '[redacted]';

/**
 * Field names censored at the first and the second level of a line (`token`, `auth.token`,
 * `headers.authorization`); at the second level whatever their case (`Authorization`).
 */
export const SECRET_FIELDS: readonly string[] = [
  'token', 'accessToken', 'access_token', 'refreshToken', 'refresh_token', 'idToken', 'id_token',
  'secret', 'clientSecret', 'client_secret', 'webhookSecret', 'signingSecret', 'jwtSecret',
  'password', 'passwd',
  // Not plain `key`: it names storage keys (documents/<id>/original), which an operator needs.
  'apiKey', 'apikey', 'api_key', 'serviceKey', 'serviceRoleKey', 'privateKey', 'private_key',
  'signature',
  'authorization', 'proxy-authorization', 'cookie', 'set-cookie',
  'x-api-key', 'lc-signature', 'x-docpipe-webhook-token', 'x-webhook-signature',
];

/** Request and response headers that carry credentials. */
export const SECRET_HEADERS: readonly string[] = [
  'authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'apikey', 'lc-signature', 'x-docpipe-webhook-token', 'x-webhook-signature',
];

/** Where headers sit one level deeper than `headers.*` (which the second-level rule covers). */
const HEADER_HOLDERS = ['req', 'request', 'res', 'response', 'err'];

/** Fields holding URLs whose query may be a credential (a signed URL's `token=`, `X-Amz-Signature=`). */
export const URL_FIELDS: readonly string[] = ['url', 'signedUrl', 'uploadUrl'];

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;
const topLevel = (name: string) => (IDENTIFIER.test(name) ? name : `["${name}"]`);
const segment = (name: string) => (IDENTIFIER.test(name) ? `.${name}` : `["${name}"]`);

/** pino's redaction: literal paths only (no wildcard), each costing nothing to a line without its field. */
export const REDACT_PATHS: readonly string[] = [
  ...SECRET_FIELDS.map(topLevel),
  ...HEADER_HOLDERS.flatMap((holder) => SECRET_HEADERS.map((header) => `${holder}.headers${segment(header)}`)),
];

/**
 * A URL with the values of its query replaced (`/v1/storage/upload?token=[redacted]`), the names
 * kept; its fragment dropped. Anything else is returned as it is.
 */
export function withoutQueryValues(value: unknown): unknown {
  const text = value instanceof URL ? value.href : value;
  if (typeof text !== 'string') return value;
  const q = text.indexOf('?');
  const hash = text.indexOf('#');
  if (q < 0) return hash < 0 ? value : text.slice(0, hash);
  const query = text.slice(q + 1, hash > q ? hash : undefined);
  const names = query.split('&').filter(Boolean).map((pair) => {
    const eq = pair.indexOf('=');
    return eq < 0 ? pair : `${pair.slice(0, eq)}=${REDACTED}`;
  });
  return `${text.slice(0, q)}?${names.join('&')}`;
}

interface RequestLike {
  method?: unknown;
  url?: unknown;
  ip?: unknown;
  host?: unknown;
  headers?: Record<string, unknown>;
  socket?: { remoteAddress?: unknown; remotePort?: unknown } | null;
  raw?: unknown;
}

/**
 * `req`: a Fastify request or a Node IncomingMessage becomes what Fastify's own serializer makes
 * of it (method, url, host, address), its url without query values; a plain object keeps its
 * fields (redaction then censors its credential headers), its url likewise.
 */
function requestSerializer(req: unknown): unknown {
  if (req === null || typeof req !== 'object') return req;
  const r = req as RequestLike;
  if (r.socket !== undefined || r.raw !== undefined) {
    return {
      method: r.method,
      url: withoutQueryValues(r.url),
      version: r.headers?.['accept-version'],
      host: r.host ?? r.headers?.host,
      remoteAddress: r.ip ?? r.socket?.remoteAddress,
      remotePort: r.socket?.remotePort,
    };
  }
  return 'url' in r ? { ...r, url: withoutQueryValues(r.url) } : r;
}

/** Second-level rules, by lower-cased field name: censor, or keep a URL without its query values. */
const SECOND_LEVEL = new Map<string, (value: unknown) => unknown>([
  ...SECRET_FIELDS.map((name) => [name.toLowerCase(), () => REDACTED] as const),
  ...URL_FIELDS.map((name) => [name.toLowerCase(), withoutQueryValues] as const),
]);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * pino's `formatters.log`: the second level of a line. Looks into its plain-object fields only
 * (not arrays, errors, requests or class instances, whose serializers decide what is written),
 * and returns the line itself unless something was censored: then shallow copies, so the
 * caller's objects are never changed.
 */
export function censorSecondLevel(line: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | null = null;
  for (const field in line) {
    const value = line[field];
    if (!isPlainObject(value)) continue;
    let copy: Record<string, unknown> | null = null;
    for (const name in value) {
      const rule = SECOND_LEVEL.get(name.toLowerCase());
      if (!rule) continue;
      const before = value[name];
      const after = rule(before);
      if (after !== before) (copy ??= { ...value })[name] = after;
    }
    if (copy) (out ??= { ...line })[field] = copy;
  }
  return out ?? line;
}

export const SERIALIZERS = {
  err: pino.stdSerializers.err,
  req: requestSerializer,
  url: withoutQueryValues,
  signedUrl: withoutQueryValues,
  uploadUrl: withoutQueryValues,
};

/** What the mixin returns when the logger already names its service: merged as is, never copied. */
const NOTHING: Record<string, never> = Object.freeze({}) as Record<string, never>;
const { chindingsSym } = pino.symbols;

export function createLogger(level: string, base: Record<string, unknown> = {}, options: LoggerOptions = {}): Logger {
  // `service` is not bound to the root: the HTTP apps and the worker bind their own on child
  // loggers, and pino would then write the key twice. It is added to the lines of loggers that
  // name none, by a check of their bindings (a string search, no allocation otherwise).
  const { service: baseService, ...rest } = base;
  const service = String(options.service ?? baseService ?? 'docpipe');
  const settings: PinoOptions = {
    level,
    base: { pid: process.pid, ...rest },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: [...REDACT_PATHS], censor: REDACTED },
    serializers: SERIALIZERS,
    formatters: { log: censorSecondLevel },
    mixin: (_object, _level, logger) => ((logger as unknown as Record<symbol, string>)[chindingsSym]?.includes('"service":') ? NOTHING : { service }),
    mixinMergeStrategy: (object, mixed) => (mixed === NOTHING ? object : Object.assign(mixed, object)),
  };
  const format = options.format ?? 'json';
  const pretty = format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true) ? prettyStream() : null;
  const destination = pretty ?? options.destination;
  return destination ? pino(settings, destination) : pino(settings);
}

/**
 * pino-pretty formatting each line synchronously on this thread (not pino's worker-thread
 * transport): lines stay in order with what the CLI prints itself, and none is lost when the
 * process exits right after logging. pino-pretty is a devDependency: a production install may not
 * have it, and then the logs stay JSON, silently (production wants JSON anyway).
 */
function prettyStream(): DestinationStream | null {
  let prettyFactory: typeof import('pino-pretty').prettyFactory;
  try {
    prettyFactory = (createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty')).prettyFactory;
  } catch {
    return null;
  }
  const prettify = prettyFactory({ translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true });
  const out = pino.destination({ dest: 1, sync: true });
  return { write: (line: string) => void out.write(prettify(line)) };
}
