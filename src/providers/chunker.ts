// Splits parsed markdown into embedding-sized chunks measured in cl100k_base tokens, the
// tokenizer of OpenAI's embedding models, so a chunk never exceeds the model's input limit
// and the token counts stored with chunks mean what billing and retrieval budgets expect.
// Chunks follow the document's own structure (blank-line separated blocks, fenced code
// kept whole, a heading kept with the text under it) and only fall back to cutting on token
// boundaries for a block too large for any chunk. Each chunk after the first repeats the
// tail of the previous one so a sentence cut at a boundary is still retrievable in context.
// The function is pure and deterministic: re-chunking the same markdown yields the same
// chunks, which the pipeline relies on for idempotent retries.
import { encode, encodeGenerator } from 'gpt-tokenizer/encoding/cl100k_base';
import { CL100K_TOKEN_SPLIT_REGEX } from 'gpt-tokenizer/encodingParams/constants';
import type { Chunk, ChunkOptions } from './types.ts';

// Documents are untrusted text: a literal "<|endoftext|>" must count as ordinary text, not
// make the tokenizer throw (its default) or be encoded as a control token.
const ENCODE_OPTIONS = { disallowedSpecial: new Set<string>() };

export function countTokens(text: string): number {
  return encode(text, ENCODE_OPTIONS).length;
}

/** A pre-tokenizer match (roughly a word with its leading space) and its token count. */
interface Piece {
  text: string;
  tokens: number;
}

/**
 * The text cut where the tokenizer itself cuts it before BPE: the tokenizer's own split
 * regex paired with the token groups it yields for each match. Cutting here is cutting on
 * token boundaries without decoding token slices, which matters because gpt-tokenizer's
 * decode() shares one streaming TextDecoder across calls: a slice that ends inside a
 * multibyte character leaves bytes behind that corrupt the next decode() anywhere in the
 * process. Piece counts sum to the exact token count of the text.
 */
function toPieces(text: string): Piece[] {
  const groups = encodeGenerator(text, ENCODE_OPTIONS);
  const pieces: Piece[] = [];
  for (const [match] of text.matchAll(CL100K_TOKEN_SPLIT_REGEX)) {
    const group = groups.next();
    if (group.done) throw new Error('chunker: tokenizer and its split pattern disagree');
    pieces.push({ text: match, tokens: group.value.length });
  }
  if (!groups.next().done) throw new Error('chunker: tokenizer and its split pattern disagree');
  return pieces;
}

function sumTokens(pieces: Piece[]): number {
  let total = 0;
  for (const piece of pieces) total += piece.tokens;
  return total;
}

const BLOCK_SEPARATOR = '\n\n';

interface Unit {
  text: string;
  tokens: number;
  /** A later piece of a block cut on token boundaries: joins its predecessor with no separator. */
  continuation: boolean;
  heading: boolean;
}

export function chunkMarkdown(markdown: string, options: ChunkOptions): Chunk[] {
  validate(options);
  const { maxTokens, overlapTokens } = options;
  const blocks = splitBlocks(markdown.replace(/\r\n?/g, '\n'));
  if (blocks.length === 0) return [];

  // Pieces of an oversized block leave room for the overlap and a separator, so every
  // chunk that continues a cut block can still carry its full overlap.
  const pieceBudget = maxTokens - overlapTokens - 2;
  const units: Unit[] = [];
  for (const block of blocks) {
    const tokens = countTokens(block);
    if (tokens <= maxTokens) {
      units.push({ text: block, tokens, continuation: false, heading: isHeading(block) });
    } else {
      splitOnTokens(block, pieceBudget).forEach((piece, i) => {
        units.push({ text: piece.text, tokens: piece.tokens, continuation: i > 0, heading: false });
      });
    }
  }

  const chunks: Chunk[] = [];
  let previous: Piece[] | null = null;
  let i = 0;
  while (i < units.length) {
    const first = units[i]!;
    // A heading opening the chunk must leave room for the text it introduces, or the chunk
    // would hold only overlap and a heading.
    const following = first.heading ? units[i + 1] : undefined;
    const room = first.tokens + (following ? following.tokens + 1 : 0);
    let prefix = previous ? overlapFrom(previous, room, options) : '';
    const parts: Unit[] = [first];
    let estimate = (prefix ? countTokens(prefix) + 1 : 0) + first.tokens;
    i++;
    // Pack greedily on summed counts (BPE over blocks joined by a blank line is additive in
    // practice), then verify with one exact count and back off if the estimate was short.
    while (i < units.length) {
      const next = units[i]!;
      const added = next.tokens + (next.continuation ? 0 : 1);
      if (estimate + added > maxTokens) break;
      parts.push(next);
      estimate += added;
      i++;
    }
    // A heading as the last block would be separated from the text it introduces.
    while (parts.length > 1 && i < units.length && parts[parts.length - 1]!.heading) {
      parts.pop();
      i--;
    }
    let text = joinUnits(prefix, parts);
    let pieces = toPieces(text);
    let tokens = sumTokens(pieces);
    while (tokens > maxTokens) {
      if (parts.length > 1) {
        parts.pop();
        i--;
      } else if (prefix !== '') {
        prefix = ''; // a lone unit always fits on its own, by construction of the units
      } else {
        throw new Error(`chunker: a single block of ${tokens} tokens exceeds maxTokens`);
      }
      text = joinUnits(prefix, parts);
      pieces = toPieces(text);
      tokens = sumTokens(pieces);
    }
    if (text === '') continue; // a whitespace-only piece of an oversized block
    chunks.push({ index: chunks.length, text, tokenCount: tokens });
    previous = pieces;
  }
  return chunks;
}

function validate(options: ChunkOptions): void {
  const { maxTokens, overlapTokens } = options;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 16) {
    throw new RangeError(`maxTokens must be an integer >= 16, got ${maxTokens}`);
  }
  if (!Number.isSafeInteger(overlapTokens) || overlapTokens < 0 || overlapTokens >= maxTokens / 2) {
    throw new RangeError(`overlapTokens must be an integer in [0, maxTokens/2), got ${overlapTokens}`);
  }
}

/** Blocks are separated by blank lines, except inside fenced code, which stays one block. */
function splitBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  let current: string[] = [];
  let fence: string | null = null;
  const flush = () => {
    const block = current.join('\n').replace(/\s+$/, '');
    if (block.trim() !== '') blocks.push(block.replace(/^\n+/, ''));
    current = [];
  };
  for (const line of markdown.split('\n')) {
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence === null && marker) {
      fence = marker;
    } else if (fence !== null && marker && marker[0] === fence[0] && marker.length >= fence.length && line.trim() === marker) {
      fence = null;
    }
    if (fence === null && line.trim() === '') {
      flush();
    } else {
      current.push(line);
    }
  }
  flush();
  return blocks;
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

/**
 * Cuts an oversized block into pieces of at most `budget` tokens that concatenate back to
 * the block exactly, cutting between words (pre-tokenizer matches) and only inside a single
 * word-like run when that run alone exceeds the budget.
 */
function splitOnTokens(text: string, budget: number): Piece[] {
  const out: Piece[] = [];
  let current = '';
  let tokens = 0;
  const emit = () => {
    if (current !== '') out.push({ text: current, tokens });
    current = '';
    tokens = 0;
  };
  for (const piece of toPieces(text)) {
    if (piece.tokens > budget) {
      emit();
      for (const part of splitRun(piece.text, budget)) out.push(part);
      continue;
    }
    if (tokens + piece.tokens > budget) emit();
    current += piece.text;
    tokens += piece.tokens;
  }
  emit();
  return out;
}

/** Cuts a single pre-token run (a 10k-letter "word", a huge whitespace run) by characters. */
function splitRun(run: string, budget: number): Piece[] {
  const out: Piece[] = [];
  let rest = run;
  while (rest !== '') {
    // Largest prefix within budget, by binary search on character count.
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
 * The tail of the previous chunk to repeat: whole pre-tokenizer pieces (so it starts at a
 * word boundary) totalling at most `overlapTokens`, no more than half the previous chunk
 * (else a short chunk would be repeated whole), and small enough that the next unit still
 * fits (`room` tokens). It is always an exact suffix of the previous chunk's text.
 */
function overlapFrom(previous: Piece[], room: number, options: ChunkOptions): string {
  const allowance = Math.min(
    options.overlapTokens,
    Math.floor(sumTokens(previous) / 2),
    options.maxTokens - room - 2,
  );
  let tail = '';
  let tokens = 0;
  for (let i = previous.length - 1; i >= 0; i--) {
    const piece = previous[i]!;
    if (tokens + piece.tokens > allowance) break;
    tail = piece.text + tail;
    tokens += piece.tokens;
  }
  return tail.trim();
}
