// Splits parsed markdown into embedding-sized chunks measured in cl100k_base tokens, the
// tokenizer of OpenAI's embedding models, so a chunk never exceeds the model's input limit
// and the token counts stored with chunks mean what billing and retrieval budgets expect.
// Chunks follow the document's own structure (blank-line separated blocks, fenced code
// kept whole, a heading kept with the text under it) and only fall back to cutting on token
// boundaries for a block too large for any chunk. Each chunk after the first repeats the
// tail of the previous one so a sentence cut at a boundary is still retrievable in context.
// The function is pure and deterministic: re-chunking the same markdown yields the same
// chunks, which the pipeline relies on for idempotent retries.
//
// Documents are untrusted, so time is linear in the input and memory of the order of input
// plus output whatever the text. gpt-tokenizer's BPE is quadratic in the length of one
// pre-tokenizer match (a base64 data URI or a run of '=' is one match), so a match longer than
// LONG_RUN_CHARS is cut into segments encoded one by one, and shorter ones are encoded exactly
// as in one call on the whole text: counts equal encode(text).length for text without such
// runs. On a longer run the count is that of a valid tokenization (tokens that decode to the
// run), not always BPE's own: on runs of 6,000-20,000 characters it is equal for one repeated
// letter, '=', spaces, newlines, CJK and emoji, +0.2% for random letters, +0.3% for dashes,
// -1.6% for alternating tabs and spaces (`npm run bench:chunker` prints the table). The text
// is walked as a stream of pieces, never as one object per pre-token of a block or document.
import { GptEncoding } from 'gpt-tokenizer/GptEncoding';
import cl100kRanks from 'gpt-tokenizer/bpeRanks/cl100k_base';
import { CL100K_TOKEN_SPLIT_REGEX } from 'gpt-tokenizer/encodingParams/constants';
import { DocumentLimitError, type Chunk, type ChunkOptions } from './types.ts';

// Documents are untrusted text: a literal "<|endoftext|>" must count as ordinary text, not
// make the tokenizer throw (its default) or be encoded as a control token.
const ENCODE_OPTIONS = { disallowedSpecial: new Set<string>() };

// The chunker's own cl100k_base encoder, built as 'gpt-tokenizer/encoding/cl100k_base' builds
// the shared one (about 4 MB, 20 ms), so that its merge cache can be managed without touching
// the instance the embedder uses.
const encoder = GptEncoding.getEncodingApi('cl100k_base', () => cl100kRanks);

// The library's merge cache is an LRU over a Map bounded at 100,000 entries; once full, each
// eviction walks the deleted entries at the front of the Map, so a full cache is slower than
// none (1 MB of base64 counted in 1.0 s with a fresh cache, 3.8 s with a full one; latin-1
// noise 1.9 s and 8.6 s; even 2 MB of prose with rare words, 0.69 s against 0.32 s). So the
// cache is emptied every CACHE_WINDOW_CHARS characters handed to the encoder, and sized so it
// never evicts: a window adds at most one entry per character, and keys are distinct
// matches, so it never holds more than about a window of text. 64 Ki measured fastest among
// 4 Ki to 1 Mi.
const CACHE_WINDOW_CHARS = 65_536;
// Twice the window: a generator suspended across a clear adds up to one batch more.
encoder.setMergeCacheSize(2 * CACHE_WINDOW_CHARS);
let windowChars = 0;

function admit(text: string): string {
  windowChars += text.length;
  if (windowChars > CACHE_WINDOW_CHARS) {
    encoder.clearMergeCache();
    windowChars = text.length;
  }
  return text;
}

function libraryCount(text: string): number {
  return encoder.countTokens(admit(text), ENCODE_OPTIONS);
}

function libraryGroups(text: string): Generator<number[], number, undefined> {
  return encoder.encodeGenerator(admit(text), ENCODE_OPTIONS);
}

// The longest token of cl100k_base is 128 characters (128 spaces; the next longest, 96 to 114,
// are runs of '-', '/' and '*'), so a segment this long can still hold any token BPE would
// produce, and a multiple of 64 keeps runs of one character on their token grid (segments
// of 96 made runs of '=' 33% and of spaces 166% dearer). The cost per million characters of
// runs measured flat from 32 to 256 and growing from 512, where the quadratic merge of a
// segment starts to show (CJK: 1.4 s at 128, 1.9 s at 512, 4.2 s at 2048). Words, numbers,
// rules and indentation of ordinary documents are shorter, so their counts are exact.
const LONG_RUN_CHARS = 128;

// Runs of short matches go to the library this many characters at a time: each call has a
// fixed cost (it clones its regex, checks for special tokens), and one call per match made
// prose 1.4 times slower to count, while batches of 1 and 4 KB measured the same; the smaller
// keeps the document-limit check fine-grained.
const BATCH_CHARS = 1024;

// V8 returns a substring of 13 characters or more as a view that keeps its whole parent
// string alive, and the encoder keeps the matches it merges as keys of its cache. Matches
// this long are therefore handed over as copies, one at a time, or a 13-character word
// cached at the end of a document would pin the whole document in memory after chunking
// returns; shorter substrings are copies already.
const VIEW_MIN_CHARS = 13;

const NON_SPACE = /\S/;

/** A stretch [start, end) of a text and the number of tokens it encodes to. */
interface Piece {
  start: number;
  end: number;
  tokens: number;
}

export function countTokens(text: string): number {
  let total = 0;
  for (const piece of pieces(text, false)) total += piece.tokens;
  return total;
}

/** The text's count, or the first partial count past `limit` (so an oversized text stops early). */
function countUpTo(text: string, limit: number): number {
  let total = 0;
  for (const piece of pieces(text, false)) {
    total += piece.tokens;
    if (total > limit) break;
  }
  return total;
}

/**
 * The text cut where the tokenizer itself cuts it before BPE, left to right and covering it
 * exactly. With `perMatch`, one piece per pre-tokenizer match (roughly a word with its leading
 * space) and per segment of a long one, with the size of the group of tokens the library gives
 * it: cutting between pieces is cutting on token boundaries without decoding token slices,
 * which matters because gpt-tokenizer's decode() shares one streaming TextDecoder across
 * calls, so a slice ending inside a multibyte character would corrupt the next decode()
 * anywhere in the process. Without `perMatch`, whole batches (cheaper, for counting).
 *
 * A batch is encoded alone, which yields the groups the whole text would: the split pattern
 * has no lookbehind, so matching from a match boundary is unaffected by what precedes it,
 * and only its whitespace alternatives look ahead (`\s+$`, `\s+(?!\S)`). Those see the
 * batch's end instead of the text that follows, which changes the result only when the batch
 * ends in two or more whitespace-only matches ("\n" then " " before a word would be encoded
 * as one "\n " group). So a batch is cut after a match holding a non-space, and whitespace
 * matches left at the end before a long match are encoded one by one: a whitespace-only
 * match alone is matched whole by `\s+$`.
 */
function* pieces(text: string, perMatch: boolean): Generator<Piece, void, undefined> {
  const split = new RegExp(CL100K_TOKEN_SPLIT_REGEX); // a copy: its own lastIndex
  const batch: number[] = []; // ends of the matches waiting to be encoded, from batchStart
  let batchStart = 0;
  let exact = 0; // how many of them can be encoded together: up to the last one with a non-space
  let position = 0;
  for (let match = split.exec(text); match !== null; match = split.exec(text)) {
    const start = match.index;
    const end = split.lastIndex;
    if (start !== position) throw new Error('chunker: the split pattern skipped text');
    position = end;
    if (end - start < VIEW_MIN_CHARS) {
      batch.push(end);
      if (NON_SPACE.test(match[0])) {
        exact = batch.length;
        if (end - batchStart >= BATCH_CHARS) {
          yield* encodeMatches(text, batchStart, batch, perMatch);
          batch.length = 0;
          exact = 0;
          batchStart = end;
        }
      }
      continue;
    }
    yield* flushBatch(text, batchStart, batch, exact, perMatch);
    batch.length = 0;
    exact = 0;
    batchStart = end;
    if (end - start <= LONG_RUN_CHARS) {
      yield { start, end, tokens: libraryCount(copyOf(text.slice(start, end))) };
    } else {
      yield* segments(text, start, end);
    }
  }
  if (position !== text.length) throw new Error('chunker: the split pattern skipped text');
  // The end of the text is where the whole text ends too: the batch can be encoded as one.
  yield* encodeMatches(text, batchStart, batch, perMatch);
}

/** The pending batch before a long match: its exact prefix together, then each match alone. */
function* flushBatch(text: string, start: number, ends: number[], exact: number, perMatch: boolean): Generator<Piece, void, undefined> {
  if (exact === ends.length) {
    yield* encodeMatches(text, start, ends, perMatch);
    return;
  }
  yield* encodeMatches(text, start, ends.slice(0, exact), perMatch);
  for (let i = exact; i < ends.length; i++) {
    yield* encodeMatches(text, i === 0 ? start : ends[i - 1]!, [ends[i]!], perMatch);
  }
}

/** Consecutive short matches, from `start` to each of `ends`, in one call to the library. */
function* encodeMatches(text: string, start: number, ends: number[], perMatch: boolean): Generator<Piece, void, undefined> {
  if (ends.length === 0) return;
  const end = ends[ends.length - 1]!;
  const slice = text.slice(start, end);
  if (!perMatch) {
    yield { start, end, tokens: libraryCount(slice) };
    return;
  }
  let i = 0;
  let from = start;
  for (const group of libraryGroups(slice)) {
    const to = ends[i++];
    if (to === undefined) throw new Error('chunker: tokenizer and its split pattern disagree');
    yield { start: from, end: to, tokens: group.length };
    from = to;
  }
  if (i !== ends.length) throw new Error('chunker: tokenizer and its split pattern disagree');
}

/** A long match cut every LONG_RUN_CHARS characters, never between the halves of a surrogate pair. */
function* segments(text: string, start: number, end: number): Generator<Piece, void, undefined> {
  for (let from = start; from < end; ) {
    let to = Math.min(from + LONG_RUN_CHARS, end);
    if (to < end && isHighSurrogate(text.charCodeAt(to - 1)) && isLowSurrogate(text.charCodeAt(to))) to--;
    yield { start: from, end: to, tokens: libraryCount(copyOf(text.slice(from, to))) };
    from = to;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

/** The same characters as a string of its own: neither a view into another string nor a tree of parts. */
function copyOf(text: string): string {
  // Slicing a concatenation makes V8 flatten it into a fresh string first.
  return (' ' + text).slice(1);
}

const BLOCK_SEPARATOR = '\n\n';

interface Unit {
  text: string;
  tokens: number;
  /** A later piece of a block cut on token boundaries: joins its predecessor with no separator. */
  continuation: boolean;
  heading: boolean;
}

/** A chunk's text with its pieces, kept so the next chunk can take its overlap from the tail. */
interface Measured {
  text: string;
  pieces: Piece[];
  tokens: number;
}

export function chunkMarkdown(markdown: string, options: ChunkOptions): Chunk[] {
  validate(options);
  const { maxTokens } = options;
  // Units are made as the packing reaches them, so a chunk is recounted right after its text
  // was tokenized, while its pieces are still in the encoder's cache (measured: 0.55-0.65 of
  // the CPU time on random text, 0.8 on prose, against making all units first), and only the
  // units of the chunk being packed are held.
  const units = new UnitQueue(documentUnits(markdown, options));
  const chunks: Chunk[] = [];
  let previous: Measured | null = null;
  let i = 0;
  for (let first = units.at(i); first !== undefined; first = units.at(i)) {
    units.release(i);
    // A heading opening the chunk must leave room for the text it introduces, or the chunk
    // would hold only overlap and a heading.
    const following = first.heading ? units.at(i + 1) : undefined;
    const room = first.tokens + (following ? following.tokens + 1 : 0);
    let prefix = previous ? overlapFrom(previous, room, options) : '';
    const parts: Unit[] = [first];
    let estimate = (prefix ? countTokens(prefix) + 1 : 0) + first.tokens;
    i++;
    // Pack greedily on summed counts (BPE over blocks joined by a blank line is additive in
    // practice), then verify with one exact count and back off if the estimate was short.
    for (let next = units.at(i); next !== undefined; next = units.at(i)) {
      const added = next.tokens + (next.continuation ? 0 : 1);
      if (estimate + added > maxTokens) break;
      parts.push(next);
      estimate += added;
      i++;
    }
    // A heading as the last block would be separated from the text it introduces.
    while (parts.length > 1 && units.at(i) !== undefined && parts[parts.length - 1]!.heading) {
      parts.pop();
      i--;
    }
    let measured = measure(joinUnits(prefix, parts));
    while (measured.tokens > maxTokens) {
      if (parts.length > 1) {
        parts.pop();
        i--;
      } else if (prefix !== '') {
        prefix = ''; // a lone unit always fits on its own, by construction of the units
      } else {
        throw new Error(`chunker: a single block of ${measured.tokens} tokens exceeds maxTokens`);
      }
      measured = measure(joinUnits(prefix, parts));
    }
    if (measured.text === '') continue; // a whitespace-only piece of an oversized block
    chunks.push({ index: chunks.length, text: measured.text, tokenCount: measured.tokens });
    previous = measured;
  }
  return chunks;
}

/** The units of a document, pulled from their generator as the packing reaches them. */
class UnitQueue {
  #units: Unit[] = [];
  #base = 0; // the index in the document of #units[0]
  #source: Iterator<Unit, void, undefined>;

  constructor(source: Iterator<Unit, void, undefined>) {
    this.#source = source;
  }

  /** Unit `i` of the document, or undefined past the last. */
  at(i: number): Unit | undefined {
    while (i - this.#base >= this.#units.length) {
      const next = this.#source.next();
      if (next.done) return undefined;
      this.#units.push(next.value);
    }
    return this.#units[i - this.#base];
  }

  /** The units before `i` are packed for good. */
  release(i: number): void {
    if (i - this.#base < 1024) return; // dropped in bulk, so each drop moves few units
    this.#units.splice(0, i - this.#base);
    this.#base = i;
  }
}

/** The document's blocks as units: whole when they fit in a chunk, else cut on token boundaries. */
function* documentUnits(markdown: string, options: ChunkOptions): Generator<Unit, void, undefined> {
  const { maxTokens, overlapTokens } = options;
  const tally = documentMeter(options.maxDocumentTokens);
  // Pieces of an oversized block leave room for the overlap and a separator, so every
  // chunk that continues a cut block can still carry its full overlap.
  const pieceBudget = maxTokens - overlapTokens - 2;
  for (const block of blocks(normalizeNewlines(markdown))) {
    const tokens = countUpTo(block, maxTokens);
    if (tokens <= maxTokens) {
      tally(tokens);
      yield { text: block, tokens, continuation: false, heading: isHeading(block) };
    } else {
      yield* cutBlock(block, pieceBudget, tally);
    }
  }
}

function validate(options: ChunkOptions): void {
  const { maxTokens, overlapTokens, maxDocumentTokens } = options;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 16) {
    throw new RangeError(`maxTokens must be an integer >= 16, got ${maxTokens}`);
  }
  if (!Number.isSafeInteger(overlapTokens) || overlapTokens < 0 || overlapTokens >= maxTokens / 2) {
    throw new RangeError(`overlapTokens must be an integer in [0, maxTokens/2), got ${overlapTokens}`);
  }
  if (maxDocumentTokens !== undefined && (!Number.isSafeInteger(maxDocumentTokens) || maxDocumentTokens < 0)) {
    throw new RangeError(`maxDocumentTokens must be an integer >= 0, got ${maxDocumentTokens}`);
  }
}

/**
 * The document's running token count: the tokens of its blocks, the text the chunks are made
 * of (blank lines between blocks are not counted, overlaps are not counted twice). It is fed
 * as blocks are tokenized, so a document past the limit fails before the rest is read.
 */
function documentMeter(limit: number | undefined): (tokens: number) => void {
  if (limit === undefined) return () => {};
  let total = 0;
  return (tokens) => {
    total += tokens;
    if (total > limit) {
      throw new DocumentLimitError(
        'MAX_DOCUMENT_TOKENS',
        `the document has more than ${limit} tokens, the limit set by MAX_DOCUMENT_TOKENS`,
      );
    }
  };
}

// Newlines are normalised this many characters at a time (see normalizeNewlines).
const NEWLINE_WINDOW_CHARS = 65_536;

/**
 * CRLF and lone CR as LF. One global replace over a whole document returns, in V8, a tree of
 * slices (about 64 bytes per replacement: 57 MB of CRLF-terminated lines became 600 MB); each
 * window's result is flattened, and joining flat strings makes one flat string.
 */
function normalizeNewlines(markdown: string): string {
  if (!markdown.includes('\r')) return markdown;
  const parts: string[] = [];
  for (let start = 0; start < markdown.length; ) {
    let end = Math.min(start + NEWLINE_WINDOW_CHARS, markdown.length);
    if (markdown.charCodeAt(end - 1) === 13 && end < markdown.length) end++; // keep a CRLF together
    parts.push(copyOf(markdown.slice(start, end).replace(/\r\n?/g, '\n')));
    start = end;
  }
  return parts.join('');
}

/**
 * Blocks are separated by blank lines, except inside fenced code, which stays one block. A
 * block is a run of whole lines, so it is sliced out of the text rather than re-joined.
 */
function* blocks(markdown: string): Generator<string, void, undefined> {
  let fence: string | null = null;
  let blockStart = -1; // where the current block's first line starts; -1: no current block
  let blockEnd = 0;
  for (let lineStart = 0; lineStart <= markdown.length; ) {
    let lineEnd = markdown.indexOf('\n', lineStart);
    if (lineEnd === -1) lineEnd = markdown.length;
    const line = markdown.slice(lineStart, lineEnd);
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence === null && marker) {
      fence = marker;
    } else if (fence !== null && marker && marker[0] === fence[0] && marker.length >= fence.length && line.trim() === marker) {
      fence = null;
    }
    if (fence === null && line.trim() === '') {
      if (blockStart >= 0) {
        const block = endBlock(markdown, blockStart, blockEnd);
        if (block !== '') yield block;
        blockStart = -1;
      }
    } else {
      if (blockStart < 0) blockStart = lineStart;
      blockEnd = lineEnd;
    }
    lineStart = lineEnd + 1;
  }
  if (blockStart >= 0) {
    const block = endBlock(markdown, blockStart, blockEnd);
    if (block !== '') yield block;
  }
}

/**
 * The block without trailing whitespace. trimEnd() strips exactly what /\s+$/ would, but in
 * linear time: the regex retries from every space of a long run (3.3 s for 100 KB of spaces).
 */
function endBlock(markdown: string, start: number, end: number): string {
  return markdown.slice(start, end).trimEnd();
}

function isHeading(block: string): boolean {
  return !block.includes('\n') && /^ {0,3}#{1,6}(?:[ \t]|$)/.test(block);
}

function joinUnits(prefix: string, parts: Unit[]): string {
  let text = prefix;
  for (const part of parts) {
    text += text === '' || part.continuation ? part.text : BLOCK_SEPARATOR + part.text;
  }
  return text.trim();
}

function measure(text: string): Measured {
  const list: Piece[] = [];
  let tokens = 0;
  for (const piece of pieces(text, true)) {
    list.push(piece);
    tokens += piece.tokens;
  }
  return { text, pieces: list, tokens };
}

/**
 * Cuts an oversized block into units of at most `budget` tokens that concatenate back to the
 * block exactly, cutting between pieces and only inside one when it alone exceeds the budget.
 * The block's pieces are streamed, and so are the units.
 */
function* cutBlock(block: string, budget: number, tally: (tokens: number) => void): Generator<Unit, void, undefined> {
  let start = 0;
  let end = 0;
  let tokens = 0;
  let continuation = false;
  const unit = (text: string, unitTokens: number): Unit => {
    const made = { text, tokens: unitTokens, continuation, heading: false };
    continuation = true;
    return made;
  };
  for (const piece of pieces(block, true)) {
    tally(piece.tokens);
    if (piece.tokens > budget || tokens + piece.tokens > budget) {
      if (end > start) yield unit(block.slice(start, end), tokens);
      start = end;
      tokens = 0;
    }
    if (piece.tokens > budget) {
      for (const part of splitRun(block.slice(piece.start, piece.end), budget)) yield unit(part.text, part.tokens);
      start = end = piece.end;
      continue;
    }
    end = piece.end;
    tokens += piece.tokens;
  }
  if (end > start) yield unit(block.slice(start, end), tokens);
}

/**
 * Cuts one piece (a word-like match of at most LONG_RUN_CHARS, or a segment of a longer one)
 * by characters: the largest prefix within budget, by binary search on its length.
 */
function splitRun(run: string, budget: number): { text: string; tokens: number }[] {
  const out: { text: string; tokens: number }[] = [];
  let rest = run;
  while (rest !== '') {
    let lo = 1;
    let hi = rest.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (countTokens(rest.slice(0, mid)) <= budget) lo = mid;
      else hi = mid - 1;
    }
    let cut = lo;
    // Never separate the halves of a surrogate pair.
    if (cut < rest.length && /[\uD800-\uDBFF]/.test(rest[cut - 1]!)) cut = cut > 1 ? cut - 1 : cut + 1;
    const text = rest.slice(0, cut);
    out.push({ text, tokens: countTokens(text) });
    rest = rest.slice(cut);
  }
  return out;
}

/**
 * The tail of the previous chunk to repeat: whole pieces (so it starts at a word boundary)
 * totalling at most `overlapTokens`, no more than half the previous chunk (else a short chunk
 * would be repeated whole), and small enough that the next unit still fits (`room` tokens).
 * It is always an exact suffix of the previous chunk's text.
 */
function overlapFrom(previous: Measured, room: number, options: ChunkOptions): string {
  const allowance = Math.min(options.overlapTokens, Math.floor(previous.tokens / 2), options.maxTokens - room - 2);
  let start = previous.text.length;
  let tokens = 0;
  for (let i = previous.pieces.length - 1; i >= 0; i--) {
    const piece = previous.pieces[i]!;
    if (tokens + piece.tokens > allowance) break;
    start = piece.start;
    tokens += piece.tokens;
  }
  return previous.text.slice(start).trim();
}
