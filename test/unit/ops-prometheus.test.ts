// The monitoring files: ops/prometheus/prometheus.yml, the recording and alerting rules in
// ops/prometheus/rules/, their promtool unit tests in ops/prometheus/tests/, the Alertmanager
// configuration and the runbooks in docs/runbooks/.
//
// promtool (Prometheus) and amtool (Alertmanager) check the files as the real services would read
// them. Where a tool is not installed, its tests are skipped with a message saying so, unless
// DOCPIPE_REQUIRE_OPS_TOOLS=1 (CI sets it, and installs the Debian packages `prometheus` and
// `prometheus-alertmanager`): then a missing tool fails. The rest reads the files with `yaml`:
// every alert has a severity, a summary, a description and a runbook that exists, is tested firing
// and silent, aggregates only by docpipe's own labels, and uses only metrics of docs/METRICS.md.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { findTool, OPS_TOOLS_REQUIRED } from '../helpers/ops-tools.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PROMETHEUS_CONFIG = 'ops/prometheus/prometheus.yml';
const RULES_DIR = 'ops/prometheus/rules';
const TESTS_DIR = 'ops/prometheus/tests';
const ALERTMANAGER_CONFIG = 'ops/alertmanager/alertmanager.yml';
const RUNBOOKS_DIR = 'docs/runbooks';
const RUNBOOK_BASE = 'https://github.com/docpipe/docpipe/blob/main/';
const REQUIRE_TOOLS = OPS_TOOLS_REQUIRED;
/** Labels that Fly (app, region, host, instance) or a plain Prometheus (job, instance) set on every series. */
const SCRAPER_LABELS = ['app', 'region', 'host', 'instance', 'job'];

const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');
const yamlFiles = (dir: string) => readdirSync(path.join(ROOT, dir)).filter((f) => f.endsWith('.yml')).sort().map((f) => `${dir}/${f}`);

interface Rule {
  record?: string;
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleFile {
  groups: { name: string; rules: Rule[] }[];
}
interface ExpAlert {
  exp_labels?: Record<string, string>;
  exp_annotations?: Record<string, string>;
}
interface TestFile {
  rule_files: string[];
  tests: { name?: string; alert_rule_test?: { alertname: string; eval_time: string; exp_alerts?: ExpAlert[] | null }[] }[];
}

const ruleFiles = yamlFiles(RULES_DIR);
const testFiles = yamlFiles(TESTS_DIR);
const rules: (Rule & { file: string })[] = ruleFiles.flatMap((file) =>
  (parseYaml(read(file)) as RuleFile).groups.flatMap((g) => g.rules.map((r) => ({ ...r, file }))),
);
const alertRules = rules.filter((r) => r.alert);
const alertNames = [...new Set(alertRules.map((r) => r.alert!))].sort();
const recordNames = rules.filter((r) => r.record).map((r) => r.record!);

/** The tool, or: a skip with the reason (a failure under DOCPIPE_REQUIRE_OPS_TOOLS=1). */
function tool(t: TestContext, name: string, pkg: string): string | null {
  const found = findTool(name);
  if (found) return found;
  const message = `${name} is not installed (Debian package ${pkg}); DOCPIPE_REQUIRE_OPS_TOOLS=1 makes this a failure`;
  if (REQUIRE_TOOLS) assert.fail(`DOCPIPE_REQUIRE_OPS_TOOLS=1 but ${name} is not on PATH: install the Debian package ${pkg}`);
  t.skip(message);
  return null;
}

function run(bin: string, args: string[], cwd = ROOT): { status: number | null; output: string } {
  const result = spawnSync(bin, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  return { status: result.status, output: `${result.stdout ?? ''}${result.stderr ?? ''}${result.error ? String(result.error) : ''}` };
}

describe('promtool and amtool accept the files', () => {
  test(`promtool check config ${PROMETHEUS_CONFIG} (and the rule files it names)`, (t) => {
    const promtool = tool(t, 'promtool', 'prometheus');
    if (!promtool) return;
    const { status, output } = run(promtool, ['check', 'config', PROMETHEUS_CONFIG]);
    assert.equal(status, 0, output);
    for (const file of ruleFiles) assert.match(output, new RegExp(path.basename(file).replace('.', '\\.')), `the config loads ${file}`);
  });

  for (const file of ruleFiles) {
    test(`promtool check rules ${file}`, (t) => {
      const promtool = tool(t, 'promtool', 'prometheus');
      if (!promtool) return;
      const { status, output } = run(promtool, ['check', 'rules', file]);
      assert.equal(status, 0, output);
    });
  }

  for (const file of testFiles) {
    test(`promtool test rules ${file}`, (t) => {
      const promtool = tool(t, 'promtool', 'prometheus');
      if (!promtool) return;
      const { status, output } = run(promtool, ['test', 'rules', file]);
      assert.equal(status, 0, output);
    });
  }

  test(`amtool check-config ${ALERTMANAGER_CONFIG}`, (t) => {
    const amtool = tool(t, 'amtool', 'prometheus-alertmanager');
    if (!amtool) return;
    const { status, output } = run(amtool, ['check-config', ALERTMANAGER_CONFIG]);
    assert.equal(status, 0, output);
  });

  test('Alertmanager routes pages to the pager, tickets and the rest to e-mail', (t) => {
    const amtool = tool(t, 'amtool', 'prometheus-alertmanager');
    if (!amtool) return;
    const cases: [string[], string][] = [
      [['severity=page', 'alertname=DocpipeQueueAgeGrowing'], 'pager-webhook'],
      [['severity=ticket', 'alertname=DocpipeDeadLetters'], 'tickets-email'],
      [['alertname=SomethingWithoutSeverity'], 'tickets-email'],
    ];
    for (const [labels, receiver] of cases) {
      const { status, output } = run(amtool, ['config', 'routes', 'test', `--config.file=${ALERTMANAGER_CONFIG}`, `--verify.receivers=${receiver}`, ...labels]);
      assert.equal(status, 0, `${labels.join(' ')} -> ${receiver}: ${output}`);
    }
  });

  // The unit tests are only worth something if a changed rule fails them.
  test('promtool test rules fails when a threshold changes', (t) => {
    const promtool = tool(t, 'promtool', 'prometheus');
    if (!promtool) return;
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'docpipe-rules-'));
    after(() => rmSync(tmp, { recursive: true, force: true }));
    cpSync(path.join(ROOT, 'ops/prometheus'), path.join(tmp, 'prometheus'), { recursive: true });
    const alerts = path.join(tmp, 'prometheus/rules/alerts.yml');
    const original = readFileSync(alerts, 'utf8');
    const changed = original.replace('docpipe:document_processing_seconds:p95_rate5m > 10', 'docpipe:document_processing_seconds:p95_rate5m > 30');
    assert.notEqual(changed, original, 'the rule to change is in alerts.yml');
    writeFileSync(alerts, changed);
    const { status, output } = run(promtool, ['test', 'rules', 'prometheus/tests/pipeline.yml'], tmp);
    assert.notEqual(status, 0, output);
    assert.match(output, /DocpipeDocumentLatencyHigh/);
  });
});

describe('the scrape configuration', () => {
  const config = parseYaml(read(PROMETHEUS_CONFIG)) as {
    global: Record<string, string>;
    rule_files: string[];
    alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
    scrape_configs: { job_name: string; metrics_path?: string; static_configs: { targets: string[] }[] }[];
  };

  test('15 s scrape and evaluation, the rules beside it, an Alertmanager on 127.0.0.1:9093', () => {
    assert.equal(config.global.scrape_interval, '15s');
    assert.equal(config.global.evaluation_interval, '15s');
    assert.deepEqual(config.rule_files, ['rules/*.yml']);
    assert.deepEqual(config.alerting.alertmanagers.flatMap((a) => a.static_configs.flatMap((s) => s.targets)), ['127.0.0.1:9093']);
  });

  test('one job per service, one static target each, on its metrics port', () => {
    const jobs = Object.fromEntries(config.scrape_configs.map((j) => [j.job_name, j]));
    assert.deepEqual(Object.keys(jobs).sort(), ['docpipe-api', 'docpipe-webhook', 'docpipe-worker']);
    const ports = { 'docpipe-api': 9464, 'docpipe-worker': 9465, 'docpipe-webhook': 9466 };
    for (const [job, port] of Object.entries(ports)) {
      assert.equal(jobs[job]!.metrics_path, '/metrics', job);
      assert.deepEqual(jobs[job]!.static_configs, [{ targets: [`127.0.0.1:${port}`] }], job);
    }
  });
});

describe('the rules', () => {
  test('there are recording rules named docpipe:<what>:<op> and alerts', () => {
    assert.ok(recordNames.length > 10);
    assert.ok(alertNames.length > 15);
    for (const name of recordNames) assert.match(name, /^docpipe:[a-z0-9_]+:[a-z0-9_]+$/, name);
    assert.equal(new Set(recordNames).size, recordNames.length, 'each recording rule is defined once');
    // The names docs/METRICS.md gives the success bars.
    for (const name of ['docpipe:api_errors:ratio_rate5m', 'docpipe:documents_failed:ratio_rate1h', 'docpipe:api_availability:ratio_rate5m']) {
      assert.ok(recordNames.includes(name), name);
    }
  });

  test('every alert has a severity (page or ticket), a summary, a description and a runbook_url', () => {
    for (const rule of alertRules) {
      const where = `${rule.file}: ${rule.alert}`;
      assert.ok(['page', 'ticket'].includes(rule.labels?.severity ?? ''), `${where}: severity ${rule.labels?.severity}`);
      for (const key of ['summary', 'description', 'runbook_url']) assert.ok(rule.annotations?.[key]?.trim(), `${where}: annotations.${key}`);
      assert.equal(rule.annotations!.runbook_url, `${RUNBOOK_BASE}${RUNBOOKS_DIR}/${rule.alert}.md`, where);
    }
  });

  test("each runbook_url names a file of the repository", () => {
    for (const rule of alertRules) {
      const url = rule.annotations!.runbook_url!;
      assert.ok(url.startsWith(RUNBOOK_BASE), url);
      const file = url.slice(RUNBOOK_BASE.length);
      assert.ok(existsSync(path.join(ROOT, file)), `${rule.alert}: ${file} does not exist`);
    }
  });

  test('every alert is tested firing (with labels and annotations) and silent', () => {
    const firing = new Set<string>();
    const silent = new Set<string>();
    for (const file of testFiles) {
      const doc = parseYaml(read(file)) as TestFile;
      for (const testCase of doc.tests) {
        for (const check of testCase.alert_rule_test ?? []) {
          const expected = check.exp_alerts ?? [];
          if (expected.length === 0) {
            silent.add(check.alertname);
            continue;
          }
          firing.add(check.alertname);
          for (const alert of expected) {
            const where = `${file}: ${testCase.name} ${check.alertname} at ${check.eval_time}`;
            assert.ok(alert.exp_labels?.severity, `${where}: exp_labels.severity`);
            for (const key of ['summary', 'description', 'runbook_url']) assert.ok(alert.exp_annotations?.[key], `${where}: exp_annotations.${key}`);
          }
        }
      }
    }
    assert.deepEqual(alertNames.filter((n) => !firing.has(n)), [], 'alerts with no test case where they fire');
    assert.deepEqual(alertNames.filter((n) => !silent.has(n)), [], 'alerts with no test case where they stay silent');
    const unknown = [...firing, ...silent].filter((n) => !alertNames.includes(n));
    assert.deepEqual(unknown, [], 'test cases of alerts that do not exist');
  });

  test('the test files load every rule file', () => {
    for (const file of testFiles) {
      const doc = parseYaml(read(file)) as TestFile;
      assert.deepEqual(doc.rule_files, ['../rules/*.yml'], file);
    }
  });

  test('no expression groups or matches by a label the scraper sets (app, region, host, instance, job)', () => {
    const offending: string[] = [];
    for (const rule of rules) {
      for (const m of rule.expr.matchAll(/\b(by|on)\s*\(([^)]*)\)/g)) {
        const labels = m[2]!.split(',').map((l) => l.trim()).filter(Boolean);
        const bad = labels.filter((l) => SCRAPER_LABELS.includes(l));
        if (bad.length) offending.push(`${rule.file}: ${rule.record ?? rule.alert}: ${m[0]}`);
      }
    }
    assert.deepEqual(offending, []);
  });

  test('every docpipe_* metric the rules use is in docs/METRICS.md', () => {
    const catalogue = read('docs/METRICS.md');
    const missing = new Set<string>();
    for (const rule of rules) {
      for (const m of rule.expr.matchAll(/\bdocpipe_[a-z0-9_]+/g)) {
        const name = m[0].replace(/_(bucket|count|sum)$/, '');
        if (name.startsWith('docpipe_process_')) continue; // prom-client's defaults, with the docpipe_process_ prefix
        if (!catalogue.includes(`\`${name}\``)) missing.add(`${rule.record ?? rule.alert}: ${name}`);
      }
    }
    assert.deepEqual([...missing], []);
  });
});

describe('Alertmanager and the runbooks', () => {
  const am = parseYaml(read(ALERTMANAGER_CONFIG)) as {
    inhibit_rules: { source_matchers: string[]; target_matchers: string[]; equal?: string[] }[];
  };

  test('the inhibit rules name existing alerts, and never let a ticket silence a page', () => {
    const severity = new Map(alertRules.map((r) => [r.alert!, r.labels!.severity!]));
    const named = (matchers: string[]): string[] => {
      const m = matchers.map((s) => /^alertname(=~|=)"(.*)"$/.exec(s)).find(Boolean);
      assert.ok(m, `an alertname matcher in ${matchers.join(', ')}`);
      const pattern = m[1] === '=' ? new RegExp(`^${m[2]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) : new RegExp(`^(?:${m[2]})$`);
      const names = alertNames.filter((n) => pattern.test(n));
      if (m[1] === '=~') for (const part of m[2]!.split('|')) assert.ok(alertNames.includes(part), `${part} is an alert`);
      assert.ok(names.length > 0, `${m[0]} names an alert`);
      return names;
    };
    assert.ok(am.inhibit_rules.length >= 5);
    for (const rule of am.inhibit_rules) {
      const sources = named(rule.source_matchers);
      const targets = named(rule.target_matchers);
      for (const source of sources) {
        for (const target of targets) {
          assert.ok(!(severity.get(source) === 'ticket' && severity.get(target) === 'page'), `${source} (ticket) would silence ${target} (page)`);
        }
      }
    }
  });

  test('every alert has its runbook with the sections an operator needs, and the index lists it', () => {
    const index = read(`${RUNBOOKS_DIR}/README.md`);
    for (const name of alertNames) {
      const page = read(`${RUNBOOKS_DIR}/${name}.md`);
      assert.match(page, new RegExp(`^# ${name}\\n`), name);
      for (const section of ['## What it means', '## Who is hurt', '## Confirm it', '## Likely causes']) assert.ok(page.includes(section), `${name}: ${section}`);
      assert.match(page, /```promql\n/, `${name}: a PromQL query`);
      assert.match(page, /```sh\n/, `${name}: commands`);
      assert.ok(index.includes(`[${name}](${name}.md)`), `README.md lists ${name}`);
    }
    const pages = readdirSync(path.join(ROOT, RUNBOOKS_DIR)).filter((f) => f.endsWith('.md') && f !== 'README.md');
    assert.deepEqual(pages.map((f) => f.slice(0, -3)).filter((n) => !alertNames.includes(n)), [], 'runbooks of alerts that do not exist');
  });

  test('the runbooks name only CLI commands, scripts and files that exist', () => {
    const usage = spawnSync(path.join(ROOT, 'node_modules/.bin/node'), ['--import', 'tsx', 'src/cli.ts', '--help'], { cwd: ROOT, encoding: 'utf8' }).stdout;
    const commands = new Set([...usage.matchAll(/^ {2}([a-z][a-z-]+)\b/gm)].map((m) => m[1]));
    assert.ok(commands.has('status') && commands.has('doctor'), 'the CLI usage lists its commands');
    const problems: string[] = [];
    for (const file of readdirSync(path.join(ROOT, RUNBOOKS_DIR)).filter((f) => f.endsWith('.md'))) {
      const text = read(`${RUNBOOKS_DIR}/${file}`);
      for (const m of text.matchAll(/cli\.js ([a-z][a-z-]*)/g)) if (!commands.has(m[1]!)) problems.push(`${file}: cli.js ${m[1]}`);
      for (const m of text.matchAll(/(?<![\w./-])((?:scripts|src|docs|ops|test)\/[\w./-]+\.(?:sh|ts|md|yml))\b/g)) {
        if (!existsSync(path.join(ROOT, m[1]!))) problems.push(`${file}: ${m[1]}`);
      }
      for (const m of text.matchAll(/\]\(([^)#]+\.(?:md|yml))\)/g)) {
        if (!/^https?:/.test(m[1]!) && !existsSync(path.join(ROOT, RUNBOOKS_DIR, m[1]!))) problems.push(`${file}: link ${m[1]}`);
      }
      for (const m of text.matchAll(/fly\.(api|worker|webhook)\.toml/g)) if (!existsSync(path.join(ROOT, m[0]))) problems.push(`${file}: ${m[0]}`);
    }
    assert.deepEqual(problems, []);
  });

  test('the settings and error codes the runbooks name exist in the code', () => {
    const sources = (dir: string): string[] =>
      readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile() && /\.(ts|sql|yml)$/.test(e.name))
        .map((e) => readFileSync(path.join(e.parentPath, e.name), 'utf8'));
    const code = [...sources('src'), ...sources('.github/workflows')].join('\n');
    const missing = new Set<string>();
    for (const file of readdirSync(path.join(ROOT, RUNBOOKS_DIR)).filter((f) => f.endsWith('.md'))) {
      for (const m of read(`${RUNBOOKS_DIR}/${file}`).matchAll(/`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`/g)) {
        if (!code.includes(m[1]!)) missing.add(`${file}: ${m[1]}`);
      }
    }
    assert.deepEqual([...missing], []);
  });
});
