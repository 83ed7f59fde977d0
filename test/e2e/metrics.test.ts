// The metrics an operator reads, driven by real traffic through the in-process stack: the
// success bar (upload to final state), failures by code, job pickup, authentication failures,
// rate limits, webhook handling, pools; the sampling lease (one process samples, a dead holder is
// replaced); and every label value of every series within its declared closed set.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { signUserToken } from '../../src/security/tokens.ts';
import { webhookCredential, WEBHOOK_TOKEN_HEADER } from '../../src/security/webhook-auth.ts';
import { CONFIGURED, initializeSeries, LABEL_VALUES, registry, ROUTE_PATTERNS } from '../../src/observability/metrics.ts';
import { startSampler } from '../../src/observability/sampler.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { api, startStack, TEST_WEBHOOK_SECRET, upload, waitForStatus } from '../helpers/stack.ts';

interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The registry's text exposition, parsed: what Prometheus would scrape. */
async function scrape(): Promise<Series[]> {
  const text = await registry.metrics();
  const series: Series[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparseable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    series.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return series;
}

/** The sum of a metric's series whose labels include `match`. */
function sum(series: Series[], name: string, match: Record<string, string> = {}): number {
  return series.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

const stack = await startStack({ webhooks: true, env: { RATE_LIMIT_SEARCHES: '1' } });
const call = api(stack);

test('traffic moves the metrics an operator reads, each by the right amount', async () => {
  const before = await scrape();
  const startedAt = performance.now();

  // Two documents to ready, one that fails at parse.
  const ids: string[] = [];
  for (const name of ['sample.txt', 'sample.md']) {
    const res = await upload(stack, await readFile(`test/fixtures/${name}`), name);
    assert.equal(res.status, 202);
    ids.push(((await res.json()) as { id: string }).id);
  }
  const corrupt = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.from('garbage that is not a PDF object table\n'.repeat(8)), randomBytes(64)]);
  const bad = await upload(stack, corrupt, 'broken.pdf');
  assert.equal(bad.status, 202);
  const badId = ((await bad.json()) as { id: string }).id;
  for (const id of ids) assert.equal((await waitForStatus(stack, id, ['ready', 'failed'])).status, 'ready');
  assert.equal((await waitForStatus(stack, badId, ['ready', 'failed'])).status, 'failed');
  const wallSeconds = (performance.now() - startedAt) / 1000;

  // Authentication failures: none, garbage, expired; then a search over its budget of one a minute.
  const v1 = new URL('/v1/documents', stack.apiUrl);
  assert.equal((await fetch(v1)).status, 401);
  assert.equal((await fetch(v1, { headers: { authorization: 'Bearer not.a.jwt' } })).status, 401);
  const expired = signUserToken(stack.jwt, 'user-a', { expiresInSeconds: -60 });
  assert.equal((await fetch(v1, { headers: { authorization: `Bearer ${expired}` } })).status, 401);
  const search = () => call('/v1/search', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'lighthouse' }) });
  assert.equal((await search()).status, 200);
  assert.equal((await search()).status, 429);

  // A webhook delivery with a valid credential for a document that does not exist: answered 404, timed.
  const unknown = randomUUID();
  const hook = await fetch(`${stack.webhookUrl}/v1/webhooks/llamaparse/${unknown}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', [WEBHOOK_TOKEN_HEADER]: webhookCredential(TEST_WEBHOOK_SECRET, 'llamaparse', unknown, 1) },
    body: JSON.stringify({ event_id: randomUUID(), event_type: 'parse.success', timestamp: Date.now() / 1000, data: { id: 'pjb-x', job_id: 'pjb-x' } }),
  });
  assert.equal(hook.status, 404);

  const after = await scrape();
  const delta = (name: string, match: Record<string, string> = {}) => sum(after, name, match) - sum(before, name, match);

  // The success bar: two first runs ready, one failed, timed from upload by the database's clock.
  assert.equal(delta('docpipe_document_processing_seconds_count', { outcome: 'ready', parser: 'local', embedder: 'local' }), 2);
  assert.equal(delta('docpipe_document_processing_seconds_count', { outcome: 'failed' }), 1);
  const seconds = delta('docpipe_document_processing_seconds_sum');
  assert.ok(seconds > 0 && seconds < 3 * wallSeconds, `processing time ${seconds} s for a run of ${wallSeconds} s`);
  assert.equal(delta('docpipe_document_processing_seconds_bucket', { outcome: 'ready', le: '+Inf' }), 2);
  assert.equal(delta('docpipe_documents_failed_total', { stage: 'parse', code: 'UNPARSEABLE_DOCUMENT' }), 1);
  assert.equal(delta('docpipe_events_appended_total', { type: 'DocumentReady' }), 2);
  assert.ok(delta('docpipe_parser_pages_total', { parser: 'local' }) >= 2, 'pages of the two documents');

  // Jobs: every document was picked up from the parse queue, and each pickup was timed.
  assert.equal(delta('docpipe_job_pickup_seconds_count', { queue: 'docpipe-parse' }), 3);
  assert.equal(delta('docpipe_job_pickup_seconds_count', { queue: 'docpipe-embed' }), 2);
  assert.ok(delta('docpipe_stage_duration_seconds_count', { stage: 'parse', outcome: 'done' }) >= 2);

  // HTTP: the 401s and the 429 by route and code, the uploads by class.
  assert.equal(delta('docpipe_http_error_responses_total', { service: 'api', route: '/v1/documents', status_code: '401' }), 3);
  assert.equal(delta('docpipe_http_error_responses_total', { service: 'api', route: '/v1/search', status_code: '429' }), 1);
  assert.equal(delta('docpipe_http_request_duration_seconds_count', { service: 'api', method: 'POST', route: '/v1/documents', status_class: '2xx' }), 3);
  assert.equal(delta('docpipe_auth_failures_total', { reason: 'missing' }), 1);
  assert.equal(delta('docpipe_auth_failures_total', { reason: 'invalid' }), 1);
  assert.equal(delta('docpipe_auth_failures_total', { reason: 'expired' }), 1);
  assert.equal(delta('docpipe_rate_limited_total', { budget: 'searches' }), 1);

  // The webhook: counted and timed by outcome.
  assert.equal(delta('docpipe_webhook_deliveries_total', { outcome: 'unknown_document' }), 1);
  assert.equal(delta('docpipe_webhook_handling_seconds_count', { provider: 'llamaparse', outcome: 'unknown_document' }), 1);
  assert.equal(delta('docpipe_http_error_responses_total', { service: 'webhook', route: '/v1/webhooks/llamaparse/:documentId', status_code: '404' }), 1);

  // Pools: this process's two, each with its size.
  assert.equal(sum(after, 'docpipe_db_pool_max', { pool: 'app' }), stack.config.databasePoolMax);
  assert.ok(sum(after, 'docpipe_db_pool_max', { pool: 'queue' }) > 0);
  assert.equal(sum(after, 'docpipe_db_pool_connections', { pool: 'app', state: 'waiting' }), 0);
  assert.ok(after.some((s) => s.name === 'docpipe_db_pool_connections' && s.labels.pool === 'queue' && s.labels.state === 'idle'));
});

test('the app pool counts work in flight: queries past its size wait', async () => {
  const max = stack.config.databasePoolMax;
  const sleeping = Array.from({ length: max + 3 }, () => stack.runtime.sql`select pg_sleep(0.5)`);
  const during = new Promise<Series[]>((resolve) => setTimeout(() => void scrape().then(resolve), 200));
  const [series] = await Promise.all([during, Promise.all(sleeping)]);
  assert.equal(sum(series, 'docpipe_db_pool_connections', { pool: 'app', state: 'in_use' }), max);
  assert.ok(sum(series, 'docpipe_db_pool_connections', { pool: 'app', state: 'waiting' }) >= 3);
  const settled = await scrape();
  assert.equal(sum(settled, 'docpipe_db_pool_connections', { pool: 'app', state: 'waiting' }), 0);
  // A transaction counts once for its length; its own queries do not count again.
  let inside: Series[] = [];
  await stack.runtime.sql.begin(async (tx) => {
    await tx`select 1`;
    inside = await scrape();
  });
  assert.ok(sum(inside, 'docpipe_db_pool_connections', { pool: 'app', state: 'in_use' }) >= 1);
});

test('one process at a time samples the database; its gauges match the tables; a dead holder is replaced', async () => {
  const logger = createLogger('silent');
  const a = startSampler({ sql: stack.runtime.sql, logger, intervalSeconds: 5, autoStart: false });
  const b = startSampler({ sql: stack.runtime.sql, logger, intervalSeconds: 5, autoStart: false });
  try {
    await stack.db.sql`delete from docpipe.metrics_lease`;
    await a.tick();
    assert.equal(a.leader, true);
    let series = await scrape();
    assert.equal(sum(series, 'docpipe_metrics_sampler_leader'), 1);
    const [counts] = await stack.db.sql<{ ready: string; failed: string }[]>`
      select count(*) filter (where status = 'ready') as ready, count(*) filter (where status = 'failed') as failed from docpipe.document_status`;
    assert.equal(sum(series, 'docpipe_documents', { status: 'ready' }), Number(counts!.ready));
    assert.equal(sum(series, 'docpipe_documents', { status: 'failed' }), Number(counts!.failed));
    for (const queue of ['docpipe-parse', 'docpipe-embed', 'docpipe-parse-result', 'docpipe-purge', 'docpipe-dead-letter', 'docpipe-maintenance']) {
      for (const state of ['waiting', 'scheduled', 'active']) {
        assert.ok(series.some((s) => s.name === 'docpipe_queue_jobs' && s.labels.queue === queue && s.labels.state === state), `${queue} ${state}`);
      }
      assert.ok(series.some((s) => s.name === 'docpipe_queue_oldest_waiting_seconds' && s.labels.queue === queue));
    }
    assert.ok(sum(series, 'docpipe_db_max_connections') > 0);
    assert.ok(sum(series, 'docpipe_db_connections', { application: 'test' }) === 0, 'the stack pool is named docpipe-test, counted as other');
    assert.ok(sum(series, 'docpipe_db_connections') >= 1);
    assert.ok(Math.abs(sum(series, 'docpipe_metrics_sample_timestamp_seconds') - Date.now() / 1000) < 60);

    // A job waiting for its start-after is scheduled, not waiting (a poll's delay is no backlog).
    const jobId = await stack.runtime.boss.send('docpipe-purge', { documentId: randomUUID(), run: 0, correlationId: 'c', causationId: null, requestId: null }, { startAfter: 3600 });
    await a.tick();
    series = await scrape();
    assert.equal(sum(series, 'docpipe_queue_jobs', { queue: 'docpipe-purge', state: 'scheduled' }), 1);
    assert.equal(sum(series, 'docpipe_queue_oldest_waiting_seconds', { queue: 'docpipe-purge' }), 0);
    await stack.runtime.boss.deleteJob('docpipe-purge', jobId!);

    // The other process does not sample while the lease is held, and exports nothing of it.
    await b.tick();
    assert.equal(b.leader, false);
    series = await scrape();
    assert.ok(!series.some((s) => s.name === 'docpipe_documents'), 'a non-holder exports no sampled gauge');
    assert.equal(sum(series, 'docpipe_metrics_sampler_leader'), 0);

    // The holder renews; when it stops renewing (its lease expires), the next asker takes over.
    await a.tick();
    assert.equal(a.leader, true);
    await stack.db.sql`update docpipe.metrics_lease set expires_at = now() - interval '1 second'`;
    await b.tick();
    assert.equal(b.leader, true);
    await a.tick();
    assert.equal(a.leader, false);

    // A holder that stops gives the lease up at once.
    await b.stop();
    await a.tick();
    assert.equal(a.leader, true);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('counters with closed label sets exist at 0 from the start, so a first increment is visible to rate()', async () => {
  initializeSeries();
  const series = await scrape();
  const has = (name: string, labels: Record<string, string>) => series.some((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(has('docpipe_auth_failures_total', { reason: 'blocked' }));
  assert.ok(has('docpipe_dead_letters_total', { queue: 'docpipe-embed' }));
  assert.ok(has('docpipe_documents_failed_total', { stage: 'embed', code: 'EMBEDDER_AUTH_FAILED' }));
  assert.ok(has('docpipe_security_events_total', { kind: 'forged_webhooks' }));
  assert.ok(has('docpipe_http_requests_total', { service: 'api', status_class: '5xx' }));
  assert.ok(has('docpipe_http_requests_total', { service: 'webhook', status_class: '5xx' }));
  assert.ok(!series.some((s) => s.name === 'docpipe_provider_requests_total' && s.labels.provider === 'openai' && s.labels.operation === 'put'), 'no nonsense pairs');
});

test('every label value of every docpipe series is within its declared closed set', async () => {
  const routes = new Set([...stack.apiRoutes().map((r) => r.url), '/v1/webhooks/llamaparse/:documentId', '/healthz', '/readyz', 'unmatched']);
  // Traffic that tries to make new values: unknown routes and methods, odd status codes.
  await fetch(new URL(`/no/such/route/${randomUUID()}`, stack.apiUrl));
  await fetch(new URL('/v1/documents', stack.apiUrl), { method: 'PROPFIND' }).catch(() => null);
  await fetch(new URL(`/v1/documents/${randomUUID()}`, stack.apiUrl), { method: 'PATCH', headers: { authorization: `Bearer ${stack.token()}` } });
  const series = await scrape();
  let checked = 0;
  for (const s of series) {
    if (!s.name.startsWith('docpipe_') || s.name.startsWith('docpipe_process_')) continue;
    const base = s.name.replace(/_(bucket|count|sum)$/, '');
    const declared = LABEL_VALUES[base] ?? LABEL_VALUES[s.name];
    assert.ok(declared, `${s.name} has no declared labels`);
    for (const [label, value] of Object.entries(s.labels)) {
      if (label === 'le') continue;
      const allowed = declared[label];
      assert.ok(allowed !== undefined, `${s.name} has an undeclared label ${label}`);
      if (allowed === ROUTE_PATTERNS) assert.ok(routes.has(value), `${s.name}{${label}="${value}"}: not a registered route`);
      else if (allowed === CONFIGURED) assert.ok(value.length > 0 && value.length <= 100, `${s.name}{${label}="${value}"}`);
      else assert.ok((allowed as readonly string[]).includes(value), `${s.name}{${label}="${value}"} is outside its closed set`);
      checked++;
    }
  }
  assert.ok(checked > 100, `checked ${checked} label values`);
  assert.ok(series.some((s) => s.labels.route === 'unmatched'), 'an unknown route is counted as unmatched');
});
