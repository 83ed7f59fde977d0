// Page counts before a remote parse: a PDF's from its page tree, other formats estimated high
// (the count sets docpipe's deadline for the provider's job, and a short one would fail a
// document the provider was still parsing).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { createPageCounter, estimatePages } from '../../src/providers/parser/pages.ts';
import { countPdfPages } from '../../src/providers/parser/pdf.ts';
import { DEFAULT_PARSER_LIMITS, DocumentLimitError } from '../../src/providers/types.ts';

const DOCX = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document' as const;
const limits = DEFAULT_PARSER_LIMITS;

describe('estimatePages', () => {
  test('text formats: a page per 1,000 bytes; DOCX: a page per 300 bytes; at least 1, at most PDF_MAX_PAGES', () => {
    assert.equal(estimatePages(0, 'text/plain', limits), 1);
    assert.equal(estimatePages(1000, 'text/markdown', limits), 1);
    assert.equal(estimatePages(1001, 'text/html', limits), 2);
    assert.equal(estimatePages(30_000, DOCX, limits), 100);
    assert.equal(estimatePages(1e9, 'text/plain', limits), limits.pdfMaxPages);
  });
});

describe('createPageCounter', () => {
  const counter = createPageCounter((bytes) => countPdfPages(bytes, limits), limits);

  test("a PDF's pages come from its page tree", async () => {
    assert.equal(await counter.count(await readFile(new URL('../fixtures/sample.pdf', import.meta.url)), 'application/pdf'), 2);
  });

  test('a PDF the local reader cannot open gets the byte estimate, not an error', async () => {
    assert.equal(await counter.count(Buffer.alloc(2500, 'x'), 'application/pdf'), estimatePages(2500, 'application/pdf', limits));
  });

  test('a PDF over PDF_MAX_PAGES is refused', async () => {
    const strict = createPageCounter((bytes) => countPdfPages(bytes, { ...limits, pdfMaxPages: 1 }), { pdfMaxPages: 1 });
    await assert.rejects(strict.count(await readFile(new URL('../fixtures/sample.pdf', import.meta.url)), 'application/pdf'), DocumentLimitError);
  });

  test('other formats never reach the PDF counter', async () => {
    const never = createPageCounter(() => assert.fail('the PDF counter was called'), limits);
    assert.equal(await never.count(Buffer.alloc(5000), 'text/plain'), 5);
  });
});
