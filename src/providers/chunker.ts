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
// Tokens are counted by the `tiktoken` package, OpenAI's own tokenizer compiled to
// WebAssembly, so counts are the true cl100k_base counts (special-token text such as
// "<|endoftext|>" counted as ordinary text). A call into WebAssembly costs about a
// microsecond, as much as encoding a few words, so the text is split here with the same
// pre-tokenizer pattern and runs of consecutive matches go to the encoder in one call; BPE
// never merges across matches, so the tokens of a run fall on its match boundaries and are
// attributed to the matches by their UTF-8 lengths. A chunk is recounted after its blocks
// were counted, to be exact where blocks meet; the recount reuses the blocks' counts of the
// matches it finds at the same places and encodes only the few that changed, so every text
// is encoded about once.
//
// Documents are untrusted, so time is linear in the input and memory of the order of input
// plus output whatever the text. BPE (tiktoken's too) is quadratic in the length of one
// pre-tokenizer match (a base64 data URI or a run of '=' is one match), so a match longer than
// LONG_RUN_CHARS is cut into segments encoded one by one, and shorter ones are encoded exactly
// as in one call on the whole text: counts equal encode_ordinary(text).length for text without
// such runs. On a longer run the count is that of a valid tokenization (tokens that decode to
// the run), not always BPE's own: on runs of 6,000-20,000 characters it is equal for one
// repeated letter, '=', spaces, newlines, CJK and emoji, +0.2% for random letters, +0.3% for
// dashes, -1.6% for alternating tabs and spaces (`npm run bench:chunker` prints the table).
// The text is walked as a stream of pieces, never as one object per pre-token of a document.
import { get_encoding } from 'tiktoken';
import { DocumentLimitError, type Chunk, type ChunkOptions } from './types.ts';

// The process's one encoder, made at import (0.15 s; its tables take 18 MB of the
// WebAssembly module's memory) and never freed: every document uses it. A call copies its
// text into the module's memory and the tokens out, and no call gets more than BATCH_CHARS
// plus a few matches of at most LONG_RUN_CHARS, so that memory, which WebAssembly never gives
// back, stays as it is whatever the documents; and tiktoken's own limits are never reached
// (1 MB of one letter in one call makes it panic, leaving the encoder unusable).
const encoder = get_encoding('cl100k_base');

// cl100k_base's pre-tokenizer as tiktoken writes it, for JavaScript:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// Rust's `\s` is Unicode's White_Space, which JavaScript's is not (it adds U+FEFF and lacks
// U+0085), so it is spelled out; and the case-insensitive group is spelled out with the letters
// Unicode's simple case folding matches (U+017F, long s, is an s): Node 22, which package.json
// allows, has no (?i:) groups.
// Both engines then cut text at the same places, which the batching below relies on to count
// exactly. Sticky, and run with test(): three times faster than exec() building match arrays.
const SPLIT = new RegExp(
  String.raw`'(?:[sS\u017F]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+`,
  'uy',
);

// The number of UTF-8 bytes of each token, learnt the first time it is met (one call into the
// module per distinct token, 0.5 µs; all of cl100k_base would take 55 ms at start-up).
const tokenBytes = new Uint8Array(100_277); // 0: not known yet (no token is empty)

function bytesOfToken(token: number): number {
  const known = tokenBytes[token];
  if (known) return known;
  const bytes = encoder.decode_single_token_bytes(token).length;
  if (token < tokenBytes.length) tokenBytes[token] = bytes;
  return bytes;
}

// The longest token of cl100k_base is 128 characters (128 spaces; the next longest, 96 to 114,
// are runs of '-', '/' and '*'), so a segment this long can still hold any token BPE would
// produce, and a multiple of 64 keeps runs of one character on their token grid (segments
// of 96 made runs of '=' 33% and of spaces 166% dearer). The cost per million characters of
// runs measured flat from 32 to 256 and growing from 512, where the quadratic merge of a
// segment starts to show (with gpt-tokenizer, CJK: 1.4 s at 128, 1.9 s at 512, 4.2 s at 2048;
// with tiktoken, one letter: 0.6 s in segments of 1024). Words, numbers, rules and
// indentation of ordinary documents are shorter, so their counts are exact.
const LONG_RUN_CHARS = 128;

// Runs of matches go to the encoder this many characters at a time (up to the end of a
// match): a call's fixed cost is then negligible (batches of 1 and 8 KB measured the same),
// and the smaller keeps the document-limit check fine-grained.
const BATCH_CHARS = 1024;

/** A stretch [start, end) of a text and the number of tokens it encodes to. */
interface Piece {
  start: number;
  end: number;
  tokens: number;
  /**
   * The count is that of the stretch's text encoded on its own (one match, or one segment of a
   * long one), so it holds wherever the same text is again one match or segment. False only
   * for matches the two engines split differently, counted together.
   */
  alone: boolean;
}

/** Pieces of a text already counted, whose index 0 is at `offset` in the text being counted. */
interface Counted {
  offset: number;
  pieces: readonly Piece[];
}

/**
 * The counts already known for a text made of other texts (blocks joined into a chunk, a
 * chunk's tail as the next one's overlap): a match or segment of the text that spans exactly
 * a piece counted alone has that piece's count, since the same characters encode to the same
 * tokens. Asked left to right, so it walks the pieces once.
 */
class Known {
  readonly #parts: readonly Counted[];
  #part = 0;
  #index = 0;

  constructor(parts: readonly Counted[]) {
    this.#parts = parts;
  }

  tokens(start: number, end: number): number | undefined {
    for (; this.#part < this.#parts.length; this.#part++, this.#index = 0) {
      const { offset, pieces } = this.#parts[this.#part]!;
      while (this.#index < pieces.length && offset + pieces[this.#index]!.start < start) this.#index++;
      const piece = pieces[this.#index];
      if (piece !== undefined) {
        return piece.alone && offset + piece.start === start && offset + piece.end === end ? piece.tokens : undefined;
      }
    }
    return undefined;
  }
}

/** The number of cl100k_base tokens of the text, special-token text counted as ordinary text. */
export function countTokens(text: string): number {
  return count(text);
}

function count(text: string, known?: Known): number {
  let total = 0;
  for (const piece of pieces(text, known)) total += piece.tokens;
  return total;
}

/**
 * The text cut where the tokenizer itself cuts it before BPE, left to right and covering it
 * exactly: one piece per pre-tokenizer match (roughly a word with its leading space) and per
 * segment of a long one, with the number of its tokens. Cutting between pieces is cutting on
 * token boundaries without decoding token slices. (Were the two engines ever to split a text
 * differently, say on a character newer than one's Unicode tables, a token spanning matches
 * makes one piece of them rather than an error.)
 *
 * Matches whose count is `known` are not encoded; runs of the others are, one call per run.
 * A run encoded alone yields the tokens the whole text would: the split pattern has no
 * lookbehind, so matching from a match boundary is unaffected by what precedes it, and only
 * its whitespace alternatives look past a match's end (`\s+(?!\S)`, and `\s*[\r\n]+` backing
 * off a run of whitespace). Those see the run's end instead of the text that follows, which
 * changes the result only when the run ends in two or more whitespace-only matches ("\n" then
 * " " before a word would be encoded as one "\n " group). So a run is cut after a match
 * holding a non-space, and whitespace matches left at its end are encoded one by one: a
 * whitespace-only match alone is matched whole (by `\s*[\r\n]+` if it ends in a newline, which
 * it then does, else by `\s+(?!\S)`).
 */
function* pieces(text: string, known?: Known): Generator<Piece, void, undefined> {
  const split = new RegExp(SPLIT); // a copy: its own lastIndex
  const ends: number[] = []; // ends of the matches waiting to be encoded, from runStart
  let runStart = 0;
  let exact = 0; // how many of them can be encoded together: up to the last one with a non-space
  let position = 0;
  while (position < text.length) {
    // Sticky: the next match starts where the last one ended, or there is none.
    if (!split.test(text)) throw new Error('chunker: the split pattern skipped text');
    const start = position;
    const end = split.lastIndex;
    position = end;
    const long = end - start > LONG_RUN_CHARS;
    const tokens = long ? undefined : known?.tokens(start, end);
    if (!long && tokens === undefined) {
      if (ends.length === 0) runStart = start;
      ends.push(end);
      if (holdsNonSpace(text, start, end)) {
        exact = ends.length;
        if (end - runStart >= BATCH_CHARS) {
          yield* encodeMatches(text, runStart, ends);
          ends.length = 0;
          exact = 0;
        }
      }
      continue;
    }
    if (ends.length > 0) {
      yield* flushRun(text, runStart, ends, exact);
      ends.length = 0;
      exact = 0;
    }
    if (tokens !== undefined) {
      yield { start, end, tokens, alone: true };
    } else {
      yield* segments(text, start, end, known);
    }
  }
  // The end of the text is where the whole text ends too: the run can be encoded as one.
  if (ends.length > 0) yield* encodeMatches(text, runStart, ends);
}

/** A run of matches followed by other text: its exact prefix together, then each match alone. */
function* flushRun(text: string, start: number, ends: number[], exact: number): Generator<Piece, void, undefined> {
  if (exact === ends.length) {
    yield* encodeMatches(text, start, ends);
    return;
  }
  if (exact > 0) yield* encodeMatches(text, start, ends.slice(0, exact));
  for (let i = exact; i < ends.length; i++) {
    yield* encodeMatches(text, i === 0 ? start : ends[i - 1]!, [ends[i]!]);
  }
}

/** Consecutive matches, from `start` to each of `ends`, in one call to the encoder. */
function* encodeMatches(text: string, start: number, ends: readonly number[]): Generator<Piece, void, undefined> {
  const end = ends[ends.length - 1]!;
  const tokens = encoder.encode_ordinary(text.slice(start, end));
  let next = 0; // the next token to attribute
  let tokenBytesEnd = 0; // UTF-8 bytes of the tokens attributed so far
  let matchBytesEnd = 0; // UTF-8 bytes of the run up to the end of the current match
  let pieceStart = start;
  let pieceTokens = 0;
  let matchStart = start;
  for (const matchEnd of ends) {
    matchBytesEnd += utf8Length(text, matchStart, matchEnd);
    while (tokenBytesEnd < matchBytesEnd && next < tokens.length) {
      tokenBytesEnd += bytesOfToken(tokens[next++]!);
      pieceTokens++;
    }
    // A token running on into the next match (never, unless the engines disagree) joins them.
    if (tokenBytesEnd === matchBytesEnd) {
      yield { start: pieceStart, end: matchEnd, tokens: pieceTokens, alone: pieceStart === matchStart };
      pieceStart = matchEnd;
      pieceTokens = 0;
    }
    matchStart = matchEnd;
  }
  if (next !== tokens.length || pieceStart !== end) throw new Error('chunker: the tokens do not cover the text');
}

/**
 * A long match cut every LONG_RUN_CHARS characters, never between the halves of a surrogate
 * pair. A segment equal to the one before (a run of one character) is not encoded again.
 */
function* segments(text: string, start: number, end: number, known: Known | undefined): Generator<Piece, void, undefined> {
  let last = '';
  let lastTokens = 0;
  for (let from = start; from < end; ) {
    let to = Math.min(from + LONG_RUN_CHARS, end);
    if (to < end && isHighSurrogate(text.charCodeAt(to - 1)) && isLowSurrogate(text.charCodeAt(to))) to--;
    let tokens = known?.tokens(from, to);
    if (tokens === undefined) {
      const segment = text.slice(from, to);
      if (segment !== last) {
        last = segment;
        lastTokens = encoder.encode_ordinary(segment).length;
      }
      tokens = lastTokens;
    }
    yield { start: from, end: to, tokens, alone: true };
    from = to;
  }
}

/** Whether text[start, end) has a character that is not White_Space (Unicode's, as tiktoken's `\s`). */
function holdsNonSpace(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    if (!isWhiteSpace(text.charCodeAt(i))) return true;
  }
  return false;
}

/** Unicode's White_Space property (all its characters are in the BMP). */
function isWhiteSpace(code: number): boolean {
  if (code <= 0x20) return code === 0x20 || (code >= 0x09 && code <= 0x0d);
  if (code < 0x85) return false;
  return (
    code === 0x85 ||
    code === 0xa0 ||
    code === 0x1680 ||
    (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 ||
    code === 0x2029 ||
    code === 0x202f ||
    code === 0x205f ||
    code === 0x3000
  );
}

/** The number of bytes of text[from, to) in UTF-8 as TextEncoder writes it (a lone surrogate as U+FFFD, 3 bytes). */
function utf8Length(text: string, from: number, to: number): number {
  let bytes = to - from;
  for (let i = from; i < to; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) {
      bytes += 1;
    } else if (isHighSurrogate(code) && i + 1 < to && isLowSurrogate(text.charCodeAt(i + 1))) {
      bytes += 2; // 4 bytes for the pair's two code units
      i++;
    } else {
      bytes += 2;
    }
  }
  return bytes;
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

const NO_PIECES: readonly Piece[] = [];

interface Unit {
  text: string;
  tokens: number;
  /** A later piece of a block cut on token boundaries: joins its predecessor with no separator. */
  continuation: boolean;
  heading: boolean;
  /** The pieces it was counted as, at `base` in their text (its block), until it is packed. */
  pieces: readonly Piece[];
  base: number;
}

/** A chunk's text with its pieces, kept so the next chunk can take its overlap from the tail. */
interface Measured {
  text: string;
  pieces: Piece[];
  tokens: number;
}

/** The overlap a chunk repeats: the tail of the previous chunk, whose pieces start at `-base`. */
interface Overlap {
  text: string;
  pieces: readonly Piece[];
  base: number;
}

const NO_OVERLAP: Overlap = { text: '', pieces: NO_PIECES, base: 0 };

export function chunkMarkdown(markdown: string, options: ChunkOptions): Chunk[] {
  validate(options);
  const { maxTokens } = options;
  // Units are made as the packing reaches them, so only the units of the chunk being packed
  // are held, with the pieces they were counted as, which the chunk's recount reuses.
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
    let prefix = previous ? overlapFrom(previous, room, options) : NO_OVERLAP;
    const parts: Unit[] = [first];
    let estimate = (prefix.text ? countOverlap(prefix) + 1 : 0) + first.tokens;
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
    let measured = measure(prefix, parts);
    while (measured.tokens > maxTokens) {
      if (parts.length > 1) {
        parts.pop();
        i--;
      } else if (prefix.text !== '') {
        prefix = NO_OVERLAP; // a lone unit always fits on its own, by construction of the units
      } else {
        throw new Error(`chunker: a single block of ${measured.tokens} tokens exceeds maxTokens`);
      }
      measured = measure(prefix, parts);
    }
    for (const part of parts) part.pieces = NO_PIECES; // packed for good
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
    // Counted up to the first piece past maxTokens, so an oversized block stops early.
    const counted: Piece[] = [];
    let tokens = 0;
    for (const piece of pieces(block)) {
      counted.push(piece);
      tokens += piece.tokens;
      if (tokens > maxTokens) break;
    }
    if (tokens <= maxTokens) {
      tally(tokens);
      yield { text: block, tokens, continuation: false, heading: isHeading(block), pieces: counted, base: 0 };
    } else {
      yield* cutBlock(block, pieceBudget, tally, new Known([{ offset: 0, pieces: counted }]));
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

/**
 * The chunk made of the overlap and the units, joined as they are in the document (a blank line
 * between blocks, nothing between the pieces of a cut block) and trimmed, with its pieces and
 * exact count. The count reuses those of the units and of the overlap wherever the joined text
 * splits as they did, which is everywhere but around the joints.
 */
function measure(prefix: Overlap, parts: readonly Unit[]): Measured {
  let joined = prefix.text;
  const counted: Counted[] = [{ offset: -prefix.base, pieces: prefix.pieces }];
  for (const part of parts) {
    if (joined !== '' && !part.continuation) joined += BLOCK_SEPARATOR;
    counted.push({ offset: joined.length - part.base, pieces: part.pieces });
    joined += part.text;
  }
  const untrimmed = joined.trimStart();
  const lead = joined.length - untrimmed.length;
  for (const part of counted) part.offset -= lead;
  const text = untrimmed.trimEnd();
  const list: Piece[] = [];
  let tokens = 0;
  for (const piece of pieces(text, new Known(counted))) {
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
function* cutBlock(block: string, budget: number, tally: (tokens: number) => void, known: Known): Generator<Unit, void, undefined> {
  let start = 0;
  let end = 0;
  let tokens = 0;
  let counted: Piece[] = [];
  let continuation = false;
  const unit = (text: string, unitTokens: number, unitPieces: readonly Piece[], base: number): Unit => {
    const made = { text, tokens: unitTokens, continuation, heading: false, pieces: unitPieces, base };
    continuation = true;
    return made;
  };
  for (const piece of pieces(block, known)) {
    tally(piece.tokens);
    if (piece.tokens > budget || tokens + piece.tokens > budget) {
      if (end > start) yield unit(block.slice(start, end), tokens, counted, start);
      start = end;
      tokens = 0;
      counted = [];
    }
    if (piece.tokens > budget) {
      for (const part of splitRun(block.slice(piece.start, piece.end), budget)) yield unit(part.text, part.tokens, part.pieces, 0);
      start = end = piece.end;
      continue;
    }
    end = piece.end;
    tokens += piece.tokens;
    counted.push(piece);
  }
  if (end > start) yield unit(block.slice(start, end), tokens, counted, start);
}

/**
 * Cuts one piece (a word-like match of at most LONG_RUN_CHARS, or a segment of a longer one)
 * by characters: the largest prefix within budget, by binary search on its length.
 */
function splitRun(run: string, budget: number): { text: string; tokens: number; pieces: Piece[] }[] {
  const out: { text: string; tokens: number; pieces: Piece[] }[] = [];
  let rest = run;
  while (rest !== '') {
    let lo = 1;
    let hi = rest.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (count(rest.slice(0, mid)) <= budget) lo = mid;
      else hi = mid - 1;
    }
    let cut = lo;
    // Never separate the halves of a surrogate pair.
    if (cut < rest.length && /[\uD800-\uDBFF]/.test(rest[cut - 1]!)) cut = cut > 1 ? cut - 1 : cut + 1;
    const text = rest.slice(0, cut);
    const list = [...pieces(text)];
    out.push({ text, tokens: list.reduce((sum, piece) => sum + piece.tokens, 0), pieces: list });
    rest = rest.slice(cut);
  }
  return out;
}

/** The overlap's count, from the pieces of the chunk it was taken from (all but a trimmed first one). */
function countOverlap(overlap: Overlap): number {
  return count(overlap.text, new Known([{ offset: -overlap.base, pieces: overlap.pieces }]));
}

/**
 * The tail of the previous chunk to repeat: whole pieces (so it starts at a word boundary)
 * totalling at most `overlapTokens`, no more than half the previous chunk (else a short chunk
 * would be repeated whole), and small enough that the next unit still fits (`room` tokens).
 * It is always an exact suffix of the previous chunk's text.
 */
function overlapFrom(previous: Measured, room: number, options: ChunkOptions): Overlap {
  const allowance = Math.min(options.overlapTokens, Math.floor(previous.tokens / 2), options.maxTokens - room - 2);
  let start = previous.text.length;
  let first = previous.pieces.length;
  let tokens = 0;
  for (let i = previous.pieces.length - 1; i >= 0; i--) {
    const piece = previous.pieces[i]!;
    if (tokens + piece.tokens > allowance) break;
    start = piece.start;
    first = i;
    tokens += piece.tokens;
  }
  const tail = previous.text.slice(start);
  const text = tail.trim();
  if (text === '') return NO_OVERLAP;
  return { text, pieces: previous.pieces.slice(first), base: start + (tail.length - tail.trimStart().length) };
}
