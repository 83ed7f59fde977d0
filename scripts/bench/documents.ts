// Benchmark documents: plain-text files of an exact size whose content differs per request (so
// storage, hashing and sniffing do real work), wrapped in a multipart/form-data body with one
// `file` field, like `curl -F file=@doc.txt`.
import { randomBytes } from 'node:crypto';

const WORDS = (
  'the lighthouse keeper climbed stairs each evening to trim wick and polish lens while storm ' +
  'waves broke against granite reef below ships passed safely through channel because light ' +
  'never failed in forty years of service records kept in ledger show oil consumption weather ' +
  'notes visitors repairs and the slow erosion of stone by salt wind and tide across seasons'
).split(' ');

let counter = 0;

/** A UTF-8 text document of exactly `bytes` bytes (ASCII), unique per call. */
export function textDocument(bytes: number, label = ''): Buffer {
  const id = `${process.pid}-${++counter}-${randomBytes(8).toString('hex')}`;
  let out = `Benchmark document ${id} ${label}\n\n`;
  let line = '';
  while (out.length + line.length < bytes) {
    const word = WORDS[Math.floor(Math.random() * WORDS.length)]!;
    line += (line ? ' ' : '') + word;
    if (line.length > 72) {
      out += line + '.\n';
      line = '';
    }
  }
  out += line;
  return Buffer.from(out.slice(0, bytes).padEnd(bytes, '.'), 'ascii');
}

export const BOUNDARY = '----docpipe-bench-7f3a9c2e1b';
export const MULTIPART_CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

/** The bytes before and after the file content of a one-file multipart body. */
export function multipartFraming(fileName: string, contentType = 'text/plain'): { head: Buffer; tail: Buffer } {
  return {
    head: Buffer.from(
      `--${BOUNDARY}\r\ncontent-disposition: form-data; name="file"; filename="${fileName}"\r\ncontent-type: ${contentType}\r\n\r\n`,
    ),
    tail: Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  };
}

export function multipartBody(fileName: string, content: Buffer): Buffer {
  const { head, tail } = multipartFraming(fileName);
  return Buffer.concat([head, content, tail]);
}
