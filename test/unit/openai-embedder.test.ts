// The OpenAI embedder against the fake OpenAI API over real HTTP: encodings, batching by the
// request limits, input checks before any request, and the error policy (429 waits, 5xx and
// timeouts retried, 401/400/404 permanent).
import assert from 'node:assert/strict';
import { after, beforeEach, describe, test } from 'node:test';
import { providerRequests } from '../../src/observability/metrics.ts';
import type { RateBudget } from '../../src/providers/embedder/budget.ts';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import { countEmbeddingTokens, createOpenAIEmbedder, type OpenAIEmbedderOptions } from '../../src/providers/embedder/openai.ts';
import { ProviderError } from '../../src/providers/types.ts';
import { startFakeOpenAI } from '../fakes/openai.ts';

const fake = await startFakeOpenAI();
after(() => fake.close());
beforeEach(() => fake.reset());

const DIMS = 64;

function embedder(overrides: Partial<OpenAIEmbedderOptions> = {}) {
  return createOpenAIEmbedder({
    apiKey: fake.apiKey,
    baseUrl: fake.url,
    model: 'text-embedding-3-small',
    dimensions: DIMS,
    timeoutSeconds: 5,
    budget: null,
    maxRateLimitWaitSeconds: 10,
    ...overrides,
  });
}

function providerError(code: string, permanent: boolean) {
  return (err: unknown) => {
    assert.ok(err instanceof ProviderError, `expected a ProviderError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.permanent, permanent);
    assert.ok(!err.message.includes(fake.apiKey), 'the key must not appear in the message');
    return true;
  };
}

function unit(values: ArrayLike<number>): Float32Array {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]! ** 2;
  const norm = Math.sqrt(sum);
  return Float32Array.from(values, (x) => x / norm);
}

async function postEmbeddings(body: object, key = fake.apiKey): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${fake.url}/embeddings`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

async function outcomes(outcome: string): Promise<number> {
  const metric = await providerRequests.get();
  return metric.values.find((v) => v.labels.provider === 'openai' && v.labels.outcome === outcome)?.value ?? 0;
}

/** A text of roughly `tokens` cl100k tokens, distinct per `seed`. */
function textOf(seed: number, tokens: number): string {
  const words = ['harbour', 'granite', 'lantern', 'keeper', 'storm', 'signal', 'beacon', 'tide'];
  const parts: string[] = [`document ${seed}:`];
  for (let i = 0; parts.length < tokens; i++) parts.push(words[(i * 7 + seed) % words.length]!);
  return parts.join(' ');
}

describe('encodings', () => {
  test('base64 (the SDK default) and float decode to the same vectors', async () => {
    const texts = ['The keeper lit the lamp.', 'Granite blocks, dovetailed.', '灯台守'];
    const vectors = await embedder().embed(texts);
    assert.equal(fake.requests.length, 1);
    assert.equal(fake.requests[0]!.encodingFormat, 'base64');
    assert.equal(fake.requests[0]!.dimensions, DIMS);

    const { status, json } = await postEmbeddings({ model: 'text-embedding-3-small', input: texts, dimensions: DIMS, encoding_format: 'float' });
    assert.equal(status, 200);
    assert.equal(json.object, 'list');
    assert.equal(json.usage.prompt_tokens, texts.reduce((n, t) => n + countEmbeddingTokens(t), 0));
    for (const item of json.data) {
      assert.ok(Array.isArray(item.embedding));
      const expected = unit(item.embedding as number[]);
      const got = vectors[item.index as number]!;
      assert.equal(got.length, DIMS);
      for (let i = 0; i < DIMS; i++) assert.ok(Math.abs(got[i]! - expected[i]!) < 1e-6);
    }
  });

  test('models without `dimensions` are sent none, and a vector of the wrong size fails at once, naming the variable', async () => {
    const ada = embedder({ model: 'text-embedding-ada-002', dimensions: 1536 });
    const [v] = await ada.embed(['hello']);
    assert.equal(v!.length, 1536);
    assert.equal(fake.requests[0]!.dimensions, undefined);

    const before = fake.requests.length;
    await assert.rejects(embedder({ model: 'text-embedding-ada-002', dimensions: DIMS }).embed(['hello']), (err: Error) => {
      assert.match(err.message, /returned vectors of 1536 dimensions, EMBEDDING_DIMENSIONS is/);
      return providerError('EMBEDDER_DIMENSIONS_MISMATCH', true)(err);
    });
    assert.equal(fake.requests.length - before, 1, 'not retried');
  });
});

describe('batching and input checks', () => {
  test('splits by the 300,000-token request limit and reassembles in order', async () => {
    const texts = Array.from({ length: 60 }, (_, i) => textOf(i, 6000));
    const tokens = texts.map(countEmbeddingTokens);
    assert.ok(tokens.every((t) => t > 5000 && t <= 8191), `token counts ${Math.min(...tokens)}..${Math.max(...tokens)}`);
    const vectors = await embedder().embed(texts);
    assert.ok(fake.requests.length >= 2, `${fake.requests.length} requests`);
    for (const r of fake.requests) {
      assert.equal(r.status, 200);
      assert.ok(r.tokens <= 300_000, `a request of ${r.tokens} tokens`);
    }
    assert.equal(fake.embeddedInputs, 60);
    const local = await createLocalEmbedder({ dimensions: DIMS }).embed(texts);
    vectors.forEach((v, i) => assert.ok(Math.abs(dot(v, local[i]!) - 1) < 1e-5, `vector ${i} out of order`));
  });

  test('an input over 8191 tokens is permanent CHUNK_TOO_LONG and nothing is sent', async () => {
    const long = textOf(1, 9000);
    assert.ok(countEmbeddingTokens(long) > 8191);
    await assert.rejects(embedder().embed(['fine', long]), providerError('CHUNK_TOO_LONG', true));
    await assert.rejects(embedder().embed(['fine', ' ']), providerError('EMPTY_INPUT', true));
    assert.equal(fake.requests.length, 0);
  });

  test('text that looks like a special token is ordinary text', async () => {
    const [v] = await embedder().embed(['before <|endoftext|> after']);
    assert.equal(v!.length, DIMS);
  });
});

describe('error policy', () => {
  test('429 with retry-after-ms three times, then success: resolves after waiting, blocking the shared budget', async () => {
    const acquired: number[] = [];
    const blocks: number[] = [];
    const budget: RateBudget = {
      async acquire(cost) {
        acquired.push(cost.tokens);
        return 0;
      },
      async block(until) {
        blocks.push(until - Date.now());
      },
    };
    const rateLimitedBefore = await outcomes('rate_limited');
    fake.failNext(429, 3, { retryAfterMs: '200' });
    const started = performance.now();
    const vectors = await embedder({ budget }).embed(['one', 'two']);
    const elapsed = performance.now() - started;
    assert.equal(vectors.length, 2);
    assert.equal(fake.requests.length, 4);
    assert.deepEqual(fake.requests.map((r) => r.status), [429, 429, 429, 200]);
    assert.ok(elapsed >= 600, `waited ${elapsed} ms`);
    assert.equal(acquired.length, 4, 'the budget is asked before every request');
    assert.ok(acquired.every((t) => t === countEmbeddingTokens('one') + countEmbeddingTokens('two')));
    assert.equal(blocks.length, 3);
    assert.ok(blocks.every((ms) => ms > 150 && ms <= 200), `blocks ${blocks}`);
    assert.equal((await outcomes('rate_limited')) - rateLimitedBefore, 3);
  });

  test('a 429 storm beyond maxRateLimitWaitSeconds is non-permanent EMBEDDER_RATE_LIMITED', async () => {
    fake.rateLimitStorm({ everyNth: 1, retryAfterMs: 300, durationMs: 10_000 });
    const started = performance.now();
    await assert.rejects(embedder({ maxRateLimitWaitSeconds: 1 }).embed(['storm']), providerError('EMBEDDER_RATE_LIMITED', false));
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 800 && elapsed < 3000, `gave up after ${elapsed} ms`);
    assert.equal(fake.requests.length, 4); // waits of 300 ms: 3 fit in 1 s, the 4th would not
    assert.equal(fake.embeddedInputs, 0);
  });

  test('429 without Retry-After backs off from 1 s', async () => {
    fake.failNext(429, 1);
    const started = performance.now();
    await embedder().embed(['backoff']);
    assert.ok(performance.now() - started >= 950);
    assert.equal(fake.requests.length, 2);
  });

  test('500 then success resolves', async () => {
    fake.failNext(500, 1);
    const vectors = await embedder().embed(['retry me']);
    assert.equal(vectors.length, 1);
    assert.deepEqual(fake.requests.map((r) => r.status), [500, 200]);
  });

  test('5xx on every attempt: non-permanent EMBEDDER_UNAVAILABLE after 4 attempts', async () => {
    fake.failNext(503, 10);
    await assert.rejects(embedder().embed(['down']), providerError('EMBEDDER_UNAVAILABLE', false));
    assert.equal(fake.requests.length, 4);
  });

  test('401 is permanent EMBEDDER_AUTH_FAILED after exactly one request, and never shows the key', async () => {
    const wrongKey = 'sk-wrong-0123456789abcdef0123456789';
    await assert.rejects(embedder({ apiKey: wrongKey }).embed(['hello']), (err: unknown) => {
      providerError('EMBEDDER_AUTH_FAILED', true)(err);
      const e = err as ProviderError;
      assert.equal(e.message, 'OpenAI rejected the API key (HTTP 401): check OPENAI_API_KEY');
      assert.ok(!JSON.stringify({ ...e, message: e.message, cause: String(e.cause) }).includes(wrongKey));
      return true;
    });
    assert.equal(fake.requests.length, 1);
    assert.equal(fake.requests[0]!.status, 401);
  });

  test('400 from the API is permanent EMBEDDER_REJECTED with its message', async () => {
    await assert.rejects(embedder({ dimensions: 4000 }).embed(['hello']), (err: unknown) => {
      providerError('EMBEDDER_REJECTED', true)(err);
      assert.match((err as Error).message, /dimensions/);
      return true;
    });
    assert.equal(fake.requests.length, 1);
  });

  test('an unknown model is permanent EMBEDDER_MODEL_NOT_FOUND', async () => {
    await assert.rejects(embedder({ model: 'text-embedding-9-huge' }).embed(['hello']), providerError('EMBEDDER_MODEL_NOT_FOUND', true));
  });

  test('403 is permanent EMBEDDER_FORBIDDEN', async () => {
    fake.failNext(403, 1);
    await assert.rejects(embedder().embed(['hello']), providerError('EMBEDDER_FORBIDDEN', true));
    assert.equal(fake.requests.length, 1);
  });

  test('answers slower than timeoutSeconds are retried, then non-permanent EMBEDDER_UNAVAILABLE', async () => {
    fake.setDelayMs(1500);
    const started = performance.now();
    await assert.rejects(embedder({ timeoutSeconds: 1 }).embed(['slow']), (err: unknown) => {
      providerError('EMBEDDER_UNAVAILABLE', false)(err);
      assert.match((err as Error).message, /timed out/);
      return true;
    });
    assert.equal(fake.requests.length, 4);
    assert.ok(performance.now() - started < 15_000);
  });
});

describe('the fake is as strict as the real API', () => {
  test('limits, dimensions and auth answer OpenAI error objects', async () => {
    const tooMany = await postEmbeddings({ model: 'text-embedding-3-small', input: Array.from({ length: 2049 }, () => 'x') });
    assert.equal(tooMany.status, 400);
    const huge = Array.from({ length: 40 }, (_, i) => textOf(i, 8000));
    const tooBig = await postEmbeddings({ model: 'text-embedding-3-small', input: huge });
    assert.equal(tooBig.status, 400);
    assert.equal(tooBig.json.error.code, 'max_tokens_per_request');
    const ada = await postEmbeddings({ model: 'text-embedding-ada-002', input: 'x', dimensions: 256 });
    assert.equal(ada.status, 400);
    assert.match(ada.json.error.message, /does not support specifying dimensions/);
    const empty = await postEmbeddings({ model: 'text-embedding-3-small', input: ['ok', ''] });
    assert.equal(empty.status, 400);
    const unknown = await postEmbeddings({ model: 'nope', input: 'x' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'model_not_found');
    const unauthorised = await postEmbeddings({ model: 'text-embedding-3-small', input: 'x' }, 'sk-bad-key-123456789');
    assert.equal(unauthorised.status, 401);
    assert.deepEqual(Object.keys(unauthorised.json.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(unauthorised.json.error.code, 'invalid_api_key');
    assert.ok(!unauthorised.json.error.message.includes('sk-bad-key-123456789'));

    fake.failNext(429, 1, { retryAfterMs: '20', retryAfter: '1' });
    const limited = await postEmbeddings({ model: 'text-embedding-3-small', input: 'x' });
    assert.equal(limited.status, 429);
    assert.equal(limited.json.error.code, 'rate_limit_exceeded');
    assert.equal(limited.headers.get('retry-after-ms'), '20');
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.ok(limited.headers.get('x-request-id'));
    assert.ok(limited.headers.get('x-ratelimit-remaining-requests'));
    assert.ok(limited.headers.get('x-ratelimit-reset-tokens'));
  });
});

function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i]! * b[i]!;
  return sum;
}
