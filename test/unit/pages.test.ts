// Page counts before a remote parse: a PDF's from its page tree, other formats estimated high
// (the count sets docpipe's deadline for the provider's job, and a short one would fail a
// document the provider was still parsing).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { createPageCounter, estimatePages, pageEstimate } from '../../src/providers/parser/pages.ts';
import { countPdfPages } from '../../src/providers/parser/pdf.ts';
import { DEFAULT_PARSER_LIMITS, DocumentLimitError, type MediaType } from '../../src/providers/types.ts';

const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document' as const;
const limits = DEFAULT_PARSER_LIMITS;

describe('estimatePages', () => {
  test('text formats: the most of a page per 1,000 bytes, per 40 lines, per form feed; at least 1 and no cap', () => {
    assert.equal(estimatePages(Buffer.alloc(0), 'text/plain'), 1);
    assert.equal(estimatePages(Buffer.alloc(1000, 'x'), 'text/markdown'), 1);
    assert.equal(estimatePages(Buffer.alloc(1001, 'x'), 'text/html'), 2);
    assert.equal(estimatePages(Buffer.from('a\n'.repeat(400)), 'text/plain'), 10, 'short lines: 800 bytes, 10 pages of 40 lines');
    assert.equal(estimatePages(Buffer.from('page\f'.repeat(6)), 'text/plain'), 7, 'form feeds start pages');
    assert.equal(estimatePages(Buffer.alloc(20_000_000, 'x'), 'text/plain'), 20_000, 'no cap: a short deadline would fail a document still being parsed');
  });

  test('DOCX: a page per 300 bytes of the zipped file', () => {
    assert.equal(estimatePages(Buffer.alloc(30_000), DOCX), 100);
    assert.equal(estimatePages(Buffer.alloc(10), DOCX), 1);
  });
});

describe('createPageCounter', () => {
  const counter = createPageCounter((bytes) => countPdfPages(bytes, limits));

  test("a PDF's pages come from its page tree", async () => {
    assert.equal(await counter.count(await readFile(new URL('../fixtures/sample.pdf', import.meta.url)), 'application/pdf'), 2);
  });

  test('a PDF the local reader cannot open gets the byte estimate, not an error', async () => {
    assert.equal(await counter.count(Buffer.alloc(2500, 'x'), 'application/pdf'), estimatePages(Buffer.alloc(2500), 'application/pdf'));
  });

  test('a PDF over PDF_MAX_PAGES is refused', async () => {
    const strict = createPageCounter((bytes) => countPdfPages(bytes, { ...limits, pdfMaxPages: 1 }));
    await assert.rejects(strict.count(await readFile(new URL('../fixtures/sample.pdf', import.meta.url)), 'application/pdf'), DocumentLimitError);
  });

  test("a PDF over the local reader's stream limits is not refused: those protect the local parser, not the bill", async () => {
    const pdf = await readFile(new URL('../fixtures/sample.pdf', import.meta.url));
    const tight = createPageCounter((bytes) => countPdfPages(bytes, { ...limits, pdfMaxStreamBytes: 10, pdfMaxInflatedBytes: 10 }));
    assert.equal(await tight.count(pdf, 'application/pdf'), estimatePages(pdf, 'application/pdf'));
  });

  test('other formats never reach the PDF counter', async () => {
    const never = createPageCounter(() => assert.fail('the PDF counter was called'));
    assert.equal(await never.count(Buffer.alloc(5000), 'text/plain'), 5);
  });
});

describe('pageEstimate (streamed)', () => {
  test('any split of a document into pieces gives estimatePages of the whole', () => {
    const docs: [Buffer, MediaType][] = [
      [Buffer.from('a\n'.repeat(4000) + 'page\f'.repeat(30) + 'x'.repeat(9000)), 'text/plain'],
      [Buffer.from('# t\n\n' + 'word '.repeat(5000)), 'text/markdown'],
      [Buffer.alloc(70_000, 1), 'application/vnd.openxmlformats-officedocument.wordprocessingml.document'],
    ];
    for (const [bytes, mediaType] of docs) {
      for (const piece of [1, 7, 4096, bytes.length]) {
        const estimate = pageEstimate(mediaType);
        for (let i = 0; i < bytes.length; i += piece) estimate.add(bytes.subarray(i, i + piece));
        assert.equal(estimate.pages(), estimatePages(bytes, mediaType), `${mediaType} in pieces of ${piece}`);
      }
    }
  });
});
