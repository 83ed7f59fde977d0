import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { deflateRawSync } from 'node:zlib';
import { createLocalParser, PAGE_SEPARATOR } from '../../src/providers/parser/local.ts';
import { sniffMediaType } from '../../src/providers/parser/sniff.ts';
import { UnparseableDocumentError, type MediaType } from '../../src/providers/types.ts';

const fixture = (name: string) => readFile(new URL(`../fixtures/${name}`, import.meta.url));
const DOCX: MediaType = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';

/** A minimal one-entry zip archive, to check that generic zips are not taken for DOCX. */
function tinyZip(): Buffer {
  const name = Buffer.from('hello.txt');
  const data = deflateRawSync(Buffer.from('hello'));
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt16LE(8, 8);
  local.writeUInt32LE(0x3610a686, 14); // crc32('hello')
  local.writeUInt32LE(data.length, 18);
  local.writeUInt32LE(5, 22);
  local.writeUInt16LE(name.length, 26);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(20, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt16LE(8, 10);
  central.writeUInt32LE(0x3610a686, 16);
  central.writeUInt32LE(data.length, 20);
  central.writeUInt32LE(5, 24);
  central.writeUInt16LE(name.length, 28);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(46 + name.length, 12);
  end.writeUInt32LE(30 + name.length + data.length, 16);
  return Buffer.concat([local, name, data, central, name, end]);
}

// --- sniffing ---------------------------------------------------------------

test('each fixture sniffs to its media type', async () => {
  const cases: Array<[string, MediaType]> = [
    ['sample.pdf', 'application/pdf'],
    ['sample.docx', DOCX],
    ['sample.html', 'text/html'],
    ['sample.md', 'text/markdown'],
    ['sample.txt', 'text/plain'],
  ];
  for (const [name, expected] of cases) {
    const bytes = await fixture(name);
    // The name is deliberately misleading: sniffing must go by the bytes.
    assert.equal(await sniffMediaType(bytes.subarray(0, 64 * 1024), 'upload.bin'), expected, name);
  }
});

test('unsupported binaries and empty input sniff to null', async () => {
  assert.equal(await sniffMediaType(await fixture('not-supported.png'), 'picture.pdf'), null);
  assert.equal(await sniffMediaType(tinyZip(), 'archive.docx'), null);
  const garbage = Buffer.alloc(4096);
  for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 7919 + 13) % 256;
  assert.equal(await sniffMediaType(garbage), null);
  assert.equal(await sniffMediaType(Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00', 'latin1')), null);
  assert.equal(await sniffMediaType(Buffer.alloc(0)), null);
  assert.equal(await sniffMediaType(Buffer.from('text with a\0NUL byte')), null);
  assert.equal(await sniffMediaType(Buffer.from('caf\xe9 in latin-1 is not UTF-8', 'latin1')), null);
  assert.equal(await sniffMediaType(Buffer.from('   \n\t ')), null);
});

test('text sniffing: markdown by name or structure, html by markup, truncated UTF-8 tail', async () => {
  const prose = Buffer.from('Just a few sentences of prose.\nNothing structured here at all.\n');
  assert.equal(await sniffMediaType(prose), 'text/plain');
  assert.equal(await sniffMediaType(prose, 'notes.md'), 'text/markdown');
  assert.equal(await sniffMediaType(prose, 'NOTES.Markdown'), 'text/markdown');
  assert.equal(await sniffMediaType(Buffer.from('Intro line\n\n## Details\n\nSee [the docs](https://example.com).\n')), 'text/markdown');
  assert.equal(await sniffMediaType(Buffer.from('\uFEFF  <!DOCTYPE HTML><title>x</title><p>hi')), 'text/html');
  assert.equal(await sniffMediaType(Buffer.from('<html><body>hi</body></html>'), 'page.md'), 'text/html');
  assert.equal(await sniffMediaType(Buffer.from('<meta charset="utf-8">\n<body><p>fragment</p></body>')), 'text/html');
  assert.equal(await sniffMediaType(Buffer.from('<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>')), 'text/html');
  // A head cut in the middle of a multibyte character is still text.
  const cut = Buffer.from('Le phare de Cordouan, « roi des phares » — 灯台', 'utf8');
  assert.equal(await sniffMediaType(cut.subarray(0, cut.length - 1)), 'text/plain');
});

// --- parsing ----------------------------------------------------------------

const parser = createLocalParser();

test('plain text and markdown pass through with normalised newlines', async () => {
  const txt = await parser.parse(await fixture('sample.txt'), 'text/plain');
  assert.equal(txt.pages, 1);
  assert.match(txt.markdown, /Tillamook Rock light off Oregon was nicknamed Terrible Tilly/);
  const md = await parser.parse(await fixture('sample.md'), 'text/markdown');
  assert.match(md.markdown, /^# Keepers of the Northern Lights/);
  assert.match(md.markdown, /## Muckle Flugga/);
  const crlf = await parser.parse(Buffer.from('\uFEFFline one\r\nline two\r\n'), 'text/plain');
  assert.equal(crlf.markdown, 'line one\nline two\n');
});

test('HTML becomes markdown without scripts or styles', async () => {
  const { markdown, pages } = await parser.parse(await fixture('sample.html'), 'text/html');
  assert.equal(pages, 1);
  assert.match(markdown, /^# The Pharos of Alexandria/m);
  assert.match(markdown, /^## Earthquakes and ruin/m);
  assert.match(markdown, /Designed by Sostratus of Cnidus/);
  assert.match(markdown, /\*\*Ibn Battuta\*\*/);
  assert.doesNotMatch(markdown, /console\.log|font-family/);
});

test('PDF text is extracted per page', async () => {
  const { markdown, pages } = await parser.parse(await fixture('sample.pdf'), 'application/pdf');
  assert.equal(pages, 2);
  const parts = markdown.split(PAGE_SEPARATOR);
  assert.equal(parts.length, 2);
  assert.match(parts[0]!, /Henry Winstanley raised/);
  assert.match(parts[0]!, /Smeaton's Tower/);
  assert.match(parts[1]!, /James Douglass built the present Eddystone light/);
});

test('DOCX keeps its heading and paragraphs', async () => {
  const { markdown, pages } = await parser.parse(await fixture('sample.docx'), DOCX);
  assert.equal(pages, 1);
  assert.match(markdown, /^# Fresnel Lenses and the Science of the Beam/m);
  assert.match(markdown, /Augustin-Jean Fresnel presented his stepped lens/);
  assert.match(markdown, /floated on baths of mercury/);
  // A number ending a sentence is not escaped as if it started an ordered list.
  assert.ok(markdown.includes('Commission in 1822. Instead'), 'no stray "1822\\." escape');
});

test('corrupt, text-less and empty documents are UnparseableDocumentError', async () => {
  const pdf = await fixture('sample.pdf');
  await assert.rejects(parser.parse(pdf.subarray(0, 400), 'application/pdf'), UnparseableDocumentError);
  await assert.rejects(parser.parse(Buffer.from('%PDF-1.7\nthis is not really a pdf'), 'application/pdf'), UnparseableDocumentError);
  await assert.rejects(parser.parse(tinyZip(), DOCX), UnparseableDocumentError);
  await assert.rejects(parser.parse((await fixture('sample.docx')).subarray(0, 2000), DOCX), UnparseableDocumentError);
  await assert.rejects(parser.parse(Buffer.from(' \n\n '), 'text/plain'), UnparseableDocumentError);
  await assert.rejects(parser.parse(Buffer.from('<html><body><script>x()</script></body></html>'), 'text/html'), UnparseableDocumentError);
});

test('a PDF with pages but no text is reported as such', async () => {
  const { PDFDocument } = await import('pdf-lib');
  const doc = await PDFDocument.create();
  doc.addPage();
  const bytes = Buffer.from(await doc.save());
  await assert.rejects(parser.parse(bytes, 'application/pdf'), /no extractable text/);
});
