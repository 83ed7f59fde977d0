// The metric conventions (docs/METRICS.md): names, units, suffixes, labels Fly.io leaves alone,
// a declared closed set of values for every label, the catalogue in the docs matching the
// registry, and every failure code of the pipeline countable under its own name.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FAILURE_CODES, LABEL_VALUES, registry } from '../../src/observability/metrics.ts';

const FLY_LABELS = ['app', 'region', 'host', 'instance'];
/** Labels a Prometheus server adds on scrape (job) or uses itself (le, quantile). */
const RESERVED = [...FLY_LABELS, 'job', 'le', 'quantile'];

type Registered = { name: string; labelNames: string[]; get(): Promise<{ type: string }> };
const ours = () => (registry.getMetricsAsArray() as unknown as Registered[]).filter((m) => m.name.startsWith('docpipe_') && !m.name.startsWith('docpipe_process_'));

test('names follow Prometheus conventions: docpipe_ prefix, base units, counters end in _total, nothing else does', async () => {
  const metrics = ours();
  assert.ok(metrics.length >= 30, `expected the catalogue's metrics, found ${metrics.length}`);
  for (const metric of metrics) {
    const { type } = await metric.get();
    assert.match(metric.name, /^docpipe_[a-z0-9_]+$/, metric.name);
    if (type === 'counter') assert.match(metric.name, /_total$/, `${metric.name}: a counter ends in _total`);
    else assert.doesNotMatch(metric.name, /_total$/, `${metric.name}: only counters end in _total`);
    if (type === 'histogram') assert.match(metric.name, /_(seconds|bytes)$/, `${metric.name}: a histogram is in a base unit`);
    assert.doesNotMatch(metric.name, /_(milliseconds|ms|minutes|hours|kilobytes|megabytes|cents|percent)(_|$)/, `${metric.name}: base units only`);
  }
});

test('every label of every metric is declared with a closed set of values, and none is one Fly.io overwrites', async () => {
  for (const metric of ours()) {
    const declared = LABEL_VALUES[metric.name];
    assert.ok(declared, `${metric.name} has no LABEL_VALUES entry`);
    assert.deepEqual([...metric.labelNames].sort(), Object.keys(declared).sort(), `${metric.name}: labels and declared sets differ`);
    for (const [label, values] of Object.entries(declared)) {
      assert.ok(!RESERVED.includes(label), `${metric.name} uses the label ${label}, which Fly.io or Prometheus overwrites`);
      if (Array.isArray(values)) {
        assert.ok(values.length > 0 && values.length <= 100, `${metric.name}{${label}}: ${values.length} values`);
        assert.equal(new Set(values).size, values.length, `${metric.name}{${label}}: duplicate values`);
      } else {
        assert.equal(typeof values, 'symbol', `${metric.name}{${label}}: a list of values or a marker`);
      }
    }
  }
});

test('docs/METRICS.md lists every metric, and every docpipe_ name it lists exists', () => {
  const doc = readFileSync('docs/METRICS.md', 'utf8');
  const names = new Set(ours().map((m) => m.name));
  for (const name of names) assert.ok(doc.includes('`' + name + '`'), `docs/METRICS.md does not list ${name}`);
  const listed = new Set([...doc.matchAll(/`(docpipe_[a-z0-9_]+)`/g)].map((m) => m[1]!).filter((n) => !n.startsWith('docpipe_process_')));
  for (const name of listed) assert.ok(names.has(name), `docs/METRICS.md lists ${name}, which the registry does not have`);
});

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const file = path.join(dir, entry);
    return statSync(file).isDirectory() ? sourceFiles(file) : file.endsWith('.ts') ? [file] : [];
  });
}

test('every failure code the pipeline and its providers raise is a value of the code label (not folded into other)', () => {
  // Codes a document can fail with: the first argument of an error class, or a `code:` in a
  // failure the pipeline records.
  const raised = new Set<string>();
  for (const file of [...sourceFiles('src/providers'), ...sourceFiles('src/documents')]) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/new (?:ProviderError|PermanentError|StageError|\w*Failure)\(\s*'([A-Z][A-Z0-9_]+)'/g)) raised.add(m[1]!);
    for (const m of text.matchAll(/\bcode: '([A-Z][A-Z0-9_]+)'/g)) raised.add(m[1]!);
  }
  assert.ok(raised.size >= 20, `found ${raised.size} codes: the scan is broken`);
  const known = new Set<string>(FAILURE_CODES);
  const missing = [...raised].filter((c) => !known.has(c)).sort();
  assert.deepEqual(missing, [], `add these to FAILURE_CODES in src/observability/metrics.ts: ${missing.join(', ')}`);
});
