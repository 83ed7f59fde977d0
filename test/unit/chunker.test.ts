import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { get_encoding } from 'tiktoken';
import { chunkMarkdown, countTokens } from '../../src/providers/chunker.ts';
import { DocumentLimitError, type ChunkOptions } from '../../src/providers/types.ts';
import { random, fill, randomFrom, pathological } from '../helpers/pathological-text.ts';

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

// The true cl100k_base count, by OpenAI's tokenizer itself (the tiktoken package the chunker
// uses, on the whole text at once), special-token text counted as ordinary text as the
// chunker does. gpt-tokenizer gives the same tokens on the fixtures, but not around the
// whitespace JavaScript's \s and Rust's disagree on (U+FEFF, U+0085).
const reference = get_encoding('cl100k_base');
after(() => reference.free());
const libraryCount = (text: string) => reference.encode_ordinary(text).length;

const MB = 1_000_000;

const strip = (s: string) => s.replace(/\s+/g, '');

function assertChunksValid(chunks: { text: string; tokenCount: number }[], options: ChunkOptions, label: string): void {
  chunks.forEach((chunk, i) => {
    assert.ok(chunk.tokenCount <= options.maxTokens, `${label}: chunk ${i} has ${chunk.tokenCount} tokens`);
    assert.equal(chunk.tokenCount, countTokens(chunk.text), `${label}: chunk ${i} reports its own count`);
    assert.ok(chunk.text !== '' && chunk.text.isWellFormed(), `${label}: chunk ${i} is non-empty and well formed`);
  });
}

test('1 MB of pathological text chunks in linear time, within maxTokens, covering the text', () => {
  // A quadratic tokenizer takes minutes on 1 MB of one run (the old one: 281 s for one
  // letter); linear code takes under half a second even for latin-1 noise or base64, the
  // slowest. The bound is loose because the machine running the tests may be busy.
  const options = { maxTokens: 512, overlapTokens: 0 };
  for (const [name, text] of Object.entries(pathological(MB))) {
    const started = performance.now();
    const chunks = chunkMarkdown(text, options);
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds < 10, `${name}: ${seconds.toFixed(1)} s`);
    assertChunksValid(chunks, options, name);
    // Without overlap the chunks are the text in order, less the whitespace cut at their edges.
    assert.equal(strip(chunks.map((c) => c.text).join('')), strip(text), `${name}: chunks cover the text`);
  }
});

test('pathological text with overlap: within maxTokens, each chunk a piece of the text in order', () => {
  const options = { maxTokens: 100, overlapTokens: 20 };
  for (const [name, text] of Object.entries(pathological(64_000))) {
    const chunks = chunkMarkdown(text, options);
    assertChunksValid(chunks, options, name);
    const whole = strip(text);
    let from = 0;
    for (const [i, chunk] of chunks.entries()) {
      const at = whole.indexOf(strip(chunk.text), from);
      assert.ok(at >= 0, `${name}: chunk ${i} is a piece of the text after chunk ${i - 1}`);
      from = at;
    }
  }
});

test('counts equal the library count on text without long runs', () => {
  const fixtures = ['sample.md', 'sample.txt', 'sample.html'].map((name) => readFileSync(new URL(`../fixtures/${name}`, import.meta.url), 'utf8'));
  const varied = [
    ...fixtures,
    document(60),
    fixtures.join('\r\n').replace(/\n/g, '\r\n'),
    'Déjà vu — naïve café, 灯台の光, Привет мир, مرحبا, emoji 😀🎉👍🏽, tabs\tand\u00a0nbsp\u3000',
    "It's they're we've I'd you'll DON'T 12345678 3.14159 1,000,000 <|endoftext|>",
    '```ts\nconst answer = 42;\n\n\nfunction f(x: number) {\n    return x * 2; // twice\n}\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |',
    // Whitespace-only pre-tokens right before long words: where encoding a slice alone
    // could merge them ("\n" and " " into "\n ") if slices were cut in the wrong place.
    'end.\n  sesquipedalianisms\n\n \t internationalization x\n  \n  characteristically'.repeat(200),
    'word '.repeat(5000) + '\n \n' + 'a\n   '.repeat(3000),
    // Pre-tokens of exactly 128 characters, the longest encoded whole.
    ' '.repeat(128) + 'x' + '\n'.repeat(128) + 'y' + '='.repeat(127) + 'z' + 'q'.repeat(127),
    // Whitespace as Unicode (and tiktoken) has it, not as JavaScript's \s: a byte order mark is
    // not whitespace, NEL is; and whitespace at the very end of a text.
    '\ufeff# Title\n\nText\u0085\u0085next \ufeff\ufeff word\u0085 \n'.repeat(300) + 'end \n  \n  ',
  ];
  for (const [i, text] of varied.entries()) {
    assert.equal(countTokens(text), libraryCount(text), `text ${i}`);
    for (let cut = 1; cut < 6; cut++) {
      const piece = text.slice(0, Math.floor((text.length * cut) / 6));
      assert.equal(countTokens(piece), libraryCount(piece), `text ${i}, prefix ${cut}/6`);
    }
  }
});

test('counts equal the library count on random text from all of Unicode, chunks included', () => {
  // The chunker splits text with a JavaScript copy of tiktoken's pattern and encodes runs of
  // matches: wherever the two engines cut text differently, counts would drift.
  const next = random(3);
  const whitespace = [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2003, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff, 0x200b, 0x180e];
  const ranges = [
    [0x20, 0x7f], [0x20, 0x7f], [0x00, 0x250], [0x300, 0x370], [0x370, 0x700], [0x900, 0xa00], [0x2000, 0x2190],
    [0x2460, 0x2500], [0x3000, 0x3100], [0x4e00, 0x5000], [0xfe00, 0xfff0], [0x1d400, 0x1d800], [0x1f300, 0x1f700],
    [0x10d40, 0x10d90], [0x16100, 0x16140], [0x1e5d0, 0x1e600], // scripts new in Unicode 16
    [0, 0x110000],
  ] as const;
  const extras = ["'s", "'S", "'\u017f", "'RE", "'ll", '<|endoftext|>', '\r\n', '\n\n', '\ud800', '123456', '.\n', '!\r\n\r\n'];
  const unit = () => {
    const r = next();
    let u: string;
    if (r < 0.15) u = String.fromCodePoint(whitespace[Math.floor(next() * whitespace.length)]!);
    else if (r < 0.2) u = extras[Math.floor(next() * extras.length)]!;
    else {
      const [from, to] = ranges[Math.floor(next() * ranges.length)]!;
      const code = from + Math.floor(next() * (to - from));
      u = String.fromCodePoint(code >= 0xd800 && code <= 0xdfff ? 0x41 : code);
    }
    return next() < 0.2 ? u.repeat(2 + Math.floor(next() * 4)) : u;
  };
  for (let i = 0; i < 40; i++) {
    const text = fill(1000 + Math.floor(next() * 5000), unit);
    assert.equal(countTokens(text), libraryCount(text), `text ${i}: ${JSON.stringify(text.slice(0, 60))}`);
    const options = { maxTokens: 16 + Math.floor(next() * 200), overlapTokens: Math.floor(next() * 8) };
    for (const chunk of chunkMarkdown(text, options)) {
      assert.equal(chunk.tokenCount, libraryCount(chunk.text), `text ${i}, chunk ${JSON.stringify(chunk.text.slice(0, 60))}`);
    }
  }
});

test('on runs longer than any token, the count stays close to the library count', () => {
  const next = random(11);
  const runs = {
    letters: fill(10_000, randomFrom(next, 0x61, 26)),
    spaces: ' '.repeat(10_000),
    equals: '='.repeat(10_000),
    cjk: fill(9_000, randomFrom(next, 0x4e00, 0x5200)),
    'tabs and spaces': ' \t'.repeat(5_000),
  };
  for (const [name, run] of Object.entries(runs)) {
    const exact = libraryCount(run);
    const ours = countTokens(run);
    assert.ok(Math.abs(ours - exact) <= exact * 0.03, `${name}: ${ours} tokens against ${exact}`);
  }
});

test('maxDocumentTokens: a document at the limit passes, one token over throws DocumentLimitError', () => {
  const paragraphs = Array.from({ length: 12 }, (_, p) => SENTENCES.slice(p % 3).join(' '));
  const giant = Array.from({ length: 300 }, (_, i) => `lighthouse${i} beam ${i}`).join(' ');
  const cases = [
    { text: paragraphs.join('\n\n'), tokens: paragraphs.reduce((sum, p) => sum + countTokens(p), 0) },
    { text: giant, tokens: countTokens(giant) }, // one block cut on token boundaries
  ];
  for (const { text, tokens } of cases) {
    const options = { maxTokens: 120, overlapTokens: 20 };
    assert.ok(chunkMarkdown(text, { ...options, maxDocumentTokens: tokens }).length > 1);
    assert.throws(
      () => chunkMarkdown(text, { ...options, maxDocumentTokens: tokens - 1 }),
      (err: unknown) => {
        assert.ok(err instanceof DocumentLimitError);
        assert.equal(err.setting, 'MAX_DOCUMENT_TOKENS');
        assert.equal(err.code, 'DOCUMENT_LIMIT_EXCEEDED');
        assert.match(err.message, new RegExp(`\\b${tokens - 1}\\b.*MAX_DOCUMENT_TOKENS`));
        return true;
      },
    );
  }
});

test('maxDocumentTokens stops at the limit without tokenizing the rest of the document', () => {
  const text = document(40).replace(/\n+/g, ' ').repeat(500); // one block of 5 MB
  const started = performance.now();
  countTokens(text);
  const whole = performance.now() - started;
  let early = Infinity;
  for (let attempt = 0; attempt < 3; attempt++) {
    const stopping = performance.now();
    assert.throws(() => chunkMarkdown(text, { maxTokens: 512, overlapTokens: 64, maxDocumentTokens: 1000 }), DocumentLimitError);
    early = Math.min(early, performance.now() - stopping);
  }
  assert.ok(early * 20 < whole, `stopped after ${early.toFixed(1)} ms; counting all of it takes ${whole.toFixed(1)} ms`);
});

test('bad maxDocumentTokens throws RangeError', () => {
  for (const maxDocumentTokens of [-1, 1.5, Number.NaN]) {
    assert.throws(() => chunkMarkdown('text', { maxTokens: 100, overlapTokens: 0, maxDocumentTokens }), RangeError);
  }
});
