// The shared Fastify base: connection cap and headers timeout on the server, errors Node
// raises before routing in the one error shape, JSON properties no schema allows refused (not
// stripped) with the property named, and a deliberate 5xx (SERVER_BUSY) logged at info while
// an unexpected error stays an error with its stack.
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { Type } from 'typebox';
import { HttpError } from '../../src/services/errors.ts';
import { createHttpApp, HEADERS_TIMEOUT_MS } from '../../src/services/http.ts';

function capture() {
  const lines: Record<string, any>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink) };
}

test('the server gets maxConnections and an explicit headersTimeout', async () => {
  const { logger } = capture();
  const capped = createHttpApp({ service: 't', logger, maxConnections: 123 });
  assert.equal(capped.server.maxConnections, 123);
  assert.equal(capped.server.headersTimeout, HEADERS_TIMEOUT_MS);
  assert.ok(capped.server.headersTimeout <= capped.server.requestTimeout);
  const uncapped = createHttpApp({ service: 't', logger });
  assert.equal(Number.isFinite(uncapped.server.maxConnections), false, 'no cap unless asked');
  await capped.close();
  await uncapped.close();
});

test('a JSON property the schema does not allow -> 400 VALIDATION_ERROR naming it; nothing is stripped', async () => {
  const { logger } = capture();
  const app = createHttpApp({ service: 't', logger });
  app.post('/strict', { schema: { body: Type.Object({ reason: Type.Optional(Type.String()) }, { additionalProperties: false }) } }, async (request) => request.body);
  app.post('/open', { schema: { body: Type.Object({ reason: Type.Optional(Type.String()) }) } }, async (request) => request.body);
  const strict = await app.inject({ method: 'POST', url: '/strict', payload: { reason: 'x', run: 99 } });
  assert.equal(strict.statusCode, 400);
  const body = strict.json();
  assert.equal(body.error.code, 'VALIDATION_ERROR');
  assert.match(body.error.message, /body has a property that is not allowed: "run"/);
  assert.deepEqual((await app.inject({ method: 'POST', url: '/strict', payload: { reason: 'x' } })).json(), { reason: 'x' });
  // Where a schema allows extra properties, they reach the handler as sent.
  assert.deepEqual((await app.inject({ method: 'POST', url: '/open', payload: { reason: 'x', run: 99 } })).json(), { reason: 'x', run: 99 });
  await app.close();
});

test('a deliberate 5xx is logged at info without a stack; an unexpected error at error with it', async () => {
  const { lines, logger } = capture();
  const app = createHttpApp({ service: 't', logger });
  app.get('/busy', async () => {
    throw new HttpError(503, 'SERVER_BUSY', 'busy', { 'retry-after': '5' });
  });
  app.get('/bug', async () => {
    throw new Error('a bug');
  });
  const busy = await app.inject({ method: 'GET', url: '/busy' });
  assert.equal(busy.statusCode, 503);
  assert.equal(busy.headers['retry-after'], '5');
  assert.equal(busy.json().error.code, 'SERVER_BUSY');
  const busyLines = lines.filter((l) => l.requestId === busy.headers['x-request-id']);
  // One line: the access line, with the refusal's code, the route, status and duration.
  assert.deepEqual(busyLines.map((l) => [l.level, l.code, l.err, l.msg, l.route, l.statusCode, typeof l.durationMs]), [[30, 'SERVER_BUSY', undefined, 'request completed', '/busy', 503, 'number']]);

  const bug = await app.inject({ method: 'GET', url: '/bug' });
  assert.equal(bug.statusCode, 500);
  assert.deepEqual(bug.json().error.code, 'INTERNAL_ERROR');
  const bugLines = lines.filter((l) => l.requestId === bug.headers['x-request-id']);
  assert.ok(bugLines.some((l) => l.level === 50 && typeof l.err?.stack === 'string'), 'the unexpected error is logged with its stack');
  await app.close();
});

test('a request head Node refuses (not HTTP, headers too large) is answered in the one error shape', async () => {
  const { logger } = capture();
  const app = createHttpApp({ service: 't', logger });
  const port = Number(new URL(await app.listen({ host: '127.0.0.1', port: 0 })).port);
  const raw = (head: string) =>
    new Promise<string>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString('utf8')));
      socket.on('error', () => {});
      socket.on('close', () => resolve(text));
      socket.write(head);
    });
  for (const [head, status, code] of [
    ['NOT HTTP AT ALL\r\n\r\n', 400, 'BAD_REQUEST'],
    [`GET / HTTP/1.1\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
  ] as const) {
    const text = await raw(head);
    const [top, body] = text.split('\r\n\r\n');
    assert.match(top!, new RegExp(`^HTTP/1.1 ${status} `));
    const requestId = /x-request-id: (\S+)/i.exec(top!)?.[1];
    assert.deepEqual(JSON.parse(body!), { error: { code, message: JSON.parse(body!).error.message, requestId } });
  }
  await app.close();
});
