// OpenAI embeddings through the official SDK (`openai`), with our own retry policy: the SDK's
// retries are off (maxRetries 0) because a 429 must never fail a document. One embed() call
// is split into requests within OpenAI's limits (2048 inputs, 300,000 tokens, each input at
// most 8191 tokens, counted with cl100k_base like the models do), each request first takes
// its share of the rate budget shared by all workers (Postgres token buckets), and the
// vectors come back in input order, L2-normalised.
//
// Error policy: 429 waits as Retry-After says (and blocks the shared budget so the fleet
// backs off) for up to maxRateLimitWaitSeconds in total, then a non-permanent
// EMBEDDER_RATE_LIMITED hands the attempt back to the job queue. 5xx, connection errors and
// timeouts: 4 attempts, then non-permanent EMBEDDER_UNAVAILABLE. 401/403/400/404 are
// permanent: retrying cannot help. The API key never reaches a message or a log line.
import { setTimeout as sleep } from 'node:timers/promises';
import { encode } from 'gpt-tokenizer/encoding/cl100k_base';
import OpenAI from 'openai';
import { providerRequestDuration, providerRequests } from '../../observability/metrics.ts';
import { observeEmbeddingTokens } from '../../observability/pipeline-metrics.ts';
import { ProviderError, type Embedder } from '../types.ts';
import type { RateBudget } from './budget.ts';

export interface OpenAIEmbedderOptions {
  apiKey: string;
  /** Base URL with /v1, e.g. https://api.openai.com/v1. */
  baseUrl: string;
  model: string;
  dimensions: number;
  /** Timeout of one embeddings request. */
  timeoutSeconds: number;
  /** Shared rate budget; null: none (tests, a single worker with headroom). */
  budget: RateBudget | null;
  /** Total time one embed() call keeps waiting through 429s before giving the attempt back. */
  maxRateLimitWaitSeconds: number;
  logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

/** OpenAI's limits for the embeddings endpoint. */
export const OPENAI_EMBEDDING_LIMITS = {
  maxInputs: 2048,
  maxInputTokens: 8191,
  maxRequestTokens: 300_000,
} as const;

const PROVIDER = 'openai';
const OPERATION = 'embeddings';
const MAX_ATTEMPTS = 4;
const BACKOFF_BASE_MS = 500;
const RATE_LIMIT_BACKOFF_BASE_MS = 1000;
const RATE_LIMIT_BACKOFF_MAX_MS = 60_000;
/** A 429 saying "retry after 0" still waits a little: the total wait must grow. */
const MIN_RATE_LIMIT_WAIT_MS = 50;

// Chunks are untrusted text: a literal "<|endoftext|>" is ordinary text to the API, so it
// must count as such instead of making the tokenizer throw (its default).
const ENCODE_OPTIONS = { disallowedSpecial: new Set<string>() };

type Outcome = 'ok' | 'rate_limited' | 'server_error' | 'client_error' | 'network_error';

interface Batch {
  /** Position of the batch's first input in the embed() call. */
  offset: number;
  texts: string[];
  tokens: number;
}

export function countEmbeddingTokens(text: string): number {
  return encode(text, ENCODE_OPTIONS).length;
}

/** text-embedding-3* take `dimensions`; older models (ada-002) refuse it with a 400. */
export function acceptsDimensions(model: string): boolean {
  return model.startsWith('text-embedding-3');
}

export function createOpenAIEmbedder(options: OpenAIEmbedderOptions): Embedder {
  const { model, dimensions, budget, logger } = options;
  if (!options.apiKey) throw new Error('OpenAI embedder: an API key is required (OPENAI_API_KEY)');
  if (!Number.isSafeInteger(dimensions) || dimensions < 1) throw new RangeError(`dimensions must be a positive integer, got ${dimensions}`);
  const maxRateLimitWaitMs = Math.max(0, options.maxRateLimitWaitSeconds * 1000);
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseUrl,
    timeout: options.timeoutSeconds * 1000,
    maxRetries: 0,
  });
  const sendDimensions = acceptsDimensions(model);

  function redact(text: string): string {
    return text.split(options.apiKey).join('[redacted]');
  }

  function plan(texts: string[]): Batch[] {
    const batches: Batch[] = [];
    let current: Batch | null = null;
    texts.forEach((text, i) => {
      if (typeof text !== 'string' || text.trim() === '') {
        throw new ProviderError('EMPTY_INPUT', `cannot embed empty text (input ${i})`, true);
      }
      const tokens = countEmbeddingTokens(text);
      if (tokens > OPENAI_EMBEDDING_LIMITS.maxInputTokens) {
        throw new ProviderError(
          'CHUNK_TOO_LONG',
          `input ${i} has ${tokens} tokens, over the ${OPENAI_EMBEDDING_LIMITS.maxInputTokens}-token limit of ${model}`,
          true,
        );
      }
      if (
        current === null ||
        current.texts.length >= OPENAI_EMBEDDING_LIMITS.maxInputs ||
        current.tokens + tokens > OPENAI_EMBEDDING_LIMITS.maxRequestTokens
      ) {
        current = { offset: i, texts: [], tokens: 0 };
        batches.push(current);
      }
      current.texts.push(text);
      current.tokens += tokens;
    });
    return batches;
  }

  /** One request with the retry policy: the vectors of the batch, in its order. */
  async function send(batch: Batch, state: { rateLimitWaitedMs: number }): Promise<Float32Array[]> {
    let failures = 0;
    let rateLimits = 0;
    for (;;) {
      await budget?.acquire({ requests: 1, tokens: batch.tokens });
      const endTimer = providerRequestDuration.startTimer({ provider: PROVIDER, operation: OPERATION });
      const count = (outcome: Outcome) => {
        endTimer();
        providerRequests.inc({ provider: PROVIDER, operation: OPERATION, outcome });
      };

      let response: OpenAI.Embeddings.CreateEmbeddingResponse;
      try {
        // No encoding_format: the SDK asks for base64 (a quarter of the bytes) and decodes it.
        response = await client.embeddings.create({
          model,
          input: batch.texts,
          ...(sendDimensions ? { dimensions } : {}),
        });
      } catch (err) {
        const status = err instanceof OpenAI.APIError ? err.status : undefined;
        if (err instanceof OpenAI.APIError && status === 429) {
          count('rate_limited');
          const apiCode = err.code ?? undefined;
          if (apiCode === 'insufficient_quota') {
            // Out of credit, not out of rate: waiting seconds cannot help.
            throw new ProviderError('EMBEDDER_QUOTA_EXCEEDED', `OpenAI refused the request: the account's quota is exhausted (HTTP 429 insufficient_quota)`, false, { status });
          }
          rateLimits++;
          const waitMs = Math.max(MIN_RATE_LIMIT_WAIT_MS, retryAfterMs(err.headers) ?? Math.min(RATE_LIMIT_BACKOFF_BASE_MS * 2 ** (rateLimits - 1), RATE_LIMIT_BACKOFF_MAX_MS));
          if (state.rateLimitWaitedMs + waitMs > maxRateLimitWaitMs) {
            throw new ProviderError(
              'EMBEDDER_RATE_LIMITED',
              `OpenAI kept answering 429 (rate limited): gave up after waiting ${Math.round(state.rateLimitWaitedMs)} ms in total`,
              false,
              { status, retryAfterMs: waitMs },
            );
          }
          const until = Date.now() + waitMs;
          logger?.warn({ provider: PROVIDER, status, code: apiCode, requestId: err.requestID, waitMs, inputs: batch.texts.length }, 'OpenAI rate limit: waiting before retrying');
          if (budget) {
            try {
              await budget.block(until);
            } catch (blockErr) {
              logger?.warn({ provider: PROVIDER, err: errorMessage(blockErr) }, 'could not record the rate-limit block in the shared budget');
            }
          }
          const remaining = until - Date.now();
          if (remaining > 0) await sleep(remaining);
          state.rateLimitWaitedMs += waitMs;
          continue;
        }

        if (!(err instanceof OpenAI.APIError)) {
          // Not an HTTP failure: the answer came but could not be read (e.g. bad base64).
          count('server_error');
          throw new ProviderError('EMBEDDER_BAD_RESPONSE', redact(`OpenAI embeddings response could not be read: ${errorMessage(err)}`), false, {}, { cause: err });
        }
        // No status: connection error or timeout. 408/409 are what the SDK itself retries.
        const transient = status === undefined || status === 408 || status === 409 || status >= 500;
        if (transient) {
          count(status === undefined ? 'network_error' : 'server_error');
          failures++;
          const reason =
            err instanceof OpenAI.APIConnectionTimeoutError
              ? `timed out after ${options.timeoutSeconds} s`
              : status === undefined
                ? `failed: ${errorMessage(err.cause ?? err)}`
                : `answered HTTP ${status}`;
          const message = redact(`OpenAI embeddings request ${reason}`);
          if (failures >= MAX_ATTEMPTS) {
            throw new ProviderError('EMBEDDER_UNAVAILABLE', `${message} (${failures} attempts)`, false, status === undefined ? {} : { status }, { cause: err });
          }
          const waitMs = BACKOFF_BASE_MS * 2 ** (failures - 1);
          logger?.warn({ provider: PROVIDER, status, requestId: err.requestID, attempt: failures, waitMs }, `${message}: retrying`);
          await sleep(waitMs);
          continue;
        }

        count('client_error');
        throw classifyClientError(err, status!);
      }
      count('ok');
      if (rateLimits > 0 || failures > 0) {
        logger?.info({ provider: PROVIDER, rateLimits, failures, inputs: batch.texts.length }, 'OpenAI embeddings request succeeded after retrying');
      }
      return check(batch, response);
    }
  }

  function classifyClientError(err: InstanceType<typeof OpenAI.APIError>, status: number): ProviderError {
    const apiMessage = redact(apiErrorMessage(err));
    switch (status) {
      case 401:
        return new ProviderError('EMBEDDER_AUTH_FAILED', 'OpenAI rejected the API key (HTTP 401): check OPENAI_API_KEY', true, { status });
      case 403:
        return new ProviderError('EMBEDDER_FORBIDDEN', `OpenAI refused access (HTTP 403): ${apiMessage}`, true, { status });
      case 404:
        return new ProviderError('EMBEDDER_MODEL_NOT_FOUND', `OpenAI does not know the model ${JSON.stringify(model)} (HTTP 404): ${apiMessage}`, true, { status });
      default:
        // 400 and any other refusal of the request itself: the same request fails again.
        return new ProviderError('EMBEDDER_REJECTED', `OpenAI rejected the embeddings request (HTTP ${status}): ${apiMessage}`, true, { status });
    }
  }

  function check(batch: Batch, response: OpenAI.Embeddings.CreateEmbeddingResponse): Float32Array[] {
    const bad = (what: string) => new ProviderError('EMBEDDER_BAD_RESPONSE', `OpenAI embeddings response had ${what}`, false);
    const data = response?.data;
    if (!Array.isArray(data) || data.length !== batch.texts.length) {
      throw bad(`${Array.isArray(data) ? data.length : 'no'} embeddings for ${batch.texts.length} inputs`);
    }
    const out = new Array<Float32Array | undefined>(batch.texts.length);
    for (const item of data) {
      const index = item?.index;
      if (!Number.isInteger(index) || index < 0 || index >= out.length || out[index] !== undefined) {
        throw bad(`an embedding with a missing, duplicate or out-of-range index (${String(index)})`);
      }
      const vector = item.embedding as unknown;
      if (Array.isArray(vector) && vector.length !== dimensions) {
        // The model answers another size than configured (a model without `dimensions`, or a
        // gateway that ignores it): every retry would be billed and fail the same way.
        throw new ProviderError(
          'EMBEDDER_DIMENSIONS_MISMATCH',
          `${model} returned vectors of ${vector.length} dimensions, EMBEDDING_DIMENSIONS is ${dimensions}: set it to the model's size`,
          true,
        );
      }
      if (!Array.isArray(vector)) throw bad('an embedding that is not a vector');
      const unit = normalise(vector as number[]);
      if (unit === null) throw bad(`a zero or non-finite vector at index ${index}`);
      out[index] = unit;
    }
    const prompt = response.usage?.prompt_tokens;
    if (typeof prompt === 'number' && Number.isFinite(prompt) && prompt >= 0) observeEmbeddingTokens(model, prompt);
    return out as Float32Array[];
  }

  return {
    kind: 'openai',
    model,
    dimensions,
    async embed(texts: string[]): Promise<Float32Array[]> {
      if (texts.length === 0) return [];
      const batches = plan(texts); // every input checked before any request
      const out = new Array<Float32Array>(texts.length);
      const state = { rateLimitWaitedMs: 0 };
      for (const batch of batches) {
        const vectors = await send(batch, state);
        for (let i = 0; i < vectors.length; i++) out[batch.offset + i] = vectors[i]!;
      }
      return out;
    },
  };
}

/** Unit length; null for a zero or non-finite vector (it cannot be normalised). */
function normalise(vector: number[]): Float32Array | null {
  let sum = 0;
  for (const x of vector) sum += x * x;
  const norm = Math.sqrt(sum);
  if (!Number.isFinite(norm) || norm === 0) return null;
  const out = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) out[i] = vector[i]! / norm;
  return out;
}

/** `retry-after-ms` (ms, fractional) or `retry-after` (seconds or an HTTP date), if usable. */
export function retryAfterMs(headers: Headers | undefined): number | null {
  const ms = headers?.get('retry-after-ms');
  if (ms) {
    const value = Number.parseFloat(ms);
    if (Number.isFinite(value) && value >= 0) return value;
  }
  const after = headers?.get('retry-after');
  if (after) {
    const seconds = Number.parseFloat(after);
    if (/^\s*\d+(\.\d+)?\s*$/.test(after) && Number.isFinite(seconds)) return seconds * 1000;
    const date = Date.parse(after);
    if (Number.isFinite(date)) return Math.max(0, date - Date.now());
  }
  return null;
}

function apiErrorMessage(err: InstanceType<typeof OpenAI.APIError>): string {
  const body = err.error as { message?: unknown } | undefined;
  if (body && typeof body.message === 'string' && body.message) return body.message;
  return err.message;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
