// Client text on its way to Postgres: what is refused (INVALID_TEXT) and how file names are cleaned.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HttpError } from '../../src/services/errors.ts';
import { assertStorableText, cleanFileName, invalidText, textProblem } from '../../src/services/text.ts';
import { storableText } from '../../src/db/text.ts';

test('textProblem: NUL and unpaired surrogates, nothing else', () => {
  for (const ok of ['', 'plain', 'emoji 😀 and 𝄞', 'controls \t\n\x07 are storable', '\uFFFD', '\u202Ebidi', '\uFFFF']) {
    assert.equal(textProblem(ok), null, JSON.stringify(ok));
  }
  assert.match(textProblem('a\u0000b')!, /NUL/);
  for (const bad of ['\ud800', 'x\udc00', '\ud83d', 'end \ud83d', '\udfff\ud800']) assert.match(textProblem(bad)!, /surrogate/, JSON.stringify(bad));
});

test('assertStorableText: 400 INVALID_TEXT naming the field; non-strings and good text pass', () => {
  assert.doesNotThrow(() => assertStorableText('reason', 'fine'));
  assert.doesNotThrow(() => assertStorableText('reason', null));
  assert.doesNotThrow(() => assertStorableText('reason', undefined));
  assert.throws(
    () => assertStorableText('reason', 'a\u0000'),
    (err: unknown) => err instanceof HttpError && err.statusCode === 400 && err.code === 'INVALID_TEXT' && /^reason /.test(err.message),
  );
  assert.equal(invalidText('x', 'ok'), null);
  assert.equal(invalidText('data.job_id', '\ud800')?.code, 'INVALID_TEXT');
  assert.match(invalidText('data.job_id', '\ud800')!.message, /^data\.job_id .*surrogate/);
});

test('cleanFileName: the last path segment, without controls, invisible format characters or lone surrogates', () => {
  assert.equal(cleanFileName('report.pdf'), 'report.pdf');
  assert.equal(cleanFileName('dir/../lighthouse.pdf'), 'lighthouse.pdf');
  assert.equal(cleanFileName('C:\\Users\\me\\notes.txt'), 'notes.txt');
  assert.equal(cleanFileName('in\u0000voice\u0007\u001b[31m.txt'), 'invoice[31m.txt');
  // Right-to-left override: "invoice\u202Efdp.exe" displays as "invoiceexe.pdf".
  assert.equal(cleanFileName('invoice\u202Efdp.exe'), 'invoicefdp.exe');
  for (const cf of ['\u200B', '\u200C', '\u200D', '\u200E', '\u200F', '\u202A', '\u202B', '\u202C', '\u202D', '\u202E', '\u2066', '\u2067', '\u2068', '\u2069', '\uFEFF', '\u00AD', '\u2060', '\u061C']) {
    assert.equal(cleanFileName(`a${cf}b.txt`), 'ab.txt', `U+${cf.codePointAt(0)!.toString(16)}`);
  }
  assert.equal(cleanFileName('line\u2028break\u2029.txt'), 'linebreak.txt');
  assert.equal(cleanFileName('\x7f\x85\x9fc1.txt'), 'c1.txt');
  assert.equal(cleanFileName('half \ud83d smile \ude00.txt'), 'half  smile .txt');
  assert.equal(cleanFileName('  padded.txt  '), 'padded.txt');
  assert.equal(cleanFileName('naïve café 文件 😀.txt'), 'naïve café 文件 😀.txt');
});

test('cleanFileName: at most 255 code points, never cut inside a surrogate pair; "document" when nothing is left', () => {
  const emoji = cleanFileName('😀'.repeat(2_500));
  assert.equal([...emoji].length, 255);
  assert.equal(emoji, '😀'.repeat(255));
  assert.ok(emoji.isWellFormed());
  assert.equal(cleanFileName('a'.repeat(300)), 'a'.repeat(255));
  assert.equal(cleanFileName(`${'a'.repeat(254)} b`), 'a'.repeat(254), 'trimmed after the cut');
  for (const empty of [undefined, null, '', '   ', '\u0000', '\u202E\u200B', 'dir/', 'a/..', '.', '\ud800']) assert.equal(cleanFileName(empty), 'document', JSON.stringify(empty));
});

test('storableText: provider and library messages are made storable, not refused', () => {
  assert.equal(storableText('plain'), 'plain');
  assert.equal(storableText('a\u0000b'), 'a\uFFFDb');
  assert.equal(storableText('lone \ud800 high'), 'lone \uFFFD high');
  assert.equal(textProblem(storableText('x\udfff\u0000')), null);
  const long = storableText('😀'.repeat(3_000), 2_000);
  assert.equal([...long].length, 2_001, '2,000 code points and an ellipsis');
  assert.ok(long.isWellFormed(), 'never cut inside a pair');
});
