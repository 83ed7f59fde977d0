// GET /openapi.json: generated from the route schemas (@fastify/swagger), public, and complete:
// every route of the api is in it with its method, and every /v1 route lists the answers the
// edge may give before it runs (401, 403, 429) besides its own errors, each in the error shape.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { startStack } from '../helpers/stack.ts';

const stack = await startStack({ worker: false });
after(() => stack.close());

test('the document is served without authentication and is OpenAPI 3.1 with a bearer scheme', async () => {
  const res = await fetch(`${stack.apiUrl}/openapi.json`);
  assert.equal(res.status, 200);
  const spec = (await res.json()) as { openapi: string; components: { securitySchemes: Record<string, { scheme: string }> }; paths: Record<string, unknown> };
  assert.equal(spec.openapi, '3.1.0');
  assert.equal(spec.components.securitySchemes.bearer?.scheme, 'bearer');
});

test('every route is in it, and every /v1 route documents its error answers', async () => {
  const spec = (await (await fetch(`${stack.apiUrl}/openapi.json`)).json()) as { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: { properties?: { error?: unknown } } }> }> }>> };
  const declared: string[] = [];
  for (const [path, methods] of Object.entries(spec.paths)) for (const method of Object.keys(methods)) declared.push(`${method.toUpperCase()} ${path}`);
  const expected = stack.apiRoutes().filter((r) => r.url !== '/openapi.json' && r.method !== 'HEAD' && r.method !== 'OPTIONS').map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`);
  assert.ok(expected.length >= 10, expected.join('\n'));
  assert.deepEqual([...new Set(expected)].sort(), [...new Set(declared)].sort());
  for (const [path, methods] of Object.entries(spec.paths)) {
    if (!path.startsWith('/v1/')) continue;
    for (const [method, op] of Object.entries(methods)) {
      const codes = Object.keys(op.responses);
      for (const status of ['401', '403', '429']) assert.ok(codes.includes(status), `${method.toUpperCase()} ${path} documents ${status}: ${codes}`);
      assert.ok(codes.some((c) => c.startsWith('2')), `${method.toUpperCase()} ${path} documents its success`);
      const error = op.responses['401']!.content?.['application/json']?.schema;
      assert.ok(error?.properties?.error, `${method.toUpperCase()} ${path}: 401 in the error shape`);
    }
  }
});
