// The GitHub workflows: each validated against GitHub's workflow schema by action-validator
// (node_modules/.bin, the real binary), and read for what the schema cannot know: CI runs
// .ci/run; deploy runs after CI, deploys the api (which migrates) before the webhook and the
// worker, smoke-tests, rolls back on failure; and every file, script and npm script the
// workflows name exists.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const VALIDATOR = path.join(ROOT, 'node_modules/.bin/action-validator');
const WORKFLOWS = ['.github/workflows/ci.yml', '.github/workflows/deploy.yml'];
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

function validate(file: string): { status: number | null; output: string } {
  // The binary is a node script (#!/usr/bin/env node): put this test's Node first on PATH.
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}` };
  const result = spawnSync(VALIDATOR, [file], { cwd: ROOT, env, encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('workflow files', () => {
  for (const file of WORKFLOWS) {
    test(`${file} is a valid workflow (action-validator)`, () => {
      const { status, output } = validate(file);
      assert.equal(status, 0, output);
    });
  }

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'docpipe-workflows-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test('action-validator rejects a broken workflow (a misspelt key, a missing runs-on)', () => {
    const broken = path.join(tmp, 'broken.yml');
    writeFileSync(broken, read('.github/workflows/ci.yml').replace('runs-on: ubuntu-latest', 'runs-onn: ubuntu-latest'));
    const { status, output } = validate(broken);
    assert.notEqual(status, 0);
    assert.match(output, /runs-onn/);
  });

  test('action-validator rejects an unknown trigger', () => {
    const broken = path.join(tmp, 'trigger.yml');
    writeFileSync(broken, read('.github/workflows/deploy.yml').replace('workflow_run:', 'workflow_runs:'));
    assert.notEqual(validate(broken).status, 0);
  });
});

describe('what the workflows do', () => {
  const ci = read('.github/workflows/ci.yml');
  const deploy = read('.github/workflows/deploy.yml');
  /** The workflow's lines without comments, so an explanation never satisfies a check. */
  const code = (text: string) => text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');

  test('CI checks out, sets up Node and runs .ci/run', () => {
    const body = code(ci);
    const order = ['actions/checkout@', 'actions/setup-node@', 'bash .ci/run'].map((s) => body.indexOf(s));
    assert.ok(order.every((i) => i >= 0), `steps missing: ${order}`);
    assert.deepEqual([...order].sort((a, b) => a - b), order, 'checkout, setup-node, .ci/run in that order');
    assert.ok(existsSync(path.join(ROOT, '.ci/run')));
  });

  test('deploy runs after a successful CI run on main', () => {
    const ciName = /^name:\s*(\S+)/m.exec(ci)![1];
    const body = code(deploy);
    assert.match(body, new RegExp(`workflow_run:\\s*\\n\\s*workflows:\\s*\\[${ciName}\\]`), `triggered by the "${ciName}" workflow`);
    assert.match(body, /branches:\s*\[main\]/);
    assert.match(body, /github\.event\.workflow_run\.conclusion == 'success'/);
  });

  test('deploy: flyctl set up, the api first (it migrates), then webhook and worker, then the smoke test, then the rollback on failure', () => {
    const body = code(deploy);
    assert.match(body, /uses: superfly\/flyctl-actions\/setup-flyctl@/);
    const steps = [
      'scripts/fly-rollback.sh current',
      'flyctl deploy -c fly.api.toml',
      'flyctl deploy -c fly.webhook.toml',
      'flyctl deploy -c fly.worker.toml',
      'npm run smoke --',
      'scripts/fly-rollback.sh deploy fly.worker.toml',
      'scripts/fly-rollback.sh deploy fly.webhook.toml',
      'scripts/fly-rollback.sh deploy fly.api.toml',
    ];
    const at = steps.map((s) => body.indexOf(s));
    for (const [i, s] of steps.entries()) assert.ok(at[i]! >= 0, `missing: ${s}`);
    assert.deepEqual([...at].sort((a, b) => a - b), at, `in this order: ${steps.join(' -> ')}`);
    assert.match(body, /if: failure\(\)/, 'the rollback runs when a step failed');
    for (const flag of ['--api', '--webhook', '--token']) assert.ok(body.includes(flag), `smoke ${flag}`);
  });

  test('every fly.*.toml, script and npm script the workflows name exists', () => {
    const all = code(ci) + code(deploy);
    for (const [, file] of all.matchAll(/-c (fly\.\w+\.toml)/g)) assert.ok(existsSync(path.join(ROOT, file!)), file);
    for (const [, file] of all.matchAll(/(scripts\/[\w.-]+\.sh)/g)) accessSync(path.join(ROOT, file!), constants.X_OK);
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    const used = [...all.matchAll(/npm run (?:-s )?([\w:-]+)/g)].map((m) => m[1]!);
    assert.ok(used.includes('smoke'));
    assert.deepEqual(used.filter((s) => !(s in scripts)), [], 'npm scripts missing from package.json');
  });
});
