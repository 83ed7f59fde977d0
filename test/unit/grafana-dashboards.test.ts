// The Grafana dashboards in ops/grafana/dashboards/ import anywhere and query only what exists:
// one Prometheus datasource input (DS_PROMETHEUS) used by every panel and query; every docpipe
// selector filtered by the $app and $region variables (Fly's labels; `.*` matches where they do
// not exist); no grouping by the labels Fly overwrites; the sampled gauges aggregated with max;
// every metric named in docs/METRICS.md or a recording rule of ops/prometheus/rules/. Whether
// each query runs, and returns data, is test/integration/prometheus.test.ts (a real Prometheus).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';

type Json = Record<string, any>;

const DIR = 'ops/grafana/dashboards';
const RULES_DIR = 'ops/prometheus/rules';
const EXPECTED = ['docpipe-overview.json', 'docpipe-pipeline.json', 'docpipe-providers.json', 'docpipe-security.json'];
const DATASOURCE = '${DS_PROMETHEUS}';
/** Labels Fly sets on every series (overwriting ours): never a grouping. */
const FLY_LABELS = ['instance', 'app', 'region', 'host'];
/** Exported by the one process that holds the sampling lease: aggregated with max. */
const SAMPLED = /^docpipe_(queue_\w+|documents|db_connections|db_max_connections)$/;
/** A docpipe metric or recording rule, and the label matchers right after it if any. */
const SELECTOR = /(?<![\w:])(docpipe[_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?/g;

/** Metric names from the catalogue's code spans; `docpipe_process_*` names a family. */
function catalogue(): { names: Set<string>; prefixes: string[] } {
  const text = readFileSync('docs/METRICS.md', 'utf8');
  const names = new Set<string>();
  const prefixes: string[] = [];
  for (const [, name] of text.matchAll(/`(docpipe_[a-z0-9_]+\*?)/g)) {
    if (name!.endsWith('*')) prefixes.push(name!.slice(0, -1));
    else names.add(baseName(name!));
  }
  return { names, prefixes };
}

/** Recording rules defined in ops/prometheus/rules/*.yml (none while the directory is absent). */
function recordingRules(): Set<string> {
  const names = new Set<string>();
  if (!existsSync(RULES_DIR)) return names;
  for (const file of readdirSync(RULES_DIR).filter((f) => /\.ya?ml$/.test(f))) {
    const doc = parseYaml(readFileSync(path.join(RULES_DIR, file), 'utf8')) as { groups?: { rules?: { record?: string }[] }[] } | null;
    for (const group of doc?.groups ?? []) for (const rule of group.rules ?? []) if (rule.record) names.add(rule.record);
  }
  return names;
}

const baseName = (name: string) => name.replace(/_(bucket|count|sum)$/, '');

/** Every panel, those inside collapsed rows included. */
function allPanels(dashboard: Json): Json[] {
  return (dashboard.panels as Json[]).flatMap((p) => [p, ...((p.panels as Json[] | undefined) ?? [])]);
}

function targetsOf(dashboard: Json): { panel: string; expr: unknown; target: Json }[] {
  return allPanels(dashboard).flatMap((p) => ((p.targets as Json[] | undefined) ?? []).map((target) => ({ panel: `${p.id} "${p.title}"`, expr: target.expr, target })));
}

test('the four dashboards are there, and nothing else', () => {
  assert.deepEqual(readdirSync(DIR).sort(), EXPECTED);
});

const { names: CATALOGUE, prefixes: FAMILIES } = catalogue();
const RULES = recordingRules();
const uids = new Map<string, string>();

test('the catalogue read from docs/METRICS.md is the catalogue', () => {
  for (const name of ['docpipe_document_processing_seconds', 'docpipe_queue_jobs', 'docpipe_build_info', 'docpipe_provider_estimated_cost_dollars_total']) assert.ok(CATALOGUE.has(name), name);
  assert.ok(FAMILIES.includes('docpipe_process_'), FAMILIES.join(', '));
});

for (const file of EXPECTED) {
  describe(file, () => {
    const dashboard = JSON.parse(readFileSync(path.join(DIR, file), 'utf8')) as Json;
    const targets = targetsOf(dashboard);

    test('parses as a dashboard with a uid, a title and a current schema', () => {
      assert.equal(typeof dashboard.title, 'string');
      assert.match(dashboard.uid, /^docpipe-[a-z]+$/);
      assert.equal(`${dashboard.uid}.json`, file);
      assert.ok(!uids.has(dashboard.uid), `uid ${dashboard.uid} is also ${uids.get(dashboard.uid)}'s`);
      uids.set(dashboard.uid, file);
      assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
      assert.ok(targets.length > 0);
    });

    test('__inputs declares the Prometheus datasource DS_PROMETHEUS', () => {
      const inputs = dashboard.__inputs as Json[];
      assert.ok(Array.isArray(inputs));
      const ds = inputs.find((i) => i.name === 'DS_PROMETHEUS');
      assert.ok(ds, JSON.stringify(inputs));
      assert.equal(ds.type, 'datasource');
      assert.equal(ds.pluginId, 'prometheus');
    });

    test('variables app and region from docpipe_build_info, multi, with All as .*', () => {
      const vars = dashboard.templating.list as Json[];
      for (const name of ['app', 'region']) {
        const v = vars.find((x) => x.name === name);
        assert.ok(v, `variable ${name}`);
        assert.equal(v.type, 'query');
        assert.equal(v.datasource?.uid, DATASOURCE, `${name}: datasource`);
        const query = typeof v.query === 'string' ? v.query : v.query?.query;
        assert.match(query, new RegExp(`^label_values\\(docpipe_build_info(\\{[^}]*\\})?, ${name}\\)$`), `${name}: ${query}`);
        assert.equal(v.includeAll, true, `${name}: includeAll`);
        assert.equal(v.allValue, '.*', `${name}: allValue`);
        assert.equal(v.multi, true, `${name}: multi`);
      }
    });

    test('panel ids are unique; every panel has a gridPos inside the 24 columns', () => {
      const ids = new Set<number>();
      for (const p of allPanels(dashboard)) {
        assert.equal(typeof p.id, 'number', `${p.title}: id`);
        assert.ok(!ids.has(p.id), `panel id ${p.id} twice`);
        ids.add(p.id);
        const g = p.gridPos as Json | undefined;
        assert.ok(g, `${p.id} "${p.title}": gridPos`);
        for (const k of ['h', 'w', 'x', 'y']) assert.equal(typeof g[k], 'number', `${p.id} "${p.title}": gridPos.${k}`);
        assert.ok(g.x >= 0 && g.w > 0 && g.x + g.w <= 24, `${p.id} "${p.title}": gridPos ${JSON.stringify(g)}`);
      }
    });

    test('every panel and every target uses ${DS_PROMETHEUS}; every target has an expr; every panel a unit', () => {
      for (const p of allPanels(dashboard)) {
        if (p.type === 'row') {
          assert.ok(!p.targets?.length, `row ${p.id} has no queries`);
          continue;
        }
        assert.equal(p.datasource?.uid, DATASOURCE, `${p.id} "${p.title}": datasource`);
        assert.equal(p.datasource?.type, 'prometheus', `${p.id} "${p.title}": datasource type`);
        assert.ok(Array.isArray(p.targets) && p.targets.length > 0, `${p.id} "${p.title}": targets`);
        assert.equal(typeof p.fieldConfig?.defaults?.unit, 'string', `${p.id} "${p.title}": unit`);
      }
      for (const { panel, expr, target } of targets) {
        assert.equal(target.datasource?.uid, DATASOURCE, `${panel} ${target.refId}: datasource`);
        assert.ok(typeof expr === 'string' && expr.trim() !== '', `${panel} ${target.refId}: expr`);
      }
    });

    test('every docpipe selector filters by $app and $region', () => {
      const missing: string[] = [];
      for (const { panel, expr } of targets) {
        const selectors = [...(expr as string).matchAll(SELECTOR)];
        assert.ok(selectors.length > 0, `${panel}: no docpipe metric in ${expr}`);
        for (const [whole, , matchers] of selectors) {
          if (!matchers || !matchers.includes('app=~"$app"') || !matchers.includes('region=~"$region"')) missing.push(`${panel}: ${whole}`);
        }
      }
      assert.deepEqual(missing, []);
    });

    test('no grouping by instance, app, region or host', () => {
      const bad: string[] = [];
      for (const { panel, expr } of targets) {
        for (const [clause, labels] of (expr as string).matchAll(/\bby\s*\(([^)]*)\)/g)) {
          if (labels!.split(',').some((l) => FLY_LABELS.includes(l.trim()))) bad.push(`${panel}: ${clause}`);
        }
      }
      assert.deepEqual(bad, []);
    });

    test('sampled gauges are aggregated with max', () => {
      const bad: string[] = [];
      for (const { panel, expr } of targets) {
        for (const match of (expr as string).matchAll(SELECTOR)) {
          if (!SAMPLED.test(match[1]!)) continue;
          const before = (expr as string).slice(0, match.index);
          if (!/\bmax(\s+by\s*\([^)]*\))?\s*\(\s*$/.test(before)) bad.push(`${panel}: ${match[1]}`);
        }
      }
      assert.deepEqual(bad, []);
    });

    test('every metric is in docs/METRICS.md or is a recording rule of ops/prometheus/rules/', () => {
      const unknown = new Set<string>();
      for (const { panel, expr } of targets) {
        for (const [, name] of (expr as string).matchAll(SELECTOR)) {
          if (name!.includes(':')) {
            if (!RULES.has(name!)) unknown.add(`${panel}: ${name} (no such recording rule)`);
            continue;
          }
          const base = baseName(name!);
          if (!CATALOGUE.has(base) && !FAMILIES.some((prefix) => base.startsWith(prefix))) unknown.add(`${panel}: ${name}`);
        }
      }
      assert.deepEqual([...unknown], []);
    });
  });
}
