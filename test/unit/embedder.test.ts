import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i]! * b[i]!;
  return dot; // both are unit vectors
}

function norm(v: Float32Array): number {
  let sum = 0;
  for (const x of v) sum += x * x;
  return Math.sqrt(sum);
}

test('reports its identity and returns one vector of the configured dimension per input', async () => {
  const embedder = createLocalEmbedder({ dimensions: 384 });
  assert.equal(embedder.kind, 'local');
  assert.equal(embedder.model, 'local-hashing-v1');
  assert.equal(embedder.dimensions, 384);
  const vectors = await embedder.embed(['one text', 'another text', '!!!']);
  assert.equal(vectors.length, 3);
  for (const v of vectors) {
    assert.ok(v instanceof Float32Array);
    assert.equal(v.length, 384);
  }
  assert.deepEqual(await embedder.embed([]), []);
});

test('vectors are L2-normalised', async () => {
  const embedder = createLocalEmbedder({ dimensions: 256 });
  const vectors = await embedder.embed(['The lighthouse keeper lit the lamp.', 'a', 'word word word word', '灯台守', '?!']);
  for (const v of vectors) assert.ok(Math.abs(norm(v) - 1) < 1e-5, `norm ${norm(v)}`);
});

test('embedding is deterministic across calls and instances', async () => {
  const text = 'Smeaton built his tower of dovetailed granite blocks.';
  const [a] = await createLocalEmbedder({ dimensions: 128 }).embed([text]);
  const [b] = await createLocalEmbedder({ dimensions: 128 }).embed([text]);
  assert.deepEqual(a, b);
});

test('texts sharing vocabulary are closer than unrelated texts', async () => {
  const embedder = createLocalEmbedder({ dimensions: 512 });
  const [query, related, unrelated] = await embedder.embed([
    'lighthouse keeper lit the lamp in the lantern room',
    'the keeper of the lighthouse climbed to the lantern to light the lamp at dusk',
    'quarterly revenue grew by twelve percent according to the finance report',
  ]);
  const near = cosine(query!, related!);
  const far = cosine(query!, unrelated!);
  assert.ok(near > far + 0.2, `related ${near} vs unrelated ${far}`);
  assert.ok(Math.abs(cosine(query!, query!) - 1) < 1e-5);
});

test('empty or whitespace-only text rejects with RangeError', async () => {
  const embedder = createLocalEmbedder({ dimensions: 64 });
  await assert.rejects(embedder.embed(['ok', '']), RangeError);
  await assert.rejects(embedder.embed([' \n\t ']), RangeError);
});

test('invalid dimensions throw', () => {
  assert.throws(() => createLocalEmbedder({ dimensions: 0 }), RangeError);
  assert.throws(() => createLocalEmbedder({ dimensions: 1.5 }), RangeError);
});
