// The worker autoscaler's Prometheus query (FAS_PROMETHEUS_QUERY in fly.autoscaler.toml), run by
// promtool (Debian's prometheus, as CI installs it) on series labelled as Fly's managed
// Prometheus stores them (app, region, host, instance on every series): the burst recorded in
// test/fixtures/queue-depths.json replayed point by point must give queueLoad of each point
// (test/helpers/autoscaler.ts, which test/unit/autoscaler.test.ts feeds to the expression), and
// the shapes Fly produces must not change the answer: the sampling lease changing hands (two
// exporters for a moment), another deployment in the same organisation, no series at all,
// scheduled jobs and non-stage queues.
//
// The test file is written from the toml at each run (the query is never copied by hand) and
// run with `promtool test rules`. Fly's Prometheus is VictoriaMetrics, whose MetricsQL accepts
// this PromQL as Prometheus does. Without promtool the test is skipped, unless
// DOCPIPE_REQUIRE_OPS_TOOLS=1 (CI): then it fails.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { stringify as stringifyYaml } from 'yaml';
import { autoscalerEnv, depth, oldestAge, queueLoad, readRecording, readToml, type QueuePoint } from '../helpers/autoscaler.ts';
import { findTool, OPS_TOOLS_REQUIRED } from '../helpers/ops-tools.ts';

const STEP_SECONDS = 15;
const STATES = ['waiting', 'scheduled', 'active'] as const;
const query = autoscalerEnv().FAS_PROMETHEUS_QUERY!;
const [apiApp, workerApp] = [readToml('fly.api.toml').app as string, readToml('fly.worker.toml').app as string];
const tmp = mkdtempSync(path.join(os.tmpdir(), 'docpipe-autoscaler-query-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Fly's labels for a machine of `app`. */
const machine = (app: string, region: string, host: string, instance: string) => `app="${app}", region="${region}", host="${host}", instance="${instance}"`;
const API_IAD = machine(apiApp, 'iad', 'a1b2', '148e4d55b36278');
const WORKER_IAD = machine(workerApp, 'iad', 'g7h8', 'e2865013c94d86');
const STAGING_API = machine('docpipe-staging-api', 'iad', 'c3d4', '3d8d9e12a45e89');

const jobs = (queue: string, state: string, labels: string, values: string) => ({ series: `docpipe_queue_jobs{queue="${queue}", state="${state}", ${labels}}`, values });
const oldest = (queue: string, labels: string, values: string) => ({ series: `docpipe_queue_oldest_waiting_seconds{queue="${queue}", ${labels}}`, values });
const expect = (evalTime: string, value: number | null) => ({
  expr: query,
  eval_time: evalTime,
  exp_samples: value === null ? [] : [{ labels: '{}', value }],
});

function promtool(t: TestContext): string | null {
  const found = findTool('promtool');
  if (found) return found;
  if (OPS_TOOLS_REQUIRED) assert.fail('DOCPIPE_REQUIRE_OPS_TOOLS=1 but promtool is not on PATH: install the Debian package prometheus');
  t.skip('promtool is not installed (Debian package prometheus); DOCPIPE_REQUIRE_OPS_TOOLS=1 makes this a failure');
  return null;
}

function runTests(bin: string, name: string, tests: unknown[]): { status: number | null; output: string } {
  const file = path.join(tmp, `${name}.yml`);
  writeFileSync(file, stringifyYaml({ rule_files: [], evaluation_interval: `${STEP_SECONDS}s`, tests }, { lineWidth: 0 }));
  const result = spawnSync(bin, ['test', 'rules', file], { encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, output: `${result.stdout ?? ''}${result.stderr ?? ''}${result.error ? String(result.error) : ''}` };
}

/** The recorded burst as the api machine holding the lease exports it, one read per scrape. */
function replay(points: QueuePoint[], queues: string[], exp: (p: QueuePoint) => number) {
  const values = (f: (p: QueuePoint) => number) => points.map(f).join(' ');
  return {
    name: 'the recorded burst, one read per scrape',
    interval: `${STEP_SECONDS}s`,
    input_series: queues.flatMap((q) => [
      ...STATES.map((s, i) => jobs(q, s, API_IAD, values((p) => p.jobs[q]?.[i] ?? 0))),
      oldest(q, API_IAD, values((p) => p.oldest[q] ?? 0)),
    ]),
    promql_expr_test: points.map((p, i) => expect(`${i * STEP_SECONDS}s`, exp(p))),
  };
}

const FLY_SHAPES = [
  {
    // The lease passes from an api machine to a worker machine: for a moment both export, the
    // old leader its last numbers. max by (queue, state), not sum: 34 parse jobs waiting, not 64.
    name: 'a lease changing hands: the larger reading, not the sum',
    interval: '1m',
    input_series: [
      jobs('docpipe-parse', 'waiting', API_IAD, '30x5'),
      jobs('docpipe-parse', 'active', API_IAD, '4x5'),
      jobs('docpipe-parse', 'scheduled', API_IAD, '50x5'),
      jobs('docpipe-embed', 'waiting', API_IAD, '10x5'),
      jobs('docpipe-embed', 'active', API_IAD, '4x5'),
      oldest('docpipe-parse', API_IAD, '12x5'),
      oldest('docpipe-embed', API_IAD, '3x5'),
      jobs('docpipe-parse', 'waiting', WORKER_IAD, '34x5'),
      jobs('docpipe-parse', 'active', WORKER_IAD, '4x5'),
      jobs('docpipe-parse', 'scheduled', WORKER_IAD, '50x5'),
      jobs('docpipe-parse-result', 'waiting', WORKER_IAD, '3x5'),
      jobs('docpipe-embed', 'waiting', WORKER_IAD, '12x5'),
      jobs('docpipe-embed', 'active', WORKER_IAD, '4x5'),
      oldest('docpipe-parse', WORKER_IAD, '14x5'),
      oldest('docpipe-embed', WORKER_IAD, '3x5'),
      // Not stage queues: the housekeeping and clean-up jobs need no extra machine.
      jobs('docpipe-maintenance', 'waiting', WORKER_IAD, '5x5'),
      jobs('docpipe-purge', 'waiting', WORKER_IAD, '7x5'),
      oldest('docpipe-maintenance', WORKER_IAD, '900x5'),
      oldest('docpipe-purge', WORKER_IAD, '45x5'),
    ],
    // 34 + 4 + 3 + 12 + 4 = 57 jobs; the oldest waited 14 s: one step, 16 more.
    promql_expr_test: [expect('2m', 57 + 16)],
  },
  {
    name: "another deployment's apps in the same organisation, and no series of ours: 0",
    interval: '1m',
    input_series: [jobs('docpipe-parse', 'waiting', STAGING_API, '500x5'), oldest('docpipe-parse', STAGING_API, '90x5')],
    promql_expr_test: [expect('2m', 0)],
  },
  {
    // The sampler cleared its gauges (sampling failed): both halves are 0, one sample, not none.
    name: 'gauges gone stale: 0',
    interval: '1m',
    input_series: [jobs('docpipe-parse', 'waiting', API_IAD, '40 40 stale'), oldest('docpipe-parse', API_IAD, '20 20 stale')],
    promql_expr_test: [expect('1m', 40 + 32), expect('3m', 0)],
  },
  {
    name: 'jobs without an age series, and an age without jobs',
    interval: '1m',
    input_series: [
      jobs('docpipe-parse', 'waiting', API_IAD, '5 5 _ _ _ _ _ _ _'),
      jobs('docpipe-parse', 'active', API_IAD, '4 4 _ _ _ _ _ _ _'),
      oldest('docpipe-embed', WORKER_IAD, '_ _ _ _ _ _ _ 25 25'),
    ],
    // At 1m only jobs (9); at 8m the jobs' last samples are past the 5 m look-back: age 25 s alone.
    promql_expr_test: [expect('1m', 9), expect('8m', 32)],
  },
];

test('the query gives each recorded point its queue load, on series labelled as Fly stores them', (t) => {
  const bin = promtool(t);
  if (!bin) return;
  const { points, queues } = readRecording();
  const { status, output } = runTests(bin, 'replay', [replay(points, queues, (p) => queueLoad(depth(p), oldestAge(p)))]);
  assert.equal(status, 0, output);
  assert.match(output, /SUCCESS/);
});

test('the query under Fly shapes: a lease changing hands, other deployments, stale and missing series', (t) => {
  const bin = promtool(t);
  if (!bin) return;
  const { status, output } = runTests(bin, 'fly-shapes', FLY_SHAPES);
  assert.equal(status, 0, output);
});

test('a wrong expectation fails (the harness can fail)', (t) => {
  const bin = promtool(t);
  if (!bin) return;
  const { points, queues } = readRecording();
  const busiest = points.reduce((a, p) => (depth(p) > depth(a) ? p : a));
  const { status, output } = runTests(bin, 'wrong', [replay(points, queues, (p) => queueLoad(depth(p), oldestAge(p)) + (p === busiest ? 1 : 0))]);
  assert.notEqual(status, 0, output);
  // Only the altered point fails.
  assert.equal(output.match(/\bexp: /g)?.length, 1, output);
});
