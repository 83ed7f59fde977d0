import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chunkMarkdown, countTokens } from '../../src/providers/chunker.ts';

const SENTENCES = [
  'The keeper climbed the spiral stair at dusk to light the lamp.',
  'Fog rolled in from the sea and swallowed the headland whole.',
  'Ships far out on the water counted the flashes to find their way.',
  'A storm in the winter of that year shattered two panes of the lantern.',
  'Supplies came by boat once a fortnight when the swell allowed a landing.',
  'The logbook recorded wind, weather and every vessel that passed the rock.',
];

function document(paragraphs: number): string {
  const out: string[] = [];
  for (let p = 0; p < paragraphs; p++) {
    if (p % 4 === 0) out.push(`## Section ${p / 4 + 1}`);
    const sentences = Array.from({ length: 3 + (p % 3) }, (_, s) => `${SENTENCES[(p + s) % SENTENCES.length]} (${p}.${s})`);
    out.push(sentences.join(' '));
  }
  return out.join('\n\n');
}

/** Longest suffix of `a` that is also a prefix of `b`. */
function sharedEdge(a: string, b: string): string {
  for (let len = Math.min(a.length, b.length); len > 0; len--) {
    if (b.startsWith(a.slice(a.length - len))) return a.slice(a.length - len);
  }
  return '';
}

test('every chunk respects maxTokens and reports its true token count', () => {
  const chunks = chunkMarkdown(document(40), { maxTokens: 120, overlapTokens: 20 });
  assert.ok(chunks.length > 5, `expected several chunks, got ${chunks.length}`);
  chunks.forEach((chunk, i) => {
    assert.equal(chunk.index, i);
    assert.equal(chunk.tokenCount, countTokens(chunk.text));
    assert.ok(chunk.tokenCount <= 120, `chunk ${i} has ${chunk.tokenCount} tokens`);
    assert.ok(chunk.text.trim() === chunk.text && chunk.text !== '');
  });
});

test('consecutive chunks overlap by roughly overlapTokens', () => {
  const overlapTokens = 24;
  const chunks = chunkMarkdown(document(40), { maxTokens: 150, overlapTokens });
  assert.ok(chunks.length > 3);
  for (let i = 0; i + 1 < chunks.length; i++) {
    const edge = sharedEdge(chunks[i]!.text, chunks[i + 1]!.text);
    const tokens = countTokens(edge);
    assert.ok(tokens >= overlapTokens - 4 && tokens <= overlapTokens, `overlap ${i}->${i + 1} is ${tokens} tokens: ${JSON.stringify(edge)}`);
  }
});

test('no overlap when overlapTokens is 0, and all text is preserved in order', () => {
  const text = document(30);
  const chunks = chunkMarkdown(text, { maxTokens: 100, overlapTokens: 0 });
  const squash = (s: string) => s.replace(/\s+/g, ' ').trim();
  assert.equal(squash(chunks.map((c) => c.text).join(' ')), squash(text));
});

test('headings stay with the text that follows them', () => {
  // Long paragraphs under each heading: a heading never ends a chunk, even when the
  // overlap plus heading plus paragraph is tight.
  const long = Array.from({ length: 8 }, (_, i) => `## Part ${i}\n\n${SENTENCES.join(' ')} ${SENTENCES.slice(0, 2).join(' ')}`).join('\n\n');
  for (const [text, overlapTokens] of [[document(40), 0], [document(40), 20], [long, 20], [long, 0]] as const) {
    const chunks = chunkMarkdown(text, { maxTokens: 120, overlapTokens });
    for (const chunk of chunks) {
      const last = chunk.text.split('\n\n').at(-1)!;
      assert.ok(!/^## (Section|Part) \d+$/.test(last), `chunk ends with a bare heading: ${chunk.text}`);
    }
  }
});

test('a single paragraph larger than maxTokens is split on token boundaries', () => {
  const giant = Array.from({ length: 300 }, (_, i) => `lighthouse${i} beam déjà-vu 灯台 ${i}`).join(' ');
  assert.ok(countTokens(giant) > 2000);
  const chunks = chunkMarkdown(`# Title\n\n${giant}\n\nA closing paragraph.`, { maxTokens: 200, overlapTokens: 30 });
  assert.ok(chunks.length >= 10);
  for (const chunk of chunks) {
    assert.ok(chunk.tokenCount <= 200);
    assert.equal(chunk.tokenCount, countTokens(chunk.text));
    assert.ok(!chunk.text.includes('\uFFFD'), 'no character was cut in half');
  }
  // Without overlap the pieces are contiguous and reproduce the paragraph (chunk texts are
  // trimmed, so compare without whitespace).
  const plain = chunkMarkdown(giant, { maxTokens: 64, overlapTokens: 0 });
  const strip = (s: string) => s.replace(/\s+/g, '');
  assert.equal(plain.map((c) => strip(c.text)).join(''), strip(giant));
  // Cuts fall between words, never inside one.
  for (const chunk of plain) assert.match(chunk.text, /^(lighthouse|beam|déjà|-vu|灯台|\d)/);
});

test('a single enormous word is cut by characters without breaking surrogate pairs', () => {
  const word = 'ab𝒜'.repeat(2000); // one \p{L}+ run, with astral letters
  const chunks = chunkMarkdown(word, { maxTokens: 50, overlapTokens: 0 });
  assert.ok(chunks.length > 10);
  for (const chunk of chunks) {
    assert.ok(chunk.tokenCount <= 50);
    assert.ok(chunk.text.isWellFormed(), 'no lone surrogate');
  }
  assert.equal(chunks.map((c) => c.text).join(''), word);
});

test('fenced code blocks with blank lines are not split apart', () => {
  const code = '```js\nconst a = 1;\n\nconst b = 2;\n```';
  const chunks = chunkMarkdown(`Intro paragraph.\n\n${code}\n\nOutro.`, { maxTokens: 200, overlapTokens: 0 });
  assert.equal(chunks.length, 1);
  assert.ok(chunks[0]!.text.includes(code));
});

test('empty and whitespace-only input yields no chunks', () => {
  assert.deepEqual(chunkMarkdown('', { maxTokens: 100, overlapTokens: 10 }), []);
  assert.deepEqual(chunkMarkdown(' \n\n\t\r\n  ', { maxTokens: 100, overlapTokens: 10 }), []);
});

test('chunking is deterministic', () => {
  const text = document(25);
  assert.deepEqual(chunkMarkdown(text, { maxTokens: 90, overlapTokens: 15 }), chunkMarkdown(text, { maxTokens: 90, overlapTokens: 15 }));
});

test('special-token text is counted as ordinary text', () => {
  const chunks = chunkMarkdown('before <|endoftext|> after', { maxTokens: 32, overlapTokens: 0 });
  assert.equal(chunks.length, 1);
  assert.equal(chunks[0]!.text, 'before <|endoftext|> after');
});

test('bad options throw RangeError', () => {
  const bad = [
    { maxTokens: 15, overlapTokens: 0 },
    { maxTokens: 100, overlapTokens: 50 },
    { maxTokens: 100, overlapTokens: -1 },
    { maxTokens: 100.5, overlapTokens: 0 },
    { maxTokens: Number.NaN, overlapTokens: 0 },
  ];
  for (const options of bad) assert.throws(() => chunkMarkdown('text', options), RangeError, JSON.stringify(options));
  assert.doesNotThrow(() => chunkMarkdown('text', { maxTokens: 16, overlapTokens: 7 }));
});
