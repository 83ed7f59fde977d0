// The logger's redaction rules (src/observability/logger.ts): credentials by name at the first
// two levels and in request and response headers, signed URLs without their query values, and
// the fields every line carries. test/e2e/log-secrets.test.ts checks a whole running stack.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createLogger, REDACTED, withoutQueryValues, type Logger } from '../../src/observability/logger.ts';
import { createHttpApp } from '../../src/services/http.ts';

type Json = Record<string, any>;

/** A logger at debug whose JSON lines are collected: raw, and parsed. */
function collecting(options: { service?: string } = {}): { log: Logger; raw: string[]; lines: () => Json[] } {
  const raw: string[] = [];
  const log = createLogger('debug', {}, { ...options, destination: { write: (line: string) => void raw.push(line) } });
  return { log, raw, lines: () => raw.map((line) => JSON.parse(line) as Json) };
}

describe('credentials by name', () => {
  test('at the top of a line', () => {
    const { log, lines, raw } = collecting();
    log.info({ token: 't-1', secret: 's-1', password: 'p-1', apiKey: 'a-1', apikey: 'a-2', key: 'documents/k-1/original', signature: 'sig-1', 'x-api-key': 'x-1', 'lc-signature': 'lc-1', authorization: 'Bearer b-1', documentId: 'doc-1' }, 'top');
    const [line] = lines();
    for (const name of ['token', 'secret', 'password', 'apiKey', 'apikey', 'signature', 'x-api-key', 'lc-signature', 'authorization']) assert.equal(line![name], REDACTED, name);
    assert.equal(line!.documentId, 'doc-1', 'other fields are written as they are');
    assert.doesNotMatch(raw.join(''), /t-1|s-1|p-1|a-1|a-2|sig-1|x-1|lc-1|b-1/);
  });

  test('one level down, whatever the case of the name', () => {
    const { log, lines, raw } = collecting();
    log.info({ provider: { Token: 't-2', apiKey: 'a-3', API_KEY: 'a-4', Secret: 's-2', region: 'eu' }, webhook: { signature: 'sig-2', password: 'p-2', key: 'documents/k-2/original' }, headers: { Authorization: 'Bearer b-2', cookie: 'c-2', 'x-api-key': 'x-2', 'lc-signature': 'lc-2', 'x-docpipe-webhook-token': 'v1.1.w-2', 'content-type': 'application/json' } }, 'nested');
    const [line] = lines();
    assert.deepEqual(line!.provider, { Token: REDACTED, apiKey: REDACTED, API_KEY: REDACTED, Secret: REDACTED, region: 'eu' });
    assert.deepEqual(line!.webhook, { signature: REDACTED, password: REDACTED, key: 'documents/k-2/original' }, 'a storage key is no secret');
    assert.deepEqual(line!.headers, { Authorization: REDACTED, cookie: REDACTED, 'x-api-key': REDACTED, 'lc-signature': REDACTED, 'x-docpipe-webhook-token': REDACTED, 'content-type': 'application/json' });
    assert.doesNotMatch(raw.join(''), /t-2|a-3|a-4|s-2|sig-2|p-2|b-2|c-2|x-2|lc-2|w-2/);
  });

  test('credential headers of requests, responses and errors', () => {
    const { log, raw, lines } = collecting();
    const headers = (n: number) => ({ authorization: `Bearer h-${n}`, cookie: `c-${n}`, 'set-cookie': `sc-${n}`, 'x-api-key': `x-${n}`, apikey: `ak-${n}`, 'lc-signature': `lc-${n}`, 'x-docpipe-webhook-token': `wt-${n}`, accept: 'text/plain' });
    log.info({ req: { method: 'GET', headers: headers(1) }, request: { headers: headers(2) }, res: { headers: headers(3) }, response: { headers: headers(4) } }, 'headers');
    log.warn({ err: Object.assign(new Error('refused'), { headers: headers(5) }) }, 'provider error');
    const [first, second] = lines();
    for (const holder of ['req', 'request', 'res', 'response']) {
      const written = first![holder].headers as Json;
      for (const name of ['authorization', 'cookie', 'set-cookie', 'x-api-key', 'apikey', 'lc-signature', 'x-docpipe-webhook-token']) assert.equal(written[name], REDACTED, `${holder}.headers.${name}`);
      assert.equal(written.accept, 'text/plain');
    }
    assert.equal(second!.err.message, 'refused');
    assert.equal(second!.err.headers.authorization, REDACTED);
    assert.doesNotMatch(raw.join(''), /h-\d|c-\d|sc-\d|x-\d|ak-\d|lc-\d|wt-\d/);
  });

  test("the caller's objects are left as they were", () => {
    const { log } = collecting();
    const headers = { authorization: 'Bearer keep-me' };
    const fields = { token: 'keep-me-too', headers, upload: { url: 'https://s/x?token=abc' } };
    log.info(fields, 'not mutated');
    assert.deepEqual(fields, { token: 'keep-me-too', headers: { authorization: 'Bearer keep-me' }, upload: { url: 'https://s/x?token=abc' } });
    assert.equal(fields.headers, headers);
  });
});

describe('signed URLs', () => {
  test('withoutQueryValues keeps the names of the query, not the values, and drops the fragment', () => {
    assert.equal(withoutQueryValues('https://abc.supabase.co/storage/v1/object/upload/sign/docs/a/original?token=eyJ.x.y'), `https://abc.supabase.co/storage/v1/object/upload/sign/docs/a/original?token=${REDACTED}`);
    assert.equal(withoutQueryValues('https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff00&flag'), `https://b.s3.amazonaws.com/k?X-Amz-Credential=${REDACTED}&X-Amz-Signature=${REDACTED}&flag`);
    assert.equal(withoutQueryValues('/v1/documents/1#frag'), '/v1/documents/1');
    assert.equal(withoutQueryValues('/v1/documents/1'), '/v1/documents/1');
    assert.equal(withoutQueryValues(new URL('http://127.0.0.1:3000/v1/storage/upload?token=abc')), `http://127.0.0.1:3000/v1/storage/upload?token=${REDACTED}`);
    assert.equal(withoutQueryValues(42), 42);
  });

  test('url, signedUrl and uploadUrl, at the top of a line and one level down', () => {
    const { log, raw, lines } = collecting();
    log.info({ url: '/v1/storage/upload?token=sekrit-1', signedUrl: 'https://s/o?token=sekrit-2', uploadUrl: new URL('https://s/o?X-Amz-Signature=sekrit-3'), upload: { url: 'https://s/o?token=sekrit-4', method: 'PUT' }, target: { signedUrl: 'https://s/o?token=sekrit-5' } }, 'urls');
    const [line] = lines();
    assert.equal(line!.url, `/v1/storage/upload?token=${REDACTED}`);
    assert.equal(line!.signedUrl, `https://s/o?token=${REDACTED}`);
    assert.equal(line!.uploadUrl, `https://s/o?X-Amz-Signature=${REDACTED}`);
    assert.deepEqual(line!.upload, { url: `https://s/o?token=${REDACTED}`, method: 'PUT' });
    assert.equal(line!.target.signedUrl, `https://s/o?token=${REDACTED}`);
    assert.doesNotMatch(raw.join(''), /sekrit/);
  });

  test('a Fastify request logged as req: its url without query values, no headers', async () => {
    const { log, raw } = collecting();
    const app = createHttpApp({ service: 'api', logger: log });
    app.get('/echo', async (request) => {
      request.log.info({ req: request }, 'request seen');
      request.log.info({ req: request.raw }, 'raw request seen');
      return { ok: true };
    });
    const res = await app.inject({ method: 'GET', url: '/echo?token=query-secret&wait=3', headers: { authorization: 'Bearer header-secret', cookie: 'sid=cookie-secret' } });
    await app.close();
    assert.equal(res.statusCode, 200);
    const seen = raw.map((l) => JSON.parse(l) as Json).filter((l) => l.msg === 'request seen' || l.msg === 'raw request seen');
    assert.equal(seen.length, 2);
    for (const line of seen) {
      assert.equal(line.req.url, `/echo?token=${REDACTED}&wait=${REDACTED}`);
      assert.equal(line.req.method, 'GET');
      assert.equal(line.service, 'api');
      assert.ok(line.requestId);
    }
    assert.doesNotMatch(raw.join(''), /query-secret|header-secret|cookie-secret/);
  });
});

describe('the fields of every line', () => {
  test('level, time, service and msg; the service named once, the innermost binding winning', () => {
    const { log, raw, lines } = collecting({ service: 'all' });
    log.info('started');
    const api = log.child({ service: 'api' });
    api.child({ requestId: 'r-1' }).warn({ durationMs: 12 }, 'slow');
    log.child({ component: 'sandbox' }).debug('idle');
    log.error(new Error('boom'));
    const parsed = lines();
    assert.equal(parsed.length, 4);
    for (const line of parsed) {
      assert.equal(typeof line.level, 'number');
      assert.ok(!Number.isNaN(Date.parse(line.time)), line.time);
      assert.equal(typeof line.service, 'string');
      assert.equal(typeof line.msg, 'string');
    }
    assert.deepEqual(parsed.map((l) => l.service), ['all', 'api', 'all', 'all']);
    assert.equal(parsed[3]!.err.message, 'boom');
    for (const line of raw) assert.equal(line.match(/"service":/g)?.length, 1, line);
  });

  test('without a service option, lines say docpipe; a service in the base is the default, not a binding', () => {
    const plain = collecting();
    plain.log.info('x');
    assert.equal(plain.lines()[0]!.service, 'docpipe');
    const raw: string[] = [];
    const log = createLogger('info', { service: 'worker' }, { destination: { write: (l: string) => void raw.push(l) } });
    log.child({ service: 'worker' }).info('y');
    log.info('z');
    assert.deepEqual(raw.map((l) => l.match(/"service":/g)?.length), [1, 1]);
    assert.deepEqual(raw.map((l) => (JSON.parse(l) as Json).service), ['worker', 'worker']);
  });
});
