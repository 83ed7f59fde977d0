// POST /v1/search through the whole stack on the embedded PostgreSQL (no pgvector: embeddings are
// real[] and scored exactly in SQL), with the local parser and embedder: the expected chunk first
// for a query built from a document's text, owners and the service role, reprocessed and deleted
// documents that never leak their old chunks, a code for each bad input and for an embedder
// failure (and for a query over the model's token limit), and a changed EMBEDDING_DIMENSIONS
// refused at start-up.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, describe, test } from 'node:test';
import { loadConfig } from '../../src/config.ts';
import { EmbeddingDimensionsError } from '../../src/db/vectors.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { signUserToken } from '../../src/security/tokens.ts';
import { openRuntime } from '../../src/services/runtime.ts';
import { freePort } from '../../src/util/free-port.ts';
import { startFakeOpenAI } from '../fakes/openai.ts';
import { CORPUS, SEARCH_CHUNKING, VOLCANO_SENTENCE } from '../helpers/search-corpus.ts';
import { api, spawnCli, startStack, upload, waitForStatus, type TestStack } from '../helpers/stack.ts';

type Json = Record<string, any>;

const stack = await startStack({
  env: { CHUNK_MAX_TOKENS: String(SEARCH_CHUNKING.maxTokens), CHUNK_OVERLAP_TOKENS: String(SEARCH_CHUNKING.overlapTokens) },
});
const asUser = api(stack, 'user-a');

function searchAs(token: string, body: unknown, query = '') {
  return fetch(`${stack.apiUrl}/v1/search${query}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}
const search = (body: unknown, sub = 'user-a', query = '') => searchAs(stack.token(sub), body, query);
const serviceToken = () => signUserToken(stack.jwt, 'backend', { claims: { role: 'service_role' } });

async function results(res: Response): Promise<Json[]> {
  const body = (await res.json()) as Json;
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.results as Json[];
}

async function ready(s: TestStack, sub: string, markdown: string, name: string): Promise<string> {
  const res = await upload(s, Buffer.from(markdown), name, { sub });
  const { id } = (await res.json()) as Json;
  await waitForStatus(s, id, ['ready'], { sub });
  return id as string;
}

const docs = {
  lighthouses: await ready(stack, 'user-a', CORPUS.lighthouses, 'lighthouses.md'),
  beekeeping: await ready(stack, 'user-a', CORPUS.beekeeping, 'beekeeping.md'),
  volcanoes: await ready(stack, 'user-a', CORPUS.volcanoes, 'volcanoes.md'),
  sourdough: await ready(stack, 'user-b', CORPUS.sourdough, 'sourdough.md'),
};

// A second api whose embedder is OpenAI's, faked over HTTP, so that it can be made to fail.
const openai = await startFakeOpenAI();
after(() => openai.close());
const failing = await startStack({
  worker: false,
  env: { DOCPIPE_EMBEDDER: 'openai', OPENAI_API_KEY: openai.apiKey, OPENAI_BASE_URL: openai.url, SEARCH_EMBED_TIMEOUT_SECONDS: '5' },
});

describe('POST /v1/search on real[] (exact)', () => {
  test('a query made of a chunk\'s text finds that chunk first, for every chunk; a sentence of one document finds it first', async () => {
    const chunks = await stack.db.sql<{ document_id: string; chunk_index: number; content: string }[]>`
      select document_id, chunk_index, content from docpipe.document_chunks
      where document_id = any (${[docs.lighthouses, docs.beekeeping, docs.volcanoes]}::uuid[]) order by document_id, chunk_index`;
    assert.ok(chunks.length >= 9, `several chunks per document (${chunks.length})`);
    for (const chunk of chunks) {
      const [first] = await results(await search({ query: chunk.content, k: 3 }));
      assert.deepEqual([first!.documentId, first!.chunkIndex, first!.text], [chunk.document_id, chunk.chunk_index, chunk.content]);
      assert.ok(Math.abs(first!.score - 1) < 1e-6, `cosine similarity with itself is 1 (${first!.score})`);
    }
    const hits = await results(await search({ query: VOLCANO_SENTENCE }));
    assert.equal(hits.length, 5, 'k defaults to 5');
    assert.equal(hits[0]!.documentId, docs.volcanoes);
    assert.ok(hits[0]!.text.includes(VOLCANO_SENTENCE));
    assert.ok(hits.every((h, i) => i === 0 || h.score <= hits[i - 1]!.score), 'best first');
    assert.deepEqual(Object.keys(hits[0]!).sort(), ['chunkIndex', 'documentId', 'score', 'text']);
  });

  test('a user finds their own chunks only; the service role everyone\'s, or one owner\'s', async () => {
    const mine = await results(await search({ query: CORPUS.sourdough, k: 50 }));
    assert.ok(mine.length > 0 && mine.every((h) => h.documentId !== docs.sourdough));
    const theirs = await results(await search({ query: CORPUS.sourdough, k: 50 }, 'user-b'));
    assert.ok(theirs.length > 0 && theirs.every((h) => h.documentId === docs.sourdough));
    const everyone = await results(await searchAs(serviceToken(), { query: CORPUS.sourdough }));
    assert.equal(everyone[0]!.documentId, docs.sourdough);
    const onlyA = await results(await searchAs(serviceToken(), { query: CORPUS.sourdough, k: 50 }, '?owner=user-a'));
    assert.ok(onlyA.length > 0 && onlyA.every((h) => h.documentId !== docs.sourdough));
    const refused = await search({ query: 'x' }, 'user-a', '?owner=user-b');
    assert.equal(refused.status, 403);
    assert.equal(((await refused.json()) as Json).error.code, 'FORBIDDEN_OWNER');
  });

  test('documentIds restricts the search; another owner\'s id finds nothing', async () => {
    const within = await results(await search({ query: VOLCANO_SENTENCE, k: 50, documentIds: [docs.lighthouses, docs.beekeeping] }));
    assert.ok(within.length > 0 && within.every((h) => h.documentId === docs.lighthouses || h.documentId === docs.beekeeping));
    assert.deepEqual(await results(await search({ query: CORPUS.sourdough, documentIds: [docs.sourdough] })), []);
  });
});

describe('reprocessed and deleted documents never leak old chunks', () => {
  test('while a reprocess runs, the document answers nothing though its previous run is still stored; then its new run answers', async () => {
    // No worker: the document stays between runs for as long as the test looks.
    await stack.worker!.stop();
    const res = await asUser(`/v1/documents/${docs.volcanoes}/reprocess`, { method: 'POST' });
    assert.equal(res.status, 202);
    const [old] = await stack.db.sql<{ n: number }[]>`select count(*)::int as n from docpipe.document_chunks where document_id = ${docs.volcanoes} and run = 1`;
    assert.ok(old!.n > 0, 'run 1 is still in the table');
    const during = await results(await search({ query: VOLCANO_SENTENCE, k: 50 }));
    assert.ok(during.length > 0 && during.every((h) => h.documentId !== docs.volcanoes));
    await stack.startWorker();
    const status = await waitForStatus(stack, docs.volcanoes, ['ready']);
    assert.equal(status.run, 2);
    const hits = await results(await search({ query: VOLCANO_SENTENCE }));
    assert.equal(hits[0]!.documentId, docs.volcanoes);
    const runs = await stack.db.sql<{ run: number }[]>`select distinct run from docpipe.document_chunks where document_id = ${docs.volcanoes}`;
    assert.deepEqual(runs.map((r) => r.run), [2]);
  });

  test('a deleted document never answers', async () => {
    assert.equal((await asUser(`/v1/documents/${docs.beekeeping}`, { method: 'DELETE' })).status, 204);
    const hits = await results(await search({ query: CORPUS.beekeeping, k: 50 }));
    assert.ok(hits.length > 0 && hits.every((h) => h.documentId !== docs.beekeeping));
    assert.deepEqual(await results(await search({ query: CORPUS.beekeeping, documentIds: [docs.beekeeping] })), []);
  });
});

describe('bad input: a code for each', () => {
  const cases: [string, unknown, number, string][] = [
    ['an empty query', { query: '' }, 400, 'INVALID_QUERY'],
    ['a query of whitespace alone', { query: ' \n\t ' }, 400, 'INVALID_QUERY'],
    ['a query over 4,000 characters', { query: 'a'.repeat(4001) }, 400, 'INVALID_QUERY'],
    ['no query', { k: 3 }, 400, 'INVALID_QUERY'],
    ['a query with a NUL', { query: 'tide\u0000tables' }, 400, 'INVALID_TEXT'],
    ['k = 0', { query: 'lamp', k: 0 }, 400, 'INVALID_K'],
    ['k = 51', { query: 'lamp', k: 51 }, 400, 'INVALID_K'],
    ['k = 2.5', { query: 'lamp', k: 2.5 }, 400, 'INVALID_K'],
    ['k that is not a number', { query: 'lamp', k: 'many' }, 400, 'INVALID_K'],
    ['101 document ids', { query: 'lamp', documentIds: Array.from({ length: 101 }, () => docs.lighthouses) }, 400, 'TOO_MANY_DOCUMENT_IDS'],
    ['a document id that is not a uuid', { query: 'lamp', documentIds: ['not-a-uuid'] }, 400, 'INVALID_DOCUMENT_ID'],
    ['a urn:uuid: document id', { query: 'lamp', documentIds: [`urn:uuid:${docs.lighthouses}`] }, 400, 'INVALID_DOCUMENT_ID'],
    ['a document id that is not text', { query: 'lamp', documentIds: [{ id: docs.lighthouses }] }, 400, 'INVALID_DOCUMENT_ID'],
    ['an undeclared property', { query: 'lamp', limit: 3 }, 400, 'VALIDATION_ERROR'],
    ['a body that is not an object', ['lamp'], 400, 'VALIDATION_ERROR'],
  ];
  for (const [what, body, status, code] of cases) {
    test(`${what}: ${status} ${code}`, async () => {
      const res = await search(body);
      const answer = (await res.json()) as Json;
      assert.equal(res.status, status, JSON.stringify(answer));
      assert.equal(answer.error.code, code);
      assert.equal(typeof answer.error.requestId, 'string');
    });
  }

  test('no token: 401', async () => {
    const res = await fetch(`${stack.apiUrl}/v1/search`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"lamp"}' });
    assert.equal(res.status, 401);
  });
});

describe('an embedder failure', () => {
  const ask = () =>
    fetch(`${failing.apiUrl}/v1/search`, {
      method: 'POST',
      headers: { authorization: `Bearer ${failing.token('user-a')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query: 'how did the keeper light the lamp' }),
    });
  const answer = async (res: Response) => ({ status: res.status, code: ((await res.json()) as Json).error?.code, retryAfter: res.headers.get('retry-after') });

  test('it answers: the search works through it', async () => {
    openai.reset();
    assert.deepEqual(await results(await ask()), []);
  });

  test('an outage: 503 EMBEDDER_UNAVAILABLE with Retry-After, once the embedder\'s own retries are spent', async () => {
    openai.reset();
    openai.failNext(503, 10);
    const started = Date.now();
    assert.deepEqual(await answer(await ask()), { status: 503, code: 'EMBEDDER_UNAVAILABLE', retryAfter: '1' });
    assert.ok(Date.now() - started < 4500, 'the embedder gave up (4 attempts), before the timeout');
    assert.equal(openai.requests.length, 4);
  });

  test('no answer within SEARCH_EMBED_TIMEOUT_SECONDS: 503 EMBEDDER_UNAVAILABLE at the timeout', async () => {
    openai.reset();
    openai.setDelayMs(8000);
    const started = Date.now();
    assert.deepEqual(await answer(await ask()), { status: 503, code: 'EMBEDDER_UNAVAILABLE', retryAfter: '1' });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 4900 && elapsed < 7000, `answered at the timeout (${elapsed} ms)`);
    openai.setDelayMs(0);
  });

  test('a query within 4,000 characters but over the model\'s 8,191 tokens (4,000 emoji): 400 INVALID_QUERY, and nothing is sent', async () => {
    openai.reset();
    const query = '🦀'.repeat(4000);
    const res = await fetch(`${failing.apiUrl}/v1/search`, {
      method: 'POST',
      headers: { authorization: `Bearer ${failing.token('user-a')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query }),
    });
    const body = (await res.json()) as Json;
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.code, 'INVALID_QUERY');
    assert.match(body.error.message, /more tokens than the embedding model takes/);
    assert.equal(openai.requests.length, 0);
  });

  test('a refusal (HTTP 400): 502 EMBEDDER_FAILED', async () => {
    openai.reset();
    openai.failNext(400);
    assert.deepEqual(await answer(await ask()), { status: 502, code: 'EMBEDDER_FAILED', retryAfter: null });
  });
});

describe('a changed EMBEDDING_DIMENSIONS is refused at start-up', () => {
  test('by every service (openRuntime), by `docpipe api`, `docpipe migrate` and `docpipe rebuild-projections`, with EMBEDDING_DIMENSIONS_MISMATCH', async () => {
    const stored = stack.config.embedder.dimensions;
    const env = { ...stack.env, EMBEDDING_DIMENSIONS: String(stored * 2), API_PORT: String(await freePort()), LOG_LEVEL: 'error' };
    await assert.rejects(openRuntime(loadConfig(env), createLogger('silent'), 'test'), (err: unknown) => {
      assert.ok(err instanceof EmbeddingDimensionsError);
      assert.equal(err.code, 'EMBEDDING_DIMENSIONS_MISMATCH');
      assert.equal(
        err.message,
        `EMBEDDING_DIMENSIONS is ${stored * 2}, but the embeddings stored in the database have ${stored} dimensions: vectors of different sizes cannot be compared. ` +
          `Set EMBEDDING_DIMENSIONS=${stored} (and the embedding model that produced them); a new dimension needs every document embedded again, into a new database or a new column (a migration of its own)`,
      );
      return true;
    });

    const service = spawnCli('api', env);
    let logged = '';
    service.stdout!.on('data', (chunk: Buffer) => (logged += chunk.toString()));
    const [serviceExit] = (await once(service, 'exit')) as [number];
    assert.equal(serviceExit, 1);
    const line = JSON.parse(logged.split('\n').find((l) => l.includes('start-up failed'))!) as Json;
    assert.equal(line.err.code, 'EMBEDDING_DIMENSIONS_MISMATCH');

    // The commands that migrate: `migrate` (the release command) and `rebuild-projections`.
    for (const command of ['migrate', 'rebuild-projections']) {
      const child = spawnCli(command, env);
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const [exit] = (await once(child, 'exit')) as [number];
      assert.equal(exit, 2, `${command}: ${stderr}`);
      assert.match(stderr, new RegExp(`^docpipe: EMBEDDING_DIMENSIONS_MISMATCH: EMBEDDING_DIMENSIONS is ${stored * 2}, but`));
    }
  });
});
