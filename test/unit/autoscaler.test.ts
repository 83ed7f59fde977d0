// The worker autoscaler (fly.autoscaler.toml, fly-autoscaler): the file is what fly-autoscaler
// and flyctl read (its image, its [env], no secret in it), its query selects this deployment's
// apps and stage queues, and its machine-count expression, parsed from the file and evaluated by
// test/helpers/expr.ts, gives the counts it should over a burst recorded from a real run
// (test/fixtures/queue-depths.json): at least one machine whenever a job waits, never more than
// the maximum, the minimum when idle, more machines for more jobs and for older ones.
// test/integration/autoscaler-query.test.ts checks that the query computes queueLoad.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  AGE_STEP_SECONDS,
  AUTOSCALER_TOML,
  autoscalerEnv,
  depth,
  JOBS_PER_MACHINE,
  MAX_MACHINES,
  MIN_MACHINES,
  oldestAge,
  queueLoad,
  readRecording,
  readToml,
  ROOT,
  STAGE_QUEUES,
} from '../helpers/autoscaler.ts';
import { compileExpr, ExprError } from '../helpers/expr.ts';

const toml = readToml(AUTOSCALER_TOML);
const env = autoscalerEnv();
const text = readFileSync(path.join(ROOT, AUTOSCALER_TOML), 'utf8');
const metric = env.FAS_PROMETHEUS_METRIC_NAME!;
const recording = readRecording();

/**
 * What is wrong with a machine-count expression over the recorded burst and a grid of depths and
 * ages; empty when nothing is. A function so that the test can show it catches a bad expression.
 */
function problemsOf(source: string): string[] {
  const machines = compileExpr(source, metric);
  const count = (d: number, age: number) => machines(queueLoad(d, age));
  const problems: string[] = [];
  const ages = [0, 0.2, 5, 9.99, 10, 15, 25, 60, 600, 86_400];
  const depths = [...Array.from({ length: 201 }, (_, i) => i), 250, 500, 1000, 10_000, 1_000_000];
  for (const age of ages) {
    let previous = -Infinity;
    for (const d of depths) {
      const n = count(d, age);
      const at = `depth ${d}, oldest ${age} s: ${n} machines`;
      if (!Number.isInteger(n)) problems.push(`${at}, not a whole number`);
      if (n > MAX_MACHINES) problems.push(`${at}, above the maximum ${MAX_MACHINES}`);
      if ((d > 0 || age > 0) && n < 1) problems.push(`${at}: jobs wait and no worker would run them`);
      if (n < MIN_MACHINES) problems.push(`${at}, below the minimum ${MIN_MACHINES}`);
      if (n < previous) problems.push(`${at}, fewer than for fewer jobs (${previous})`);
      // Never fewer than the jobs need, up to the maximum.
      if (n < Math.min(MAX_MACHINES, Math.ceil(d / JOBS_PER_MACHINE))) problems.push(`${at}, fewer than ${d} jobs need`);
      previous = n;
    }
  }
  for (const d of [0, 1, 20, 40]) {
    let previous = -Infinity;
    for (const age of ages) {
      const n = count(d, age);
      if (n < previous) problems.push(`depth ${d}, oldest ${age} s: ${n} machines, fewer than for a younger queue (${previous})`);
      previous = n;
    }
  }
  if (count(0, 0) !== MIN_MACHINES) problems.push(`idle: ${count(0, 0)} machines, not the minimum ${MIN_MACHINES}`);
  for (const p of recording.points) {
    const n = count(depth(p), oldestAge(p));
    const at = `recorded t=${p.t} s (depth ${depth(p)}, oldest ${oldestAge(p)} s): ${n} machines`;
    if (n < 1 || n < MIN_MACHINES) problems.push(`${at}, below the minimum`);
    if (n > MAX_MACHINES) problems.push(`${at}, above the maximum`);
    if (depth(p) === 0 && oldestAge(p) === 0 && n !== MIN_MACHINES) problems.push(`${at}, idle but not at the minimum`);
  }
  return problems;
}

describe('fly.autoscaler.toml', () => {
  test('is the fly-autoscaler image as an app of its own, with keys flyctl reads', () => {
    assert.equal(toml.build?.image, 'flyio/fly-autoscaler:0.3');
    assert.equal(typeof toml.app, 'string');
    assert.equal(typeof toml.primary_region, 'string');
    // A subset of the keys test/unit/deploy-config.test.ts accepts (flyctl ignores unknown keys
    // silently); fly-autoscaler serves nothing, so no service, checks or metrics.
    const allowed: Record<string, string[] | null> = { app: null, primary_region: null, build: ['image'], env: null, vm: ['size', 'memory'], restart: ['policy'] };
    for (const [key, value] of Object.entries(toml)) {
      assert.ok(key in allowed, `unexpected key \`${key}\``);
      const inner = allowed[key];
      if (inner) for (const table of [value].flat() as Record<string, unknown>[]) for (const k of Object.keys(table)) assert.ok(inner.includes(k), `unexpected key \`${key}.${k}\``);
    }
    assert.ok(!text.includes('[http_service]'));
  });

  test('[env] holds strings and no secrets; the header lists the secrets to set', () => {
    for (const [name, value] of Object.entries(env)) {
      assert.equal(typeof value, 'string', name);
      assert.ok(!name.startsWith('FLY_'), `${name}: FLY_ names are Fly's`);
      assert.ok(name.startsWith('FAS_'), `${name}: fly-autoscaler reads FAS_ variables`);
    }
    const header = text.split('\n').filter((l) => l.startsWith('#')).join('\n');
    for (const secret of ['FAS_API_TOKEN', 'FAS_PROMETHEUS_TOKEN']) {
      assert.ok(!(secret in env), `${secret} is a secret`);
      assert.match(header, new RegExp(`\\b${secret}\\b`), `the header lists ${secret}`);
    }
    assert.match(header, /--ha=false/);
    assert.match(env.FAS_PROMETHEUS_ADDRESS!, /^https:\/\/api\.fly\.io\/prometheus\/[a-z0-9-]+$/);
    assert.match(env.FAS_INTERVAL!, /^\d+s$/);
  });

  test('scales the worker app by created machines (a created count never goes below 1)', () => {
    assert.equal(env.FAS_APP_NAME, readToml('fly.worker.toml').app);
    assert.ok(env.FAS_CREATED_MACHINE_COUNT, 'FAS_CREATED_MACHINE_COUNT');
    for (const name of Object.keys(env)) assert.ok(!/^FAS_(MIN_|MAX_)?STARTED_MACHINE_COUNT$|^FAS_(MIN|MAX)_CREATED_MACHINE_COUNT$/.test(name), `${name}: one created count, no started count or min/max pair`);
    assert.match(metric, /^[a-z_][a-z0-9_]*$/);
  });

  test("the query selects this deployment's three apps, the stage queues and catalogued metrics", () => {
    const query = env.FAS_PROMETHEUS_QUERY!;
    assert.ok(!query.includes('\n'), 'one line (the TOML string continues lines with a backslash)');
    const apps = ['fly.api.toml', 'fly.worker.toml', 'fly.webhook.toml'].map((f) => readToml(f).app as string).sort();
    const appSelectors = [...query.matchAll(/\bapp=~"([^"]*)"/g)].map((m) => m[1]!.split('|').sort());
    const queueSelectors = [...query.matchAll(/\bqueue=~"([^"]*)"/g)].map((m) => m[1]!.split('|').sort());
    const metrics = [...query.matchAll(/\b(docpipe_[a-z_]+)\{/g)].map((m) => m[1]!);
    assert.deepEqual(metrics, ['docpipe_queue_jobs', 'docpipe_queue_oldest_waiting_seconds']);
    assert.deepEqual(appSelectors, [apps, apps], 'each metric is selected in exactly the apps of fly.api/worker/webhook.toml');
    assert.deepEqual(queueSelectors, [[...STAGE_QUEUES].sort(), [...STAGE_QUEUES].sort()]);
    const catalogue = readFileSync(path.join(ROOT, 'docs/METRICS.md'), 'utf8');
    for (const m of metrics) assert.ok(catalogue.includes(`\`${m}\``), `${m} is in docs/METRICS.md`);
  });
});

describe('the machine count', () => {
  const machines = compileExpr(env.FAS_CREATED_MACHINE_COUNT!, metric);
  const count = (d: number, age: number) => machines(queueLoad(d, age));

  test('the recording is a real burst: hundreds of jobs, oldest waits past one age step, and a drain to idle', () => {
    assert.ok(recording.points.length >= 20 && recording.points.length <= 300, `${recording.points.length} points`);
    assert.ok(recording.burst.accepted >= 200, `${recording.burst.accepted} documents accepted`);
    assert.match(recording.recordedWith, /scripts\/record-queue-depths\.ts/);
    assert.ok(Math.max(...recording.points.map(depth)) > JOBS_PER_MACHINE * MAX_MACHINES);
    assert.ok(Math.max(...recording.points.map(oldestAge)) > AGE_STEP_SECONDS);
    assert.equal(depth(recording.points[0]!), 0, 'starts idle');
    assert.equal(depth(recording.points.at(-1)!), 0, 'ends idle');
  });

  test('never 0 while jobs wait, never above the maximum, the minimum when idle, monotone in depth and age', () => {
    assert.deepEqual(problemsOf(env.FAS_CREATED_MACHINE_COUNT!), []);
  });

  test('the counts at points of the recorded burst', () => {
    const at = (t: number) => {
      const p = recording.points.find((q) => q.t === t);
      assert.ok(p, `a point at t=${t}`);
      return count(depth(p), oldestAge(p));
    };
    const firstBusy = recording.points.find((p) => depth(p) > 0)!;
    const firstFull = recording.points.find((p) => depth(p) > JOBS_PER_MACHINE * (MAX_MACHINES - 1))!;
    assert.equal(at(0), 1, 'idle before the burst');
    // The burst's first read: 14 jobs (parse 7 waiting and 4 running, embed 3 running), 1 machine.
    assert.equal(depth(firstBusy), 14);
    assert.equal(count(depth(firstBusy), oldestAge(firstBusy)), 1);
    // One read later, 56 jobs: the maximum.
    assert.equal(depth(firstFull), 56);
    assert.equal(count(depth(firstFull), oldestAge(firstFull)), 3);
    assert.ok(firstFull.t - recording.burst.startedAt <= 2, 'the maximum within 2 s of the burst (on the recording; Fly adds its sampling, scrape and interval)');
    // The drain's last busy read (43 jobs) still asks for 3; the first idle read after it, 1.
    const lastBusy = recording.points.findLast((p) => depth(p) > 0)!;
    assert.equal(depth(lastBusy), 43);
    assert.equal(count(depth(lastBusy), oldestAge(lastBusy)), 3);
    assert.equal(count(depth(recording.points.at(-1)!), oldestAge(recording.points.at(-1)!)), 1);
  });

  test('the counts between: one machine per 16 jobs, one more per full 10 s of the oldest wait', () => {
    const cases: [depth: number, age: number, machines: number][] = [
      [0, 0, 1],
      [1, 0, 1],
      [16, 0, 1],
      [17, 0, 2],
      [32, 9.9, 2],
      [33, 0, 3],
      [5000, 0, 3],
      // A few slow jobs: the depth asks for 1, their age for more.
      [8, 9.9, 1],
      [8, 10, 2],
      [8, 25, 3],
      // Nothing waiting but an old job about to be taken (the gauges read at different moments).
      [0, 12, 1],
      [0, 20, 2],
    ];
    for (const [d, age, n] of cases) assert.equal(count(d, age), n, `depth ${d}, oldest ${age} s`);
  });

  test('the checks catch a bad expression', () => {
    assert.ok(problemsOf('min(3, ceil(queue_load / 16))').some((p) => /no worker would run them|below the minimum/.test(p)), 'no floor: 0 machines when idle');
    assert.ok(problemsOf('max(1, ceil(queue_load / 16))').some((p) => /above the maximum/.test(p)), 'no ceiling');
    assert.ok(problemsOf('max(1, min(3, queue_load / 16))').some((p) => /not a whole number/.test(p)), 'no ceil');
    assert.ok(problemsOf('max(1, min(3, ceil(16 / queue_load)))').some((p) => /fewer than for fewer jobs/.test(p)), 'not monotone');
  });

  test('the evaluator refuses what it cannot check', () => {
    const refused = [
      'ceil(queue_load / 16) + 1',
      'max(1, min(3, ceil(queue_load * 0.0625)))',
      'queue_load > 16 ? 2 : 1',
      'max(1, min(3, round(queue_load / 16)))',
      'max(1, min(3, ceil(queue_depth / 16)))',
      'max(1, min(3, ceil(queue_load / 1e1)))',
      'max(1, min(3, ceil(queue_load / 16))',
      'max(1)',
      'ceil(queue_load, 2)',
      '-queue_load',
      'let x = 16; ceil(queue_load / x)',
      '',
    ];
    for (const source of refused) assert.throws(() => compileExpr(source, metric), ExprError, source);
    // And evaluates what it reads as expr-lang does.
    assert.equal(compileExpr('max(1, min(3, ceil(queue_load / 16)))', metric)(17), 2);
    assert.equal(compileExpr('min(20, ceil(queue_load / 50))', metric)(101), 3);
    assert.equal(compileExpr('(queue_load) / 4 / 2', metric)(16), 2);
  });
});
