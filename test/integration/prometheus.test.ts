// A real Prometheus (Debian's, as CI installs it) scraping a real local deployment: the api,
// worker and webhook services as child processes of the real CLI, each serving /metrics on a
// port of its own, on one database, parsing through the fake LlamaCloud so that real webhook
// deliveries arrive. Prometheus runs ops/prometheus/prometheus.yml (targets and intervals
// rewritten) with ops/prometheus/rules/. After uploads to ready, a failed document, webhooks, a
// 401, a 429 and a forged webhook: every query of every dashboard in ops/grafana/dashboards/
// evaluates without error, the core panels have data, every rule group is loaded and every rule
// healthy, and every recording rule evaluates.
//
// Without a `prometheus` binary the test is skipped, unless DOCPIPE_REQUIRE_OPS_TOOLS=1 (CI):
// then it fails.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { loadConfig } from '../../src/config.ts';
import { signUserToken } from '../../src/security/tokens.ts';
import { freePort } from '../../src/util/free-port.ts';
import { startFakeLlamaParse, type FakeLlamaParse } from '../fakes/llamaparse.ts';
import { createDatabase, type TestDatabase } from '../helpers/db.ts';
import { findTool, OPS_TOOLS_REQUIRED } from '../helpers/ops-tools.ts';
import { spawnCli, stackEnv, TEST_JWT_SECRET, upload, waitForStatus, type ApiTarget } from '../helpers/stack.ts';

type Json = Record<string, any>;

const DASHBOARDS = 'ops/grafana/dashboards';
const PROMETHEUS_CONFIG = 'ops/prometheus/prometheus.yml';
const RULES = 'ops/prometheus/rules';
const SERVICES = ['api', 'worker', 'webhook'] as const;
type Service = (typeof SERVICES)[number];
/** The scrape job of each service in ops/prometheus/prometheus.yml. */
const JOBS: Record<Service, string> = { api: 'docpipe-api', worker: 'docpipe-worker', webhook: 'docpipe-webhook' };
const SIGNING_SECRET = 'prometheus-test-lc-signing-secret-32ch';
/** The api's per-user budget of "other" requests: a fourth request in a minute is refused. */
const REQUEST_BUDGET = 3;

/**
 * Panels that must show data after the traffic, by dashboard file and title: every query of each
 * returns at least one finite sample.
 */
const CORE_PANELS: [file: string, title: string][] = [
  ['docpipe-overview.json', 'Upload to final state p95'],
  ['docpipe-overview.json', 'Upload to final state'],
  ['docpipe-overview.json', 'Webhook handling p99'],
  ['docpipe-overview.json', 'Webhook handling'],
  ['docpipe-overview.json', 'HTTP requests by service'],
  ['docpipe-pipeline.json', 'Documents by status'],
  ['docpipe-pipeline.json', 'Queue depth'],
  ['docpipe-providers.json', 'Provider requests'],
];

const prometheusBin = findTool('prometheus');
const required = OPS_TOOLS_REQUIRED;

// ---- processes ------------------------------------------------------------------------------

interface Proc {
  name: string;
  child: ChildProcess;
  /** The tail of what it printed, for failure messages. */
  output(): string;
}

function watch(name: string, child: ChildProcess): Proc {
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-6_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return { name, child, output: () => tail };
}

const alive = (p: Proc) => p.child.exitCode === null && p.child.signalCode === null;

/** SIGTERM, then SIGKILL past `graceMs`; resolves once it has exited. */
async function stop(p: Proc, graceMs: number): Promise<void> {
  if (!alive(p)) return;
  const exited = once(p.child, 'exit');
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Polls `check` until it returns a value, failing past `timeoutMs` (or at once when a process died). */
async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | null | undefined | false>, procs: Proc[] = []): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    const dead = procs.find((p) => !alive(p));
    if (dead) throw new Error(`${dead.name} exited (${dead.child.exitCode ?? dead.child.signalCode}) while waiting for ${what}:\n${dead.output()}`);
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const outputs = procs.map((p) => `--- ${p.name}:\n${p.output()}`).join('\n');
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}\n${outputs}`);
    }
    await sleep(200);
  }
}

const seconds = (since: number) => ((performance.now() - since) / 1000).toFixed(1);

async function ok(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await res.body?.cancel();
  return res.status === 200;
}

// ---- Prometheus's HTTP API ------------------------------------------------------------------

interface QueryResult {
  status: string;
  error?: string;
  errorType?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value?: [number, string] }[] | [number, string] };
}

async function promQuery(base: string, expr: string, time?: number): Promise<QueryResult> {
  const body = new URLSearchParams({ query: expr });
  if (time !== undefined) body.set('time', String(time));
  const res = await fetch(`${base}/api/v1/query`, { method: 'POST', body, signal: AbortSignal.timeout(10_000) });
  return (await res.json()) as QueryResult;
}

/** The finite sample values of an instant query's answer (a vector or a scalar). */
function finiteValues(result: QueryResult): number[] {
  const data = result.data;
  if (!data) return [];
  if (data.resultType === 'scalar') return [Number((data.result as [number, string])[1])].filter(Number.isFinite);
  if (data.resultType !== 'vector') return [];
  return (data.result as { value?: [number, string] }[]).map((s) => Number(s.value?.[1])).filter(Number.isFinite);
}

/** A dashboard expression as Grafana would send it, with the variables set to `All`. */
function concrete(expr: string, window: string): string {
  const values: Record<string, string> = { app: '.*', region: '.*', __rate_interval: window, __range: window, __interval: '15s' };
  return expr.replace(/\$(?:\{(\w+)\}|(\w+))/g, (whole, braced: string | undefined, bare: string | undefined) => {
    const name = braced ?? bare!;
    if (!(name in values)) throw new Error(`unknown variable ${whole} in ${expr}`);
    return values[name]!;
  });
}

interface DashboardQuery {
  file: string;
  panel: string;
  refId: string;
  expr: string;
}

function dashboardQueries(): DashboardQuery[] {
  const queries: DashboardQuery[] = [];
  for (const file of readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json')).sort()) {
    const dashboard = JSON.parse(readFileSync(path.join(DASHBOARDS, file), 'utf8')) as Json;
    const panels = (dashboard.panels as Json[]).flatMap((p) => [p, ...((p.panels as Json[] | undefined) ?? [])]);
    for (const p of panels) for (const t of (p.targets as Json[] | undefined) ?? []) queries.push({ file, panel: p.title, refId: t.refId, expr: t.expr });
  }
  return queries;
}

/** Group and rule names of ops/prometheus/rules/*.yml. */
function ruleFiles(): { groups: Map<string, string[]>; records: string[] } {
  const groups = new Map<string, string[]>();
  const records: string[] = [];
  for (const file of readdirSync(RULES).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const doc = parseYaml(readFileSync(path.join(RULES, file), 'utf8')) as { groups?: { name: string; rules?: { record?: string; alert?: string }[] }[] } | null;
    for (const group of doc?.groups ?? []) {
      groups.set(group.name, (group.rules ?? []).map((r) => r.record ?? r.alert ?? '?'));
      for (const rule of group.rules ?? []) if (rule.record) records.push(rule.record);
    }
  }
  return { groups, records: [...new Set(records)] };
}

// ---- the test -------------------------------------------------------------------------------

interface Started {
  /** Prometheus's base URL. */
  prom: string;
  /** Where and over what window the dashboards' queries are evaluated. */
  evaluateAt: number;
  window: string;
  notes: string[];
}

/** Starts everything (stopped and removed after the file's tests, whatever happens) and sends the traffic. */
async function setUp(bin: string): Promise<Started> {
  const setupStarted = performance.now();
  const procs: Proc[] = [];
  let prometheus: Proc | null = null;
  let llama: FakeLlamaParse | null = null;
  let db: TestDatabase | null = null;
  const dirs: string[] = [];
  // Registered first: the services stop before their database is dropped.
  after(async () => {
    await Promise.all(procs.map((p) => stop(p, 8_000)));
    if (prometheus) await stop(prometheus, 5_000);
    await llama?.close();
    await db?.drop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  llama = await startFakeLlamaParse({ webhookRetryDelaysMs: [200, 400], cache: false });
  db = await createDatabase({ manual: true });
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-prom-data-'));
  dirs.push(dataDir);
  const promDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-prom-'));
  dirs.push(promDir);

  const apiPort = await freePort();
  const webhookPort = await freePort();
  const metricsPorts: Record<Service, number> = { api: await freePort(), worker: await freePort(), webhook: await freePort() };
  const env = stackEnv({
    databaseUrl: db.url,
    dataDir,
    apiPort,
    webhookPort,
    webhooks: true,
    env: {
      API_METRICS_PORT: String(metricsPorts.api),
      WORKER_METRICS_PORT: String(metricsPorts.worker),
      WEBHOOK_METRICS_PORT: String(metricsPorts.webhook),
      DOCPIPE_PARSER: 'llamaparse',
      LLAMAPARSE_API_KEY: llama.apiKey,
      LLAMAPARSE_BASE_URL: llama.url,
      // Webhooks finish the jobs; polling only covers a lost one.
      LLAMAPARSE_POLL_AFTER_SECONDS: '5',
      LLAMAPARSE_WEBHOOK_SIGNING_SECRET: SIGNING_SECRET,
      // The sampled gauges (queues, documents by status) follow the traffic within a second.
      METRICS_SAMPLE_INTERVAL_SECONDS: '1',
      QUEUE_POLLING_INTERVAL_SECONDS: '1',
      SHUTDOWN_TIMEOUT_MS: '5000',
    },
  });
  const config = loadConfig(env);
  const jwt = { secret: TEST_JWT_SECRET, audience: config.jwt.audience, issuer: config.jwt.issuer };
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const webhookUrl = `http://127.0.0.1:${webhookPort}`;
  const client: ApiTarget = { apiUrl, token: (sub = 'user-a', o = {}) => signUserToken(jwt, sub, o) };

  for (const service of SERVICES) {
    const own: Record<string, string> = service === 'api' ? { RATE_LIMIT_REQUESTS: String(REQUEST_BUDGET) } : {};
    procs.push(watch(service, spawnCli(service, { ...env, ...own })));
  }

  // Prometheus: the repository's configuration, pointed at these processes, scraping every second.
  const promConfig = parseYaml(await readFile(PROMETHEUS_CONFIG, 'utf8')) as Json;
  promConfig.global = { ...(promConfig.global ?? {}), scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
  // No Alertmanager here (an unreachable one would only be a log line).
  delete promConfig.alerting;
  const jobs = (promConfig.scrape_configs ?? []) as Json[];
  for (const service of SERVICES) {
    const job = jobs.find((j) => j.job_name === JOBS[service]);
    assert.ok(job, `${PROMETHEUS_CONFIG} has no scrape job ${JOBS[service]}`);
    assert.ok(Array.isArray(job.static_configs) && job.static_configs.length > 0, `${JOBS[service]}: static_configs`);
    for (const sc of job.static_configs as Json[]) sc.targets = (sc.targets as string[]).map(() => `127.0.0.1:${metricsPorts[service]}`);
    delete job.scrape_interval;
    delete job.scrape_timeout;
  }
  await writeFile(path.join(promDir, 'prometheus.yml'), stringifyYaml(promConfig));
  await cp(RULES, path.join(promDir, 'rules'), { recursive: true });
  const promPort = await freePort();
  const prom = `http://127.0.0.1:${promPort}`;
  prometheus = watch(
    'prometheus',
    spawn(bin, [`--config.file=${path.join(promDir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(promDir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const all = [...procs, prometheus];

  await waitFor('Prometheus to be ready', 20_000, () => ok(`${prom}/-/ready`), [prometheus]);
  await waitFor('the api and the webhook service to be ready', 40_000, async () => (await ok(`${apiUrl}/readyz`)) && (await ok(`${webhookUrl}/readyz`)), all);
  await waitFor('every /metrics endpoint', 20_000, async () => (await Promise.all(SERVICES.map((s) => ok(`http://127.0.0.1:${metricsPorts[s]}/metrics`)))).every(Boolean), all);

  /** Resolves once Prometheus has scraped every target successfully after this moment. */
  const scrapedAfter = async (what: string, since = Date.now()) =>
    waitFor(what, 20_000, async () => {
      const res = (await (await fetch(`${prom}/api/v1/targets?state=active`)).json()) as Json;
      const targets = res.data.activeTargets as Json[];
      return SERVICES.every((s) => {
        const t = targets.find((x) => x.labels?.job === JOBS[s]);
        return t && t.health === 'up' && Date.parse(t.lastScrape) > since;
      });
    }, all);

  const fixture = (name: string) => readFile(path.join('test/fixtures', name));
  const uploadOk = async (bytes: Buffer, name: string) => {
    const res = await upload(client, bytes, name);
    assert.equal(res.status, 202, await res.clone().text());
    return ((await res.json()) as { id: string }).id;
  };

  const startupSeconds = seconds(setupStarted);

  // ---- traffic ----
  // Two rounds with a scrape between them. Prometheus takes a series' first scrape as its start,
  // so whatever a counter counted before it was first scraped is no increase: the first round
  // creates the series, the second is what rate() and increase() show.
  const trafficStarted = Date.now();
  const documents = `${apiUrl}/v1/documents`;
  // Sniffs as a PDF, is accepted, and the parse refuses it (test/e2e/bad-input.test.ts).
  const corrupt = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.from('garbage that is not a PDF object table\n'.repeat(8)), randomBytes(64)]);
  const limited = { authorization: `Bearer ${client.token('user-limited')}` };
  let allowed = 0;
  /** Two 401s (no token, a bad one), a 429 once user-limited's budget is spent, a forged webhook delivery. */
  const refusals = async () => {
    assert.equal((await fetch(documents)).status, 401);
    assert.equal((await fetch(documents, { headers: { authorization: 'Bearer not.a.jwt' } })).status, 401);
    for (;;) {
      const res = await fetch(documents, { headers: limited });
      await res.body?.cancel();
      if (res.status === 429) break;
      assert.equal(res.status, 200);
      assert.ok(++allowed <= REQUEST_BUDGET, `more than ${REQUEST_BUDGET} requests a minute allowed`);
    }
    const forged = await fetch(`${webhookUrl}/v1/webhooks/llamaparse/${randomUUID()}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ event_id: randomUUID(), event_type: 'parse.success', data: { id: 'pjb-forged', job_id: 'pjb-forged' } }),
    });
    assert.equal(forged.status, 401);
  };
  const round = async (names: string[]) => {
    // LlamaCloud answers one upload 429 and one result fetch 503: the SDK retries both, and the
    // provider panels have rate-limited and failed requests to show.
    llama.failNext('upload', 429, 1);
    llama.failNext('result', 503, 1);
    const ids = await Promise.all(names.map(async (name) => uploadOk(await fixture(name), name)));
    const broken = await uploadOk(corrupt, 'broken.pdf');
    await refusals();
    for (const id of ids) {
      const doc = await waitForStatus(client, id, ['ready', 'failed'], { timeoutMs: 30_000 });
      assert.equal(doc.status, 'ready', JSON.stringify(doc.error));
    }
    assert.equal((await waitForStatus(client, broken, ['ready', 'failed'], { timeoutMs: 30_000 })).status, 'failed');
  };

  await round(['sample.md']);
  await scrapedAfter('a scrape after the first round');
  await round(['sample.pdf', 'sample.docx', 'sample.html', 'sample.txt']);
  const delivered = llama.deliveries.filter((d) => d.status === 200).length;
  assert.ok(delivered >= 5, `webhook deliveries accepted: ${delivered} (${JSON.stringify(llama.deliveries.map((d) => d.status))})`);

  // Scraped after all of it, and (when the sampler runs) sampled after it too.
  const trafficEnded = Date.now();
  const trafficSeconds = ((trafficEnded - trafficStarted) / 1000).toFixed(1);
  const waitStarted = performance.now();
  await scrapedAfter('a scrape after the traffic', trafficEnded + 1_000);
  // Not an assertion here: without a sample the sampled panels show it below.
  const sampled = await waitFor('a database sample after the traffic', 10_000, async () => finiteValues(await promQuery(prom, 'max(docpipe_metrics_sample_timestamp_seconds)')).some((t) => t * 1000 >= trafficEnded), all).then(
    () => 'the database was sampled after the traffic',
    (err: Error) => `no database sample after the traffic: ${err.message.split('\n')[0]}`,
  );
  const evaluateAt = Date.now() / 1000;
  /** Wide enough to hold all of the traffic at evaluateAt, and at least the 1m Grafana would use. */
  const window = `${Math.max(60, Math.ceil((Date.now() - trafficStarted) / 1000) + 15)}s`;
  return {
    prom,
    evaluateAt,
    window,
    notes: [`start-up ${startupSeconds} s, traffic ${trafficSeconds} s, scrape and sample ${seconds(waitStarted)} s; window ${window}; ${sampled}`],
  };
}

function defineTests({ prom, evaluateAt, window, notes }: Started): void {
  const queries = dashboardQueries();

  test('every query of every dashboard evaluates without error', async (t) => {
    for (const note of notes) t.diagnostic(note);
    assert.ok(queries.length > 40, `${queries.length} queries`);
    const errors: string[] = [];
    const empty: string[] = [];
    const zeros: string[] = [];
    for (const q of queries) {
      const result = await promQuery(prom, concrete(q.expr, window), evaluateAt);
      const name = `${q.file} "${q.panel}" ${q.refId}`;
      if (result.status !== 'success') errors.push(`${name}: ${result.errorType}: ${result.error}\n  ${q.expr}`);
      else if (finiteValues(result).length === 0) empty.push(name);
      else if (finiteValues(result).every((v) => v === 0)) zeros.push(name);
    }
    t.diagnostic(`${queries.length - errors.length - empty.length} of ${queries.length} queries returned data (${zeros.length} of them only zeros)`);
    for (const name of zeros) t.diagnostic(`only zeros: ${name}`);
    for (const name of empty) t.diagnostic(`no data: ${name}`);
    assert.deepEqual(errors, []);
  });

  test('what Prometheus scraped, against docs/METRICS.md (diagnostics only)', async (t) => {
    const res = (await (await fetch(`${prom}/api/v1/label/__name__/values`)).json()) as { data: string[] };
    const scraped = new Set(res.data.filter((n) => n.startsWith('docpipe_')).map((n) => n.replace(/_(bucket|count|sum)$/, '')));
    const catalogue = new Set([...readFileSync('docs/METRICS.md', 'utf8').matchAll(/`(docpipe_[a-z0-9_]+)(?![a-z0-9_*])/g)].map((m) => m[1]!.replace(/_(bucket|count|sum)$/, '')));
    assert.ok(scraped.size > 0);
    // Labelled series appear with their first event: a name missing here may just not have happened.
    t.diagnostic(`catalogue metrics not scraped: ${[...catalogue].filter((n) => !scraped.has(n)).join(', ') || '-'}`);
    t.diagnostic(`scraped metrics not in the catalogue: ${[...scraped].filter((n) => !catalogue.has(n) && !n.startsWith('docpipe_process_')).join(', ') || '-'}`);
  });

  test('the core panels have data', async () => {
    const missing: string[] = [];
    for (const [file, title] of CORE_PANELS) {
      const own = queries.filter((q) => q.file === file && q.panel === title);
      assert.ok(own.length > 0, `${file} has no panel "${title}"`);
      for (const q of own) {
        const result = await promQuery(prom, concrete(q.expr, window), evaluateAt);
        if (finiteValues(result).length === 0) missing.push(`${file} "${title}" ${q.refId}: ${JSON.stringify(result.data?.result ?? result.error)}\n  ${q.expr}`);
      }
    }
    assert.deepEqual(missing, []);
  });

  test('every rule group is loaded and every rule is healthy', async () => {
    const { groups: expected } = ruleFiles();
    assert.ok(expected.size > 0, `no rule groups in ${RULES}`);
    const total = [...expected.values()].reduce((n, rules) => n + rules.length, 0);
    // Rules are evaluated every second; each has a health once evaluated.
    const loaded = await waitFor('every rule to be evaluated once', 15_000, async () => {
      const res = (await (await fetch(`${prom}/api/v1/rules`)).json()) as Json;
      const groups = res.data.groups as Json[];
      const rules = groups.flatMap((g) => g.rules as Json[]);
      return rules.length === total && rules.every((r) => r.health !== 'unknown') ? groups : null;
    });
    assert.deepEqual(loaded.map((g) => g.name).sort(), [...expected.keys()].sort(), 'the groups loaded are the groups of the files');
    const unhealthy: string[] = [];
    for (const group of loaded) {
      assert.deepEqual((group.rules as Json[]).map((r) => r.name), expected.get(group.name), `${group.name}: its rules`);
      for (const rule of group.rules as Json[]) {
        if (rule.health !== 'ok' || rule.lastError) unhealthy.push(`${group.name}/${rule.name}: ${rule.health} ${rule.lastError ?? ''}`);
      }
    }
    assert.deepEqual(unhealthy, []);
  });

  test('every recording rule evaluates', async (t) => {
    const { records } = ruleFiles();
    const errors: string[] = [];
    const withData: string[] = [];
    for (const name of records) {
      const result = await promQuery(prom, name);
      if (result.status !== 'success') errors.push(`${name}: ${result.errorType}: ${result.error}`);
      else if (finiteValues(result).length > 0) withData.push(name);
    }
    t.diagnostic(`${withData.length} of ${records.length} recording rules have data; none: ${records.filter((r) => !withData.includes(r)).join(', ') || '-'}`);
    assert.deepEqual(errors, []);
  });
}

if (!prometheusBin) {
  test('a real Prometheus scrapes docpipe', { skip: required ? false : 'no prometheus binary (apt-get install prometheus); DOCPIPE_REQUIRE_OPS_TOOLS=1 makes this a failure' }, () => {
    assert.fail('DOCPIPE_REQUIRE_OPS_TOOLS=1 and no prometheus binary on PATH: apt-get install prometheus');
  });
} else {
  // A failed set-up is a failed test (and the after hook still stops and removes everything).
  const started = await setUp(prometheusBin).catch((err: unknown) => err as Error);
  if (started instanceof Error) {
    test('set-up: the services, the fake LlamaCloud and Prometheus start, and the traffic passes', () => {
      throw started;
    });
  } else {
    defineTests(started);
  }
}
