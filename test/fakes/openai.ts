// A faithful fake of OpenAI's embeddings API over real HTTP on 127.0.0.1, for tests and for
// scripts/fakes.ts. It reproduces the awkward parts of the real API (docs/PROVIDERS.md,
// "OpenAI"): Bearer auth with OpenAI's error objects, the request limits (8191 tokens per
// input, 2048 inputs, 300,000 tokens per request, counted with cl100k_base), `dimensions`
// only on text-embedding-3 models, base64 (the SDK's default) and float encodings, 429s with
// Retry-After and x-ratelimit-* headers, and its own per-minute limits.
//
// Vectors are deterministic per text (the local hashing embedder at the requested size), so
// equal texts get equal vectors and tests can compare. Faults are injected per test with the
// methods of the returned object, or over HTTP under /_fake/ (no auth: loopback only).
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyReply } from 'fastify';
import { decode, encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import type { Embedder } from '../../src/providers/types.ts';

export interface FakeOpenAIOptions {
  /** The key clients must send; default a random `sk-test-...`. */
  apiKey?: string;
  /** Default 0 (any free port). */
  port?: number;
  /** The fake's own limits (429 once exceeded within a sliding minute). Default 10000 / 10,000,000. */
  requestsPerMinute?: number;
  tokensPerMinute?: number;
}

export interface FakeRequest {
  inputs: string[];
  model: string | undefined;
  dimensions: number | undefined;
  encodingFormat: string | undefined;
  /** Status of the answer; 0 until it is sent. */
  status: number;
  /** Tokens of the inputs as the fake counts them (cl100k_base). */
  tokens: number;
  at: number;
}

export interface FailOptions {
  /** Sent as the `retry-after` header (seconds, or an HTTP date). */
  retryAfter?: string;
  /** Sent as the `retry-after-ms` header. */
  retryAfterMs?: string;
  /** Let this many more requests succeed before the failures start (a fault mid-document). */
  afterSuccesses?: number;
}

export interface StormOptions {
  /** Share of requests answered 429 (0..1). */
  probability?: number;
  /** Every Nth request (1: all) answered 429. */
  everyNth?: number;
  /** `retry-after-ms` of the 429s; default 20. */
  retryAfterMs?: number;
  /** How long the storm lasts; default until stopStorm() or reset(). */
  durationMs?: number;
}

export interface FakeOpenAI {
  /** Base URL INCLUDING /v1, as OPENAI_BASE_URL and the SDK's baseURL expect. */
  url: string;
  /** Origin without /v1 (the admin API lives at `${origin}/_fake/`). */
  origin: string;
  port: number;
  apiKey: string;
  /** Every POST /v1/embeddings, in arrival order. */
  requests: FakeRequest[];
  /** Inputs embedded successfully (200 answers), duplicates included. */
  readonly embeddedInputs: number;
  /** Per text: how many times it was embedded successfully. */
  embeddedCounts: Map<string, number>;
  timesEmbedded(text: string): number;
  /** The next `count` embeddings requests (after auth) answer `status` (429: rate_limit_exceeded, 5xx: server_error). */
  failNext(status: number, count?: number, options?: FailOptions): void;
  /** A sustained share of requests answered 429 with retry-after-ms. */
  rateLimitStorm(options: StormOptions): void;
  stopStorm(): void;
  /** Every answer is delayed by `ms` (0: none). */
  setDelayMs(ms: number): void;
  /** Clears faults, the storm, the delay, the request log and the counters. */
  reset(): void;
  close(): Promise<void>;
}

const NATIVE_DIMENSIONS: Record<string, number> = {
  'text-embedding-3-small': 1536,
  'text-embedding-3-large': 3072,
  'text-embedding-ada-002': 1536,
};
const MAX_INPUTS = 2048;
const MAX_INPUT_TOKENS = 8191;
const MAX_REQUEST_TOKENS = 300_000;
const ENCODE_OPTIONS = { disallowedSpecial: new Set<string>() };
const INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

interface ApiErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly body: ApiErrorBody,
    readonly headers: Record<string, string> = {},
  ) {
    super(body.message);
  }
}

function invalid(message: string, param: string | null = null, code: string | null = null): HttpFailure {
  return new HttpFailure(400, { message, type: 'invalid_request_error', param, code });
}

export async function startFakeOpenAI(options: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  const apiKey = options.apiKey ?? `sk-test-${randomBytes(12).toString('hex')}`;
  const rpm = options.requestsPerMinute ?? 10_000;
  const tpm = options.tokensPerMinute ?? 10_000_000;

  const requests: FakeRequest[] = [];
  const embeddedCounts = new Map<string, number>();
  let embeddedInputs = 0;
  let failures: { status: number; options: FailOptions; notBefore: number }[] = [];
  let successes = 0;
  let storm: (Required<Pick<StormOptions, 'retryAfterMs'>> & StormOptions & { until: number; seen: number }) | null = null;
  let delayMs = 0;
  /** Sliding minute of accepted requests: [time, tokens]. */
  let window: [number, number][] = [];
  const pendingDelays = new Set<AbortController>();
  const embedders = new Map<number, Embedder>();

  function embedderFor(dimensions: number): Embedder {
    let embedder = embedders.get(dimensions);
    if (!embedder) {
      embedder = createLocalEmbedder({ dimensions });
      embedders.set(dimensions, embedder);
    }
    return embedder;
  }

  const app = Fastify({ logger: false, bodyLimit: 64 * 1024 * 1024, forceCloseConnections: true });

  function sendError(reply: FastifyReply, failure: HttpFailure): FastifyReply {
    return reply.code(failure.status).headers(failure.headers).send({ error: failure.body });
  }

  app.setErrorHandler((err: Error & { statusCode?: number }, _request, reply) => {
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    const message =
      status === 400
        ? `We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)`
        : status === 500
          ? 'The server had an error while processing your request. Sorry about that!'
          : err.message;
    void reply.code(status).send({ error: { message, type: status === 500 ? 'server_error' : 'invalid_request_error', param: null, code: null } });
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({
      error: { message: `Invalid URL (${request.method} ${request.url.split('?')[0]})`, type: 'invalid_request_error', param: null, code: null },
    });
  });

  function rateLimitHeaders(now: number): Record<string, string> {
    window = window.filter(([t]) => t > now - 60_000);
    const usedTokens = window.reduce((sum, [, tokens]) => sum + tokens, 0);
    const oldest = window[0]?.[0];
    const reset = oldest === undefined ? 0 : oldest + 60_000 - now;
    return {
      'x-ratelimit-limit-requests': String(rpm),
      'x-ratelimit-limit-tokens': String(tpm),
      'x-ratelimit-remaining-requests': String(Math.max(0, rpm - window.length)),
      'x-ratelimit-remaining-tokens': String(Math.max(0, tpm - usedTokens)),
      // Time until the limit is back to full, in OpenAI's format ("12ms", "1m7.5s").
      'x-ratelimit-reset-requests': formatDuration(window.length === 0 ? 0 : reset),
      'x-ratelimit-reset-tokens': formatDuration(usedTokens === 0 ? 0 : reset),
    };
  }

  function rateLimited(model: string, kind: 'requests' | 'tokens', limit: number, used: number, requested: number, waitMs: number, headers: Record<string, string>): HttpFailure {
    const unit = kind === 'requests' ? 'requests per min (RPM)' : 'tokens per min (TPM)';
    return new HttpFailure(
      429,
      {
        message: `Rate limit reached for ${model} in organization org-fake on ${unit}: Limit ${limit}, Used ${used}, Requested ${requested}. Please try again in ${formatDuration(waitMs)}. Visit https://platform.openai.com/account/rate-limits to learn more.`,
        type: kind,
        param: null,
        code: 'rate_limit_exceeded',
      },
      headers,
    );
  }

  function injected(status: number, fail: FailOptions, model: string, headers: Record<string, string>): HttpFailure {
    const extra: Record<string, string> = { ...headers };
    if (fail.retryAfter !== undefined) extra['retry-after'] = fail.retryAfter;
    if (fail.retryAfterMs !== undefined) extra['retry-after-ms'] = fail.retryAfterMs;
    switch (status) {
      case 429:
        return rateLimited(model, 'requests', rpm, rpm, 1, Number(fail.retryAfterMs ?? 1000), extra);
      case 400:
        return new HttpFailure(400, { message: INVALID_INPUT, type: 'invalid_request_error', param: null, code: null }, extra);
      case 401:
        return new HttpFailure(401, { message: 'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' }, extra);
      case 403:
        return new HttpFailure(403, { message: 'You are not allowed to sample from this model', type: 'invalid_request_error', param: null, code: null }, extra);
      case 404:
        return new HttpFailure(404, { message: `The model \`${model}\` does not exist or you do not have access to it.`, type: 'invalid_request_error', param: null, code: 'model_not_found' }, extra);
      case 503:
        return new HttpFailure(503, { message: 'The engine is currently overloaded, please try again later', type: 'server_error', param: null, code: null }, extra);
      default:
        if (status >= 500) {
          return new HttpFailure(status, { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: 'server_error' }, extra);
        }
        return new HttpFailure(status, { message: `HTTP ${status}`, type: 'invalid_request_error', param: null, code: null }, extra);
    }
  }

  async function delay(): Promise<void> {
    if (delayMs <= 0) return;
    const controller = new AbortController();
    pendingDelays.add(controller);
    try {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        controller.signal.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    } finally {
      pendingDelays.delete(controller);
    }
  }

  app.post('/v1/embeddings', async (request, reply) => {
    const started = Date.now();
    const body = (request.body ?? {}) as Record<string, unknown>;
    const record: FakeRequest = {
      inputs: [],
      model: typeof body.model === 'string' ? body.model : undefined,
      dimensions: typeof body.dimensions === 'number' ? body.dimensions : undefined,
      encodingFormat: typeof body.encoding_format === 'string' ? body.encoding_format : undefined,
      status: 0,
      tokens: 0,
      at: started,
    };
    requests.push(record);
    const requestId = `req_${randomBytes(16).toString('hex')}`;
    void reply.header('x-request-id', requestId).header('openai-version', '2020-10-01');

    await delay();
    try {
      const answer = await handle(body, record, bearer(request.headers.authorization));
      record.status = 200;
      return reply
        .code(200)
        .headers({ 'openai-model': answer.model, 'openai-processing-ms': String(Date.now() - started) })
        .send(answer);
    } catch (err) {
      if (!(err instanceof HttpFailure)) throw err;
      record.status = err.status;
      return sendError(reply, err);
    }
  });

  async function handle(body: Record<string, unknown>, record: FakeRequest, auth: string | null) {
    // Auth first: nothing else is looked at for a caller without a valid key.
    if (!auth) {
      throw new HttpFailure(401, {
        message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
        type: 'invalid_request_error',
        param: null,
        code: null,
      });
    }
    if (auth !== apiKey) {
      throw new HttpFailure(401, {
        message: `Incorrect API key provided: ${maskKey(auth)}. You can find your API key at https://platform.openai.com/account/api-keys.`,
        type: 'invalid_request_error',
        param: null,
        code: 'invalid_api_key',
      });
    }

    const model = typeof body.model === 'string' ? body.model : '';
    const now = Date.now();
    const headers = rateLimitHeaders(now);

    // Injected faults, then the storm: decided by the server before it reads the request.
    const fail = failures[0] && successes >= failures[0].notBefore ? failures.shift() : undefined;
    if (fail) throw injected(fail.status, fail.options, model || 'text-embedding-3-small', headers);
    if (storm) {
      if (now > storm.until) storm = null;
      else {
        storm.seen++;
        const hit = storm.everyNth !== undefined ? storm.seen % Math.max(1, storm.everyNth) === 0 : Math.random() < (storm.probability ?? 1);
        if (hit) {
          throw rateLimited(model || 'text-embedding-3-small', 'requests', rpm, rpm, 1, storm.retryAfterMs, {
            ...headers,
            'retry-after-ms': String(storm.retryAfterMs),
            'retry-after': String(Math.max(1, Math.ceil(storm.retryAfterMs / 1000))),
          });
        }
      }
    }

    // Validation, as the real API does it.
    if (!model) throw invalid('you must provide a model parameter');
    const inputs = normaliseInput(body.input);
    record.inputs = inputs;
    const native = NATIVE_DIMENSIONS[model];
    if (native === undefined) {
      throw new HttpFailure(404, {
        message: `The model \`${model}\` does not exist or you do not have access to it.`,
        type: 'invalid_request_error',
        param: null,
        code: 'model_not_found',
      });
    }
    const format = body.encoding_format ?? 'float';
    if (format !== 'float' && format !== 'base64') {
      throw invalid(`'${String(format)}' is not one of ['float', 'base64'] - 'encoding_format'`, 'encoding_format');
    }
    let dimensions = native;
    if (body.dimensions !== undefined && body.dimensions !== null) {
      if (!model.startsWith('text-embedding-3')) throw invalid('This model does not support specifying dimensions.', 'dimensions');
      const d = body.dimensions;
      if (typeof d !== 'number' || !Number.isInteger(d) || d < 1) {
        throw invalid(`Invalid value for 'dimensions' = ${JSON.stringify(d)}. Must be an integer greater than or equal to 1.`, 'dimensions', 'invalid_value');
      }
      if (d > native) throw invalid(`Invalid value for 'dimensions' = ${d}. Must be less than or equal to ${native}.`, 'dimensions', 'invalid_value');
      dimensions = d;
    }
    if (inputs.length > MAX_INPUTS) {
      throw invalid(`Too many inputs. The max number of inputs is ${MAX_INPUTS}. We recommend splitting your input into smaller batches.`, 'input');
    }
    const counts = inputs.map((text) => encode(text, ENCODE_OPTIONS).length);
    for (const tokens of counts) {
      if (tokens > MAX_INPUT_TOKENS) {
        throw invalid(
          `This model's maximum context length is ${MAX_INPUT_TOKENS + 1} tokens, however you requested ${tokens} tokens (${tokens} in your prompt; 0 for the completion). Please reduce your prompt; or completion length.`,
        );
      }
    }
    const total = counts.reduce((a, b) => a + b, 0);
    record.tokens = total;
    if (total > MAX_REQUEST_TOKENS) {
      throw new HttpFailure(400, {
        message: `Requested ${total} tokens, max ${MAX_REQUEST_TOKENS} tokens per request`,
        type: 'max_tokens_per_request',
        param: null,
        code: 'max_tokens_per_request',
      });
    }

    // The fake's own per-minute limits.
    const usedTokens = window.reduce((sum, [, tokens]) => sum + tokens, 0);
    if (window.length + 1 > rpm || usedTokens + total > tpm) {
      const kind = window.length + 1 > rpm ? 'requests' : 'tokens';
      const waitMs = Math.max(1, (window[0]?.[0] ?? now) + 60_000 - now);
      throw rateLimited(model, kind, kind === 'requests' ? rpm : tpm, kind === 'requests' ? window.length : usedTokens, kind === 'requests' ? 1 : total, waitMs, {
        ...headers,
        'retry-after-ms': String(waitMs),
        'retry-after': String(Math.ceil(waitMs / 1000)),
      });
    }
    window.push([now, total]);

    // The local embedder refuses whitespace-only text; the real API embeds it.
    const vectors = await embedderFor(dimensions).embed(inputs.map((text) => (text.trim() === '' ? `whitespace ${JSON.stringify(text)}` : text)));
    const data = inputs.map((_, index) => {
      const vector = vectors[index]!;
      return { object: 'embedding' as const, index, embedding: format === 'base64' ? toBase64(vector) : Array.from(vector) };
    });
    for (const text of inputs) embeddedCounts.set(text, (embeddedCounts.get(text) ?? 0) + 1);
    embeddedInputs += inputs.length;
    successes++;
    return { object: 'list' as const, data, model, usage: { prompt_tokens: total, total_tokens: total } };
  }

  // Admin API for scripts (the same switches as the methods).
  app.post('/_fake/fail', async (request) => {
    const b = (request.body ?? {}) as { status?: number; count?: number; retryAfter?: string; retryAfterMs?: string };
    fake.failNext(Number(b.status ?? 500), Number(b.count ?? 1), { retryAfter: b.retryAfter, retryAfterMs: b.retryAfterMs });
    return { ok: true, pending: failures.length };
  });
  app.post('/_fake/storm', async (request) => {
    fake.rateLimitStorm((request.body ?? {}) as StormOptions);
    return { ok: true };
  });
  app.delete('/_fake/storm', async () => {
    fake.stopStorm();
    return { ok: true };
  });
  app.post('/_fake/delay', async (request) => {
    fake.setDelayMs(Number((request.body as { ms?: number } | undefined)?.ms ?? 0));
    return { ok: true };
  });
  app.post('/_fake/reset', async () => {
    fake.reset();
    return { ok: true };
  });
  app.get('/_fake/stats', async () => {
    const byStatus: Record<string, number> = {};
    for (const r of requests) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    let duplicates = 0;
    for (const n of embeddedCounts.values()) if (n > 1) duplicates++;
    return { requests: requests.length, byStatus, embeddedInputs, distinctTexts: embeddedCounts.size, textsEmbeddedMoreThanOnce: duplicates };
  });
  app.get('/_fake/requests', async () =>
    requests.map((r) => ({ ...r, inputs: r.inputs.length, firstInput: r.inputs[0]?.slice(0, 80) })),
  );

  const address = await app.listen({ host: '127.0.0.1', port: options.port ?? 0 });
  const port = Number(new URL(address).port);
  const origin = `http://127.0.0.1:${port}`;

  const fake: FakeOpenAI = {
    url: `${origin}/v1`,
    origin,
    port,
    apiKey,
    requests,
    get embeddedInputs() {
      return embeddedInputs;
    },
    embeddedCounts,
    timesEmbedded: (text) => embeddedCounts.get(text) ?? 0,
    failNext(status, count = 1, failOptions = {}) {
      const notBefore = successes + (failOptions.afterSuccesses ?? 0);
      for (let i = 0; i < count; i++) failures.push({ status, options: { ...failOptions }, notBefore });
    },
    rateLimitStorm(stormOptions) {
      storm = {
        ...stormOptions,
        retryAfterMs: stormOptions.retryAfterMs ?? 20,
        until: stormOptions.durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + stormOptions.durationMs,
        seen: 0,
      };
    },
    stopStorm() {
      storm = null;
    },
    setDelayMs(ms) {
      delayMs = Math.max(0, ms);
    },
    reset() {
      failures = [];
      storm = null;
      delayMs = 0;
      window = [];
      requests.length = 0;
      embeddedCounts.clear();
      embeddedInputs = 0;
    },
    async close() {
      for (const controller of pendingDelays) controller.abort();
      await app.close();
    },
  };
  return fake;
}

/** input: a string, an array of strings, an array of token ids, or an array of those. */
function normaliseInput(input: unknown): string[] {
  const isTokens = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t) && t >= 0);
  if (typeof input === 'string') {
    if (input === '') throw invalid(INVALID_INPUT);
    return [input];
  }
  if (input === undefined || input === null) throw invalid("'input' is a required property");
  if (!Array.isArray(input) || input.length === 0) throw invalid(INVALID_INPUT);
  if (isTokens(input)) return [decodeTokens(input)];
  return input.map((item) => {
    if (typeof item === 'string' && item !== '') return item;
    if (isTokens(item)) return decodeTokens(item);
    throw invalid(INVALID_INPUT);
  });
}

function decodeTokens(tokens: number[]): string {
  try {
    return decode(tokens);
  } catch {
    throw invalid(INVALID_INPUT);
  }
}

function bearer(header: string | undefined): string | null {
  const match = typeof header === 'string' ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
  return match ? match[1]!.trim() : null;
}

/** Little-endian float32 bytes, base64: what `encoding_format: "base64"` returns. */
function toBase64(vector: Float32Array): string {
  const buffer = Buffer.alloc(vector.length * 4);
  for (let i = 0; i < vector.length; i++) buffer.writeFloatLE(vector[i]!, i * 4);
  return buffer.toString('base64');
}

/** OpenAI's key masking in 401 messages: the first and last few characters only. */
function maskKey(key: string): string {
  if (key.length <= 8) return '*'.repeat(key.length);
  return `${key.slice(0, 3)}${'*'.repeat(Math.min(key.length - 7, 40))}${key.slice(-4)}`;
}

/** OpenAI's duration format: "12ms", "6s", "1m7.5s". */
function formatDuration(ms: number): string {
  if (ms <= 0) return '0s';
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms - minutes * 60_000) / 100) / 10;
  return minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`;
}
