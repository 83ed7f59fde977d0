// Usage end to end: documents go from upload to ready through the real API, queue and worker
// (OpenAI embeddings against the fake, priced); GET /v1/usage then shows the caller exactly the
// documents, bytes, pages and tokens that the status rows and the events record, with the
// estimated cost; another owner sees none of it; bad dates are 400 INVALID_DATE_RANGE; no token
// is 401. `docpipe usage` (the real CLI, a child process) shows every owner, biggest first, and
// refuses bad flags with exit code 2.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { startFakeOpenAI } from '../fakes/openai.ts';
import { runToExit } from '../helpers/process.ts';
import { api, startStack, upload, waitForStatus } from '../helpers/stack.ts';

type Json = Record<string, any>;

const openai = await startFakeOpenAI();
after(() => openai.close());

const PRICE = 2.5; // dollars per million tokens: large enough to show in four decimals
const stack = await startStack({
  env: {
    DOCPIPE_EMBEDDER: 'openai',
    OPENAI_API_KEY: openai.apiKey,
    OPENAI_BASE_URL: openai.url,
    EMBEDDING_DIMENSIONS: '64',
    PRICE_OPENAI_MILLION_TOKENS_DOLLARS: String(PRICE),
    QUEUE_POLLING_INTERVAL_SECONDS: '1',
  },
});

const OWNED = { 'user-a': ['sample.md', 'sample.pdf', 'sample.txt'], 'user-b': ['sample.html'] } as const;
type Owner = keyof typeof OWNED;

async function toReady(sub: Owner, file: string): Promise<string> {
  const res = await upload(stack, await readFile(path.join('test/fixtures', file)), file, { sub });
  const body = (await res.json()) as Json;
  assert.equal(res.status, 202, JSON.stringify(body));
  const doc = await waitForStatus(stack, body.id, ['ready', 'failed'], { sub, timeoutMs: 30_000 });
  assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
  return body.id as string;
}

/** What the status rows and the log say an owner used. */
async function recorded(owner: Owner): Promise<{ documents: number; bytes: number; pages: number; tokens: number }> {
  const [status] = await stack.db.sql<{ documents: number; bytes: number }[]>`
    select count(*)::int as documents, coalesce(sum(size_bytes), 0)::int as bytes from docpipe.document_status where owner_id = ${owner}`;
  const [log] = await stack.db.sql<{ pages: number; tokens: number }[]>`
    select coalesce(sum((e.data->>'pages')::int) filter (where e.type = 'ParseSucceeded'), 0)::int as pages,
           coalesce(sum((e.data->>'tokenCount')::int) filter (where e.type = 'DocumentChunked'), 0)::int as tokens
    from docpipe.events e join docpipe.document_status s on s.id = e.stream_id
    where s.owner_id = ${owner}`;
  return { documents: status!.documents, bytes: status!.bytes, pages: log!.pages, tokens: log!.tokens };
}

const usage = (sub: string, query = '') => api(stack, sub)(`/v1/usage${query}`);
const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);

const ids: Record<Owner, string[]> = { 'user-a': [], 'user-b': [] };
for (const owner of Object.keys(OWNED) as Owner[]) ids[owner] = await Promise.all(OWNED[owner].map((file) => toReady(owner, file)));
const expected = { 'user-a': await recorded('user-a'), 'user-b': await recorded('user-b') };

describe('GET /v1/usage', () => {
  test('the caller\'s documents, bytes, pages and tokens, as the status rows and events record them, with the cost', async () => {
    const mine = expected['user-a'];
    assert.equal(mine.documents, 3);
    assert.ok(mine.pages >= 3 && mine.tokens > 0 && mine.bytes > 0, JSON.stringify(mine));
    const before = Date.now();
    const res = await usage('user-a');
    assert.equal(res.status, 200);
    const body = (await res.json()) as Json;
    assert.equal(body.ownerId, 'user-a');
    // The last 30 days by default, ending today (UTC); the test may straddle midnight.
    assert.ok([dayOf(before), dayOf(Date.now())].includes(body.to), body.to);
    assert.equal(body.from, dayOf(Date.parse(`${body.to}T00:00:00Z`) - 29 * 86_400_000));
    assert.deepEqual(body.totals, mine);
    assert.ok(body.days.length >= 1 && body.days.length <= 2, JSON.stringify(body.days));
    for (const field of ['documents', 'bytes', 'pages', 'tokens']) {
      assert.equal(body.days.reduce((n: number, d: Json) => n + d[field], 0), mine[field as keyof typeof mine], `days add up to the ${field} total`);
    }
    assert.deepEqual(Object.keys(body.days[0]).sort(), ['bytes', 'day', 'documents', 'pages', 'tokens']);
    // The local parser is free; OpenAI tokens at PRICE per million.
    const embedderDollars = Math.round(((mine.tokens * PRICE) / 1_000_000) * 1e10) / 1e10;
    assert.deepEqual({ ...body.estimatedCost, note: undefined }, { parserDollars: 0, embedderDollars, totalDollars: embedderDollars, currency: 'USD', note: undefined });
    assert.match(body.estimatedCost.note, /local parser: free; OpenAI: \$2\.5 per million tokens/);
  });

  test('another owner sees only their own; an owner with nothing sees zeros', async () => {
    const b = (await (await usage('user-b')).json()) as Json;
    assert.equal(b.ownerId, 'user-b');
    assert.deepEqual(b.totals, expected['user-b']);
    assert.equal(b.totals.documents, 1);
    const c = (await (await usage('user-c')).json()) as Json;
    assert.deepEqual(c.days, []);
    assert.deepEqual(c.totals, { documents: 0, bytes: 0, pages: 0, tokens: 0 });
    assert.deepEqual(c.estimatedCost, { parserDollars: 0, embedderDollars: 0, totalDollars: 0, currency: 'USD', note: c.estimatedCost.note });
  });

  test('from and to bound the days, both included', async () => {
    const today = dayOf(Date.now());
    const one = (await (await usage('user-a', `?from=${today}&to=${today}`)).json()) as Json;
    assert.equal(one.from, today);
    assert.ok(one.days.every((d: Json) => d.day === today));
    const past = (await (await usage('user-a', '?from=2001-01-01&to=2001-12-31')).json()) as Json;
    assert.deepEqual([past.from, past.to, past.days, past.totals.documents], ['2001-01-01', '2001-12-31', [], 0]);
  });

  test('bad dates: 400 INVALID_DATE_RANGE; an undeclared parameter: 400 VALIDATION_ERROR', async () => {
    for (const query of ['?from=2026-02-30', '?to=yesterday', '?from=2026-1-1', '?from=', '?from=2026-12-02&to=2026-12-01', '?from=2020-01-01&to=2026-01-01', '?to=2001-01-01&from=2000-01-01']) {
      const res = await usage('user-a', query);
      const body = (await res.json()) as Json;
      assert.equal(res.status, 400, `${query}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, 'INVALID_DATE_RANGE', query);
      assert.ok(body.error.message.length > 10 && body.error.requestId, query);
    }
    const res = await usage('user-a', '?owner=user-b');
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as Json).error.code, 'VALIDATION_ERROR');
  });

  test('no token: 401; a bad one: 401', async () => {
    const none = await fetch(new URL('/v1/usage', stack.apiUrl));
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as Json).error.code, 'AUTH_MISSING_TOKEN');
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    const bad = await fetch(new URL('/v1/usage', stack.apiUrl), { headers: { authorization: 'Bearer not.a.jwt' } });
    assert.equal(bad.status, 401);
    assert.equal(((await bad.json()) as Json).error.code, 'AUTH_INVALID_TOKEN');
  });

  test('the OpenAPI document describes it', async () => {
    const spec = (await (await fetch(new URL('/openapi.json', stack.apiUrl))).json()) as Json;
    const op = spec.paths['/v1/usage']?.get;
    assert.ok(op, Object.keys(spec.paths).join(', '));
    assert.deepEqual(op.parameters.map((p: Json) => p.name).sort(), ['from', 'to']);
    for (const status of ['200', '400', '401', '403', '429']) assert.ok(op.responses[status], status);
    assert.ok(op.responses['200'].content['application/json'].schema.properties.estimatedCost);
  });
});

describe('docpipe usage', () => {
  const cli = (...args: string[]) =>
    runToExit(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), 'usage', ...args], {
      env: { PATH: process.env.PATH, ...stack.env, LOG_LEVEL: 'silent' },
      timeoutMs: 60_000,
    });

  test('--json: every owner, biggest first, and the totals of all', async () => {
    const run = await cli('--json');
    assert.equal(run.code, 0, run.stderr);
    const summary = JSON.parse(run.stdout) as Json;
    assert.equal(summary.ownerCount, 2);
    assert.equal(summary.currency, 'USD');
    const byOwner = Object.fromEntries(summary.owners.map((o: Json) => [o.ownerId, o]));
    for (const owner of ['user-a', 'user-b'] as const) {
      const { estimatedCost, ownerId, ...counts } = byOwner[owner];
      assert.deepEqual(counts, expected[owner], owner);
      assert.equal(estimatedCost.embedderDollars, Math.round(((expected[owner].tokens * PRICE) / 1_000_000) * 1e10) / 1e10);
    }
    const costs = summary.owners.map((o: Json) => o.estimatedCost.totalDollars);
    assert.deepEqual(costs, [...costs].sort((x: number, y: number) => y - x), 'biggest first');
    for (const field of ['documents', 'bytes', 'pages', 'tokens'] as const) assert.equal(summary.totals[field], expected['user-a'][field] + expected['user-b'][field]);
  });

  test('--owner, --limit and the table', async () => {
    const one = JSON.parse((await cli('--owner', 'user-b', '--json')).stdout) as Json;
    assert.deepEqual([one.ownerCount, one.owners.map((o: Json) => o.ownerId), one.totals.documents], [1, ['user-b'], 1]);
    const limited = JSON.parse((await cli('--limit', '1', '--since', '7d', '--json')).stdout) as Json;
    assert.equal(limited.owners.length, 1);
    assert.equal(limited.ownerCount, 2);
    assert.equal(limited.totals.documents, 4, 'the totals cover every owner');
    const table = await cli('--limit', '1');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^usage from \d{4}-\d{2}-\d{2} to \d{4}-\d{2}-\d{2} \(UTC days, both included\): 2 owners$/m);
    assert.match(table.stdout, /^owner +documents +bytes +pages +tokens +est\. USD$/m);
    assert.match(table.stdout, /^all 2 owners +4 .*\(the 1 biggest shown\)$/m);
    assert.match(table.stdout, /estimated cost: parser \$0\.0000, embedder \$\d+\.\d{4}/);
  });

  test('bad flags: exit 2 and a message naming them', async () => {
    for (const [args, message] of [
      [['--bogus'], /Unknown option '--bogus'/],
      [['--since', '0d'], /--since "0d"/],
      [['--since', '7d', '--to', '2026-01-01'], /not both/],
      [['--from', '2026-02-30'], /from must be a date/],
    ] as [string[], RegExp][]) {
      const run = await cli(...args);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, /^docpipe usage: /);
      assert.match(run.stderr, message);
      assert.equal(run.stdout, '');
    }
  });
});
