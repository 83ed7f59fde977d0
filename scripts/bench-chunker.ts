// The chunker (src/providers/chunker.ts) measured in one process: throughput on prose beside
// gpt-tokenizer's count and encode and tiktoken's encode_ordinary of the same text (the
// chunker counts with tiktoken), scaling from 100 KB to 1 MB on the inputs that made the old
// tokenizer quadratic, how far its count strays from true BPE on runs longer than any token,
// and time and peak heap for 50 MB of prose on one line (in a worker thread, whose heap this
// thread samples while it chunks).
//
//   npm run bench:chunker        (about 40 s on 2 cores)
//
// Sizes are bytes of UTF-8 (1 MB = 1,000,000). Times are CPU time of this process, the least
// of a few runs, since other processes share the machine and its wall time varies with them
// (the 50 MB run gives both). Progress goes to stderr, the report (markdown) to stdout.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { countTokens as libraryCountTokens, encode } from 'gpt-tokenizer/encoding/cl100k_base';
import { get_encoding } from 'tiktoken';
import { chunkMarkdown, countTokens } from '../src/providers/chunker.ts';
import type { ChunkOptions } from '../src/providers/types.ts';
import { random, fill, randomFrom, pathological } from '../test/helpers/pathological-text.ts';

const MB = 1_000_000;
const OPTIONS: ChunkOptions = { maxTokens: 512, overlapTokens: 64 }; // the defaults of config.ts
const LIBRARY_OPTIONS = { disallowedSpecial: new Set<string>() };
const PROSE_MB = 3;
const LARGE_MB = 50;
// About input (50) + output (57) + the worker's own 25: what the live set must fit in.
const LARGE_CAP_MB = 200;

const log = (message: string) => process.stderr.write(`[bench:chunker] ${message}\n`);

/**
 * English-like prose: the words of the test fixtures drawn with a skewed (Zipf-like)
 * frequency, one word in twelve a rare made-up one (so the tokenizer meets words it has not
 * cached, as in real text), numbers, commas, paragraphs of five sentences and a heading every
 * forty. `oneLine`: the same words as a single line, one block.
 */
function prose(bytes: number, oneLine = false): string {
  const fixtures = ['sample.md', 'sample.txt', 'sample.html'].map((name) => readFileSync(new URL(`../test/fixtures/${name}`, import.meta.url), 'utf8'));
  const words = [...new Set(fixtures.join(' ').replace(/<[^>]*>/g, ' ').toLowerCase().match(/[a-z]+(?:-[a-z]+)?/g))];
  const syllables = ['ka', 'lo', 'mer', 'sta', 'vin', 'dor', 'el', 'ith', 'ran', 'gu', 'sel', 'tor', 'ba', 'qui', 'nes', 'wyn', 'fal', 'ost', 'pre', 'um'];
  const next = random(7);
  const word = () => {
    if (next() < 0.03) return String(Math.floor(next() * 2000));
    if (next() < 0.08) return Array.from({ length: 2 + Math.floor(next() * 3) }, () => syllables[Math.floor(next() * syllables.length)]).join('');
    return words[Math.floor(words.length * next() ** 3)]!;
  };
  let sentences = 0;
  return fill(bytes, () => {
    const length = 8 + Math.floor(next() * 18);
    const parts: string[] = [];
    for (let i = 0; i < length; i++) {
      let w = word();
      if (i === 0 || next() < 0.05) w = w[0]!.toUpperCase() + w.slice(1);
      if (i < length - 1 && next() < 0.08) w += ',';
      parts.push(w);
    }
    sentences++;
    const end = oneLine || sentences % 5 !== 0 ? ' ' : sentences % 40 === 0 ? `\n\n## Part ${sentences / 40}\n\n` : '\n\n';
    return parts.join(' ') + (next() < 0.1 ? '?' : '.') + end;
  });
}

/**
 * The process's CPU time (user + system, V8's garbage-collector threads included) in ms:
 * unlike wall time it does not count the time other processes of the shared machine take.
 */
function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** Least CPU time of `runs` calls, in ms; `before` runs untimed before each. */
function best(runs: number, work: () => unknown, before = () => {}): number {
  let fastest = Infinity;
  for (let i = 0; i < runs; i++) {
    before();
    const started = cpuMs();
    work();
    fastest = Math.min(fastest, cpuMs() - started);
  }
  return fastest;
}

/** Least CPU time of each piece of work in ms, over `rounds` rounds running each once, so a change of load hits all alike. */
function bestInterleaved(rounds: number, works: (() => unknown)[]): number[] {
  const fastest = works.map(() => Infinity);
  for (let round = 0; round < rounds; round++) {
    works.forEach((work, i) => {
      fastest[i] = Math.min(fastest[i]!, best(1, work));
    });
  }
  return fastest;
}

const fixed = (n: number, digits = 0) => n.toFixed(digits);

function proseThroughput(): string[] {
  log(`prose: ${PROSE_MB} MB, best of 3 interleaved rounds`);
  const text = prose(PROSE_MB * MB);
  // Its own instance, freed after: the chunker's is private to it.
  const tiktoken = get_encoding('cl100k_base');
  const [libraryCount, libraryEncode, wholeText, ours, chunking] = bestInterleaved(3, [
    () => libraryCountTokens(text, LIBRARY_OPTIONS),
    () => encode(text, LIBRARY_OPTIONS).length,
    () => tiktoken.encode_ordinary(text).length,
    () => countTokens(text),
    () => chunkMarkdown(text, OPTIONS),
  ]).map((ms) => ms / PROSE_MB) as [number, number, number, number, number];
  tiktoken.free();
  const chunks = chunkMarkdown(text, OPTIONS).length;
  return [
    `### Prose (${PROSE_MB} MB of markdown paragraphs, ${chunks} chunks of at most ${OPTIONS.maxTokens} tokens, overlap ${OPTIONS.overlapTokens})`,
    '',
    '| | CPU ms per MB | × gpt-tokenizer countTokens |',
    '|---|---:|---:|',
    `| gpt-tokenizer \`countTokens\` (baseline) | ${fixed(libraryCount)} | 1.00 |`,
    `| gpt-tokenizer \`encode().length\` (baseline) | ${fixed(libraryEncode)} | ${fixed(libraryEncode / libraryCount, 2)} |`,
    `| tiktoken \`encode_ordinary().length\`, whole text in one call (baseline) | ${fixed(wholeText)} | ${fixed(wholeText / libraryCount, 2)} |`,
    `| chunker \`countTokens\` | ${fixed(ours)} | ${fixed(ours / libraryCount, 2)} |`,
    `| \`chunkMarkdown\` | ${fixed(chunking)} | ${fixed(chunking / libraryCount, 2)} |`,
    '',
  ];
}

function pathologicalScaling(): string[] {
  log('pathological inputs: 100 KB (best of 3) and 1 MB (best of 2)');
  const small = pathological(MB / 10);
  const large = pathological(MB);
  let double: Record<string, string> | undefined;
  const rows = Object.keys(large).map((name) => {
    const smallMs = best(3, () => chunkMarkdown(small[name]!, OPTIONS));
    const largeMs = best(2, () => chunkMarkdown(large[name]!, OPTIONS));
    const ratio = largeMs / Math.max(smallMs, 0.1);
    // A ratio far above 10 would be superlinear (or a small input unusually cheap): such rows
    // are checked again from 1 MB up.
    let further = '';
    if (ratio > 12) {
      double ??= pathological(2 * MB);
      const text = double[name]!;
      const doubleMs = best(1, () => chunkMarkdown(text, OPTIONS));
      further = `2 MB: ${fixed(doubleMs)} ms, ratio to 1 MB ${fixed(doubleMs / largeMs, 2)}`;
    }
    log(`  ${name}: ${fixed(smallMs)} ms, ${fixed(largeMs)} ms ${further}`);
    return `| ${name} | ${fixed(smallMs, 1)} | ${fixed(largeMs)} | ${fixed(ratio, 1)} | ${further} |`;
  });
  return [
    `### Pathological inputs through \`chunkMarkdown\` (CPU ms; linear scaling is a ratio near 10)`,
    '',
    '| input | 100 KB | 1 MB | ratio | above 12: 2 MB |',
    '|---|---:|---:|---:|---|',
    ...rows,
    '',
  ];
}

function countDeviation(): string[] {
  log('count deviation on long runs (true BPE by tiktoken on the whole run, quadratic: short runs)');
  const tiktoken = get_encoding('cl100k_base');
  const next = random(11);
  const runs: Record<string, string> = {
    'one letter': 'a'.repeat(20_000),
    "'='": '='.repeat(20_000),
    spaces: ' '.repeat(20_000),
    newlines: '\n'.repeat(20_000),
    "'-'": '-'.repeat(20_000),
    'tab, space': ' \t'.repeat(10_000),
    'random letters': fill(20_000, randomFrom(next, 0x61, 26)),
    'random letters, both cases': fill(20_000, () => String.fromCharCode((next() < 0.5 ? 0x41 : 0x61) + Math.floor(next() * 26))),
    CJK: fill(18_000, randomFrom(next, 0x4e00, 0x5200)),
    emoji: fill(24_000, randomFrom(next, 0x1f600, 0x50)),
  };
  const rows = Object.entries(runs).map(([name, run]) => {
    const exact = tiktoken.encode_ordinary(run).length;
    const ours = countTokens(run);
    const sign = ours >= exact ? '+' : '';
    return `| ${name} | ${run.length} | ${exact} | ${ours} | ${sign}${fixed(((ours - exact) / exact) * 100, 2)}% |`;
  });
  tiktoken.free();
  return [
    '### Token count on one run longer than any token: chunker against true BPE',
    '',
    '| run | UTF-16 length | tiktoken (whole run) | chunker | difference |',
    '|---|---:|---:|---:|---:|',
    ...rows,
    '',
  ];
}

// The worker runs this file again, with tsx registered first (worker threads do not inherit
// the --import of this thread), and calls largeLine().
const WORKER_BOOT = `
const { workerData } = require('node:worker_threads');
(async () => {
  (await import(workerData.tsx)).register();
  await (await import(workerData.self)).largeLine(workerData.mb);
})();
`;

interface LargeLineResult {
  seconds: number;
  /** Of the whole process: the worker, and this thread sampling its heap. */
  cpuSeconds: number;
  chunks: number;
  outputMb: number;
}

/** In the worker: chunk LARGE_MB of prose on one line, telling the main thread when it starts. */
export function largeLine(mb: number): void {
  const text = prose(mb * MB, true);
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
  parentPort!.postMessage({ started: process.memoryUsage().heapUsed });
  const started = performance.now();
  const startedCpu = cpuMs();
  const chunks = chunkMarkdown(text, OPTIONS);
  const seconds = (performance.now() - started) / 1000;
  const cpuSeconds = (cpuMs() - startedCpu) / 1000;
  let characters = 0;
  for (const chunk of chunks) characters += chunk.text.length;
  const result: LargeLineResult = { seconds, cpuSeconds, chunks: chunks.length, outputMb: characters / MB };
  parentPort!.postMessage({ result });
}

/** The time and peak heap of largeLine() in a worker whose old generation is limited to `capMb`. */
async function largeLineInWorker(capMb: number): Promise<string> {
  log(`${LARGE_MB} MB of prose on one line, in a worker limited to ${capMb} MB of old generation (about 20 s)`);
  const worker = new Worker(WORKER_BOOT, {
    eval: true,
    workerData: { tsx: import.meta.resolve('tsx/esm/api'), self: import.meta.url, mb: LARGE_MB },
    resourceLimits: { maxOldGenerationSizeMb: capMb },
  });
  let peak = 0;
  let heapBefore = 0;
  let done = false;
  const sampling = (async () => {
    while (!done) {
      try {
        peak = Math.max(peak, (await worker.getHeapStatistics()).used_heap_size);
      } catch {
        // not running yet, or gone
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  const outcome = await new Promise<LargeLineResult | Error>((resolve) => {
    worker.on('message', (message: { started?: number; result?: LargeLineResult }) => {
      if (message.started !== undefined) {
        heapBefore = message.started;
        peak = heapBefore; // from here on: the input is built, the chunking starts
      } else if (message.result) {
        resolve(message.result);
      }
    });
    worker.on('error', resolve);
  });
  done = true;
  await sampling;
  await worker.terminate();
  const limit = `${capMb} MB`;
  if (outcome instanceof Error) return `| ${limit} | failed: ${outcome.message} | | | | | |`;
  const { seconds, cpuSeconds, chunks, outputMb } = outcome;
  const cells = [
    limit,
    `${fixed(seconds, 1)} s`,
    `${fixed(cpuSeconds, 1)} s (${fixed((cpuSeconds * 1000) / LARGE_MB)} ms per MB)`,
    `${fixed(heapBefore / MB)} MB`,
    `${fixed(peak / MB)} MB`,
    String(chunks),
    `${fixed(outputMb, 1)} MB`,
  ];
  return `| ${cells.join(' | ')} |`;
}

async function largeLine50(): Promise<string[]> {
  return [
    `### ${LARGE_MB} MB of prose on one line (one block of ${LARGE_MB} MB)`,
    '',
    '| old-generation limit | wall time | CPU time | heap before (input built) | peak heap while chunking | chunks | output text |',
    '|---|---:|---:|---:|---:|---:|---:|',
    await largeLineInWorker(LARGE_CAP_MB),
    '',
    'Peak heap: the largest used heap sampled every 5 ms, garbage not yet collected included. The worker',
    `runs with its old generation limited to ${LARGE_CAP_MB} MB, so completing shows the live set fits in it`,
    '(it would fail with ERR_WORKER_OUT_OF_MEMORY otherwise).',
    '',
  ];
}

async function main(): Promise<void> {
  const started = performance.now();
  const report = [
    `Node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg().map((n) => fixed(n, 2)).join(' ')} at the start.`,
    '',
    ...proseThroughput(),
    ...pathologicalScaling(),
    ...countDeviation(),
    ...(await largeLine50()),
  ];
  process.stdout.write(report.join('\n') + '\n');
  log(`done in ${fixed((performance.now() - started) / 1000)} s`);
}

if (isMainThread) await main();
