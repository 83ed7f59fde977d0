// Text that made the old tokenizer quadratic (runs far longer than any word, text without
// blank-line breaks), deterministic, for the chunker's tests and its benchmark.

/** Deterministic pseudo-random numbers (a 32-bit LCG): the same inputs on every run. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** `unit()` repeated until the text holds `bytes` bytes of UTF-8. */
export function fill(bytes: number, unit: () => string): string {
  const parts: string[] = [];
  for (let size = 0; size < bytes; ) {
    const part = unit();
    parts.push(part);
    size += Buffer.byteLength(part);
  }
  return parts.join('');
}

/** One code point drawn from `count` starting at `from`. */
export function randomFrom(next: () => number, from: number, count: number): () => string {
  return () => String.fromCodePoint(from + Math.floor(next() * count));
}

/** Each pathological input, `bytes` long, by name. */
export function pathological(bytes: number): Record<string, string> {
  const next = random(7);
  const base64 = Buffer.from(Array.from({ length: Math.ceil((bytes * 3) / 4) }, () => Math.floor(next() * 256))).toString('base64').slice(0, bytes);
  const inputs: Record<string, string> = {
    'one repeated letter': 'a'.repeat(bytes),
    "repeated '='": '='.repeat(bytes),
    'whitespace then a word': ' '.repeat(bytes - 4) + 'word',
    'only newlines': '\n'.repeat(bytes),
    digits: fill(bytes, randomFrom(next, 0x30, 10)),
    'CJK without spaces': fill(bytes, randomFrom(next, 0x4e00, 0x5200)),
    emoji: fill(bytes, randomFrom(next, 0x1f600, 0x50)),
    'base64 of random bytes': base64,
    'one word of random letters': fill(bytes, randomFrom(next, 0x61, 26)),
    "'a ' repeated": 'a '.repeat(bytes / 2),
    'latin-1 noise': fill(bytes, randomFrom(next, 0, 256)),
  };
  const sources = Object.values(inputs);
  // Pieces of all the others, a few characters to a few KB each.
  inputs['a mix'] = fill(bytes, () => {
    const source = sources[Math.floor(next() * sources.length)]!;
    const start = Math.floor(next() * (source.length - 5000));
    return source.slice(start, start + 1 + Math.floor(next() * 4000)).replace(/^[\uDC00-\uDFFF]|[\uD800-\uDBFF]$/g, '');
  });
  return inputs;
}
