// One list of cases every Embedder adapter must pass: the pipeline relies on these and on
// nothing adapter-specific. `openai` runs against the fake OpenAI API over real HTTP.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import { createOpenAIEmbedder } from '../../src/providers/embedder/openai.ts';
import type { Embedder } from '../../src/providers/types.ts';
import { startFakeOpenAI, type FakeOpenAI } from '../fakes/openai.ts';

const DIMS = 256;

const fake = await startFakeOpenAI();
after(() => fake.close());

interface Adapter {
  name: string;
  embedder: Embedder;
  /** The fake behind the adapter, when there is one. */
  fake?: FakeOpenAI;
}

const adapters: Adapter[] = [
  { name: 'local', embedder: createLocalEmbedder({ dimensions: DIMS }) },
  {
    name: 'openai',
    embedder: createOpenAIEmbedder({
      apiKey: fake.apiKey,
      baseUrl: fake.url,
      model: 'text-embedding-3-small',
      dimensions: DIMS,
      timeoutSeconds: 30,
      budget: null,
      maxRateLimitWaitSeconds: 30,
    }),
    fake,
  },
];

function norm(v: Float32Array): number {
  let sum = 0;
  for (const x of v) sum += x * x;
  return Math.sqrt(sum);
}

function same(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - b[i]!) > 1e-6) return false;
  return true;
}

for (const adapter of adapters) {
  describe(`embedder contract: ${adapter.name}`, () => {
    const { embedder } = adapter;

    test('reports its dimensions and returns one vector per input, in input order', async () => {
      assert.equal(embedder.dimensions, DIMS);
      assert.equal(typeof embedder.kind, 'string');
      assert.equal(typeof embedder.model, 'string');
      const texts = ['first text about harbours', 'second text about lanterns', 'third text about tides'];
      const vectors = await embedder.embed(texts);
      assert.equal(vectors.length, texts.length);
      for (const v of vectors) {
        assert.ok(v instanceof Float32Array);
        assert.equal(v.length, DIMS);
      }
      // Order: each vector is the one the text gets on its own.
      for (let i = 0; i < texts.length; i++) {
        const [alone] = await embedder.embed([texts[i]!]);
        assert.ok(same(vectors[i]!, alone!), `vector ${i} is not the vector of input ${i}`);
      }
      assert.deepEqual(await embedder.embed([]), []);
    });

    test('vectors are unit length', async () => {
      const vectors = await embedder.embed(['The lighthouse keeper lit the lamp.', 'a', 'word word word word', '灯台守', '?!']);
      for (const v of vectors) assert.ok(Math.abs(norm(v) - 1) < 1e-5, `norm ${norm(v)}`);
    });

    test('the same text gives the same vector, within a call and across calls', async () => {
      const text = 'Smeaton built his tower of dovetailed granite blocks.';
      const [a, b] = await embedder.embed([text, text]);
      const [c] = await embedder.embed([text]);
      assert.ok(same(a!, b!));
      assert.ok(same(a!, c!));
    });

    test('different texts give different vectors', async () => {
      const [a, b] = await embedder.embed(['quarterly revenue grew by twelve percent', 'the keeper climbed the lighthouse stairs']);
      assert.ok(!same(a!, b!));
    });

    test('many inputs (3000) come back complete and in order', async () => {
      const texts = Array.from({ length: 3000 }, (_, i) => `chunk number ${i} of a long document`);
      const requestsBefore = adapter.fake?.requests.length ?? 0;
      const vectors = await embedder.embed(texts);
      const sent = adapter.fake?.requests.slice(requestsBefore) ?? [];
      assert.equal(vectors.length, texts.length);
      for (const v of vectors) assert.equal(v.length, DIMS);
      // Order, checked on a sample against single embeddings.
      for (const i of [0, 1, 2047, 2048, 2049, 2999]) {
        const [alone] = await embedder.embed([texts[i]!]);
        assert.ok(same(vectors[i]!, alone!), `vector ${i} out of order`);
      }
      if (adapter.fake) {
        assert.ok(sent.length >= 2, `split into at least two requests, got ${sent.length}`);
        assert.ok(sent.every((r) => r.inputs.length <= 2048), 'no request over 2048 inputs');
        assert.equal(sent.reduce((n, r) => n + r.inputs.length, 0), texts.length, 'every input sent once');
        const seen = new Map<string, number>();
        for (const r of sent) for (const input of r.inputs) seen.set(input, (seen.get(input) ?? 0) + 1);
        for (const text of texts) assert.equal(seen.get(text), 1, `${text} sent more or less than once`);
      }
    });
  });
}
