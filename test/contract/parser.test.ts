// One list of cases, run against every parser adapter: whatever the parser, the pipeline
// sees the same markdown for the same document and the same failure for an unreadable one.
// The llamaparse adapter runs against the fake LlamaCloud API over real HTTP.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLlamaParseParser } from '../../src/providers/parser/llamaparse.ts';
import { createLocalParser } from '../../src/providers/parser/local.ts';
import { UnparseableDocumentError, type MediaType, type ParsedDocument, type Parser } from '../../src/providers/types.ts';
import { startFakeLlamaParse } from '../fakes/llamaparse.ts';

const DOCX: MediaType = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';
const POLL_INTERVAL_MS = 20;
const POLL_DEADLINE_MS = 10_000;

/**
 * Runs a document through any parser. Async parsers are submitted without a webhook and
 * polled until their job ends; a job the provider could not read (NO_DATA_FOUND_IN_FILE) is
 * translated to UnparseableDocumentError, the sync parsers' way of saying the same thing.
 */
async function parseDocument(parser: Parser, bytes: Buffer, mediaType: MediaType, fileName = 'document'): Promise<ParsedDocument> {
  if (parser.mode === 'sync') return parser.parse(bytes, mediaType);
  const { jobId } = await parser.submit({ bytes, fileName, mediaType, webhook: null });
  const deadline = Date.now() + POLL_DEADLINE_MS;
  for (;;) {
    const job = await parser.status(jobId);
    if (job.status === 'SUCCESS') return parser.result(jobId);
    if (job.status === 'ERROR' && job.errorCode === 'NO_DATA_FOUND_IN_FILE') {
      throw new UnparseableDocumentError(job.errorMessage ?? 'no data found in file');
    }
    if (job.status !== 'PENDING') throw new Error(`job ${jobId} ended ${job.status}: ${job.errorCode} ${job.errorMessage}`);
    if (Date.now() > deadline) throw new Error(`job ${jobId} still PENDING after ${POLL_DEADLINE_MS} ms`);
    await sleep(POLL_INTERVAL_MS);
  }
}

interface Adapter {
  name: string;
  start(): Promise<{ parser: Parser; stop(): Promise<void> }>;
}

const adapters: Adapter[] = [
  {
    name: 'local',
    start: async () => ({ parser: createLocalParser(), stop: async () => undefined }),
  },
  {
    name: 'llamaparse',
    start: async () => {
      const fake = await startFakeLlamaParse();
      const parser = createLlamaParseParser({ apiKey: fake.apiKey, baseUrl: fake.url, tier: 'cost_effective', version: 'latest', timeoutSeconds: 10, jobTimeout: { baseSeconds: 1800, perPageSeconds: 60 } });
      return { parser, stop: () => fake.close() };
    },
  },
];

const fixtures: Array<{ file: string; mediaType: MediaType; expect: RegExp[] }> = [
  { file: 'sample.pdf', mediaType: 'application/pdf', expect: [/Henry Winstanley raised/, /James Douglass built the present Eddystone light/] },
  { file: 'sample.docx', mediaType: DOCX, expect: [/Fresnel Lenses and the Science of the Beam/, /floated on baths of mercury/] },
  { file: 'sample.html', mediaType: 'text/html', expect: [/The Pharos of Alexandria/, /Designed by Sostratus of Cnidus/] },
  { file: 'sample.md', mediaType: 'text/markdown', expect: [/# Keepers of the Northern Lights/, /## Muckle Flugga/] },
  { file: 'sample.txt', mediaType: 'text/plain', expect: [/Tillamook Rock light off Oregon was nicknamed Terrible Tilly/] },
];

const fixture = (name: string) => readFile(new URL(`../fixtures/${name}`, import.meta.url));

for (const adapter of adapters) {
  describe(`parser contract: ${adapter.name}`, () => {
    let parser: Parser;
    let stop: () => Promise<void> = async () => undefined;
    before(async () => ({ parser, stop } = await adapter.start()));
    after(() => stop());

    for (const { file, mediaType, expect } of fixtures) {
      test(`${file} yields its text as markdown`, async () => {
        const { markdown, pages } = await parseDocument(parser, await fixture(file), mediaType, file);
        for (const pattern of expect) assert.match(markdown, pattern);
        assert.ok(Number.isInteger(pages) && pages >= 1, `pages = ${pages}`);
      });
    }

    test('the two-page PDF counts two pages', async () => {
      const { pages } = await parseDocument(parser, await fixture('sample.pdf'), 'application/pdf', 'sample.pdf');
      assert.equal(pages, 2);
    });

    test('a corrupt PDF is reported unparseable', async () => {
      await assert.rejects(
        parseDocument(parser, Buffer.from('%PDF-1.7 garbage'), 'application/pdf', 'broken.pdf'),
        UnparseableDocumentError,
      );
    });

    test('an empty text document is reported unparseable', async () => {
      await assert.rejects(parseDocument(parser, Buffer.from(' \n\n '), 'text/plain', 'blank.txt'), UnparseableDocumentError);
    });
  });
}
