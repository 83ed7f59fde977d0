// Security headers and CORS on the public services, over real HTTP: every answer of the api and
// the webhook (success, error, not found) carries HSTS, nosniff, a CSP that allows nothing, no
// referrer and same-origin CORP; CORS answers only the origins of CORS_ORIGINS, without
// credentials, exposing the headers a browser client reads; unset, no CORS at all.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { startStack } from '../helpers/stack.ts';

const APP = 'https://app.example.com';
const stack = await startStack({ worker: false, env: { CORS_ORIGINS: `${APP}, http://localhost:5173` } });
const plain = await startStack({ worker: false });
after(async () => {
  await stack.close();
  await plain.close();
});
const auth = { authorization: `Bearer ${stack.token('user-a')}` };

function assertHeaders(res: Response, what: string): void {
  assert.equal(res.headers.get('strict-transport-security'), 'max-age=31536000; includeSubDomains', what);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff', what);
  assert.equal(res.headers.get('content-security-policy'), "default-src 'none';frame-ancestors 'none'", what);
  assert.equal(res.headers.get('referrer-policy'), 'no-referrer', what);
  assert.equal(res.headers.get('cross-origin-resource-policy'), 'same-origin', what);
  assert.equal(res.headers.get('x-frame-options'), 'DENY', what);
  assert.equal(res.headers.get('x-powered-by'), null, what);
}

test('security headers on every answer of the api and the webhook service', async () => {
  assertHeaders(await fetch(`${stack.apiUrl}/v1/documents`, { headers: auth }), 'api 200');
  assertHeaders(await fetch(`${stack.apiUrl}/v1/documents`), 'api 401');
  assertHeaders(await fetch(`${stack.apiUrl}/nowhere`), 'api 404');
  assertHeaders(await fetch(`${stack.apiUrl}/healthz`), 'api /healthz');
  assertHeaders(await fetch(`${stack.webhookUrl}/healthz`), 'webhook /healthz');
  assertHeaders(await fetch(`${stack.webhookUrl}/v1/webhooks/llamaparse`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } }), 'webhook 401');
});

test('CORS: an allowed origin gets a preflight and readable headers, without credentials', async () => {
  const preflight = await fetch(`${stack.apiUrl}/v1/documents`, {
    method: 'OPTIONS',
    headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, idempotency-key' },
  });
  assert.equal(preflight.status, 204, await preflight.text());
  assert.equal(preflight.headers.get('access-control-allow-origin'), APP);
  assert.match(preflight.headers.get('access-control-allow-methods') ?? '', /POST/);
  assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Authorization/i);
  assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Idempotency-Key/i);
  assert.equal(preflight.headers.get('access-control-allow-credentials'), null);
  assert.equal(preflight.headers.get('access-control-max-age'), '600');

  const res = await fetch(`${stack.apiUrl}/v1/documents`, { headers: { ...auth, origin: 'http://localhost:5173' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), 'http://localhost:5173');
  const exposed = (res.headers.get('access-control-expose-headers') ?? '').split(/,\s*/);
  for (const header of ['ETag', 'Location', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset']) assert.ok(exposed.includes(header), `${header} exposed: ${exposed}`);
  // An error answer carries CORS too, or a browser client could not read the error's code.
  const denied = await fetch(`${stack.apiUrl}/v1/documents`, { headers: { origin: APP } });
  assert.equal(denied.status, 401);
  assert.equal(denied.headers.get('access-control-allow-origin'), APP);
});

test('CORS: another origin, or no CORS_ORIGINS, gets no CORS headers', async () => {
  const other = await fetch(`${stack.apiUrl}/v1/documents`, { headers: { ...auth, origin: 'https://evil.example' } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
  const otherPreflight = await fetch(`${stack.apiUrl}/v1/documents`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'DELETE' } });
  assert.equal(otherPreflight.headers.get('access-control-allow-origin'), null);
  const none = await fetch(`${plain.apiUrl}/v1/documents`, { headers: { authorization: `Bearer ${plain.token('user-a')}`, origin: APP } });
  assert.equal(none.status, 200);
  assert.equal(none.headers.get('access-control-allow-origin'), null);
  const nonePreflight = await fetch(`${plain.apiUrl}/v1/documents`, { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST' } });
  assert.equal(nonePreflight.headers.get('access-control-allow-origin'), null);
});

test('CORS_ORIGINS must be origins: no path, no wildcard, no other scheme', () => {
  for (const bad of ['*', 'https://app.example.com/path', 'app.example.com', 'ftp://files.example.com', 'https://*.example.com']) {
    assert.throws(() => loadConfig({ CORS_ORIGINS: bad }), (err: unknown) => err instanceof ConfigError && /CORS_ORIGINS/.test(err.message), bad);
  }
  assert.deepEqual(loadConfig({ CORS_ORIGINS: 'https://a.example, http://localhost:3000/' }).http.corsOrigins, ['https://a.example', 'http://localhost:3000']);
});
