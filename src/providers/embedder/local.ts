// Offline embedder for development, tests and benchmarks: LEXICAL FEATURE HASHING, NOT A
// SEMANTIC MODEL. Each lower-cased word and adjacent word pair is hashed (FNV-1a) into one
// of `dimensions` buckets with a hash-derived sign, weighted by sublinear term frequency,
// and the vector is L2-normalised. Cosine similarity then measures shared vocabulary: texts
// using the same words score high, paraphrases and synonyms do not. That is enough to
// exercise storage, indexing and retrieval end to end deterministically and without a
// network or API key; it is no substitute for a real embedding model in production.
import type { Embedder } from '../types.ts';

const MODEL = 'local-hashing-v1';
/** Word pairs add some phrase sensitivity, but count for less than the words themselves. */
const BIGRAM_WEIGHT = 0.5;

export function createLocalEmbedder(options: { dimensions: number }): Embedder {
  const { dimensions } = options;
  if (!Number.isSafeInteger(dimensions) || dimensions < 1 || dimensions > 65_536) {
    throw new RangeError(`dimensions must be an integer in [1, 65536], got ${dimensions}`);
  }
  return {
    kind: 'local',
    model: MODEL,
    dimensions,
    async embed(texts: string[]): Promise<Float32Array[]> {
      return texts.map((text, i) => embedOne(text, i, dimensions));
    },
  };
}

function embedOne(text: string, index: number, dimensions: number): Float32Array {
  if (typeof text !== 'string' || text.trim() === '') {
    throw new RangeError(`cannot embed empty text (input ${index})`);
  }
  const normalised = text.normalize('NFKC').toLowerCase();
  let words: string[] = normalised.match(/[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu) ?? [];
  // Text made only of symbols or punctuation still deserves a stable, non-zero vector.
  if (words.length === 0) words = Array.from(normalised.replace(/\s+/g, ''));

  const weights = new Map<string, number>();
  const counts = new Map<string, number>();
  for (let i = 0; i < words.length; i++) {
    const word = `w:${words[i]}`;
    counts.set(word, (counts.get(word) ?? 0) + 1);
    weights.set(word, 1);
    if (i > 0) {
      const pair = `b:${words[i - 1]} ${words[i]}`;
      counts.set(pair, (counts.get(pair) ?? 0) + 1);
      weights.set(pair, BIGRAM_WEIGHT);
    }
  }

  const vector = new Float64Array(dimensions);
  for (const [feature, tf] of counts) {
    const h = fnv1a(feature);
    const bucket = h % dimensions;
    // The sign comes from a remixed hash so it is independent of the bucket choice, which
    // keeps colliding features from always adding up (the point of signed hashing).
    const sign = mix32(h) & 1 ? -1 : 1;
    vector[bucket]! += sign * (1 + Math.log(tf)) * weights.get(feature)!;
  }

  let norm = 0;
  for (const v of vector) norm += v * v;
  norm = Math.sqrt(norm);
  const out = new Float32Array(dimensions);
  if (norm === 0) {
    // Every feature cancelled out in colliding buckets: fall back to a one-hot vector.
    out[fnv1a(normalised) % dimensions] = 1;
    return out;
  }
  for (let i = 0; i < dimensions; i++) out[i] = vector[i]! / norm;
  return out;
}

const encoder = new TextEncoder();

/** FNV-1a 32-bit over the UTF-8 bytes: tiny, stable across platforms and versions. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(text)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** murmur3's 32-bit finaliser. */
function mix32(value: number): number {
  let h = value ^ (value >>> 16);
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
