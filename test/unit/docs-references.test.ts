// The documentation names commands, scripts and files a reader will type or open: each must
// exist. A renamed npm script, CLI command or file otherwise leaves the README or a guide
// pointing at nothing, which no other test notices.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

const DOCS = ['README.md', ...readdirSync('docs').filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const scripts = new Set(Object.keys(JSON.parse(readFileSync('package.json', 'utf8')).scripts));
const usage = execFileSync('node_modules/.bin/node', ['--import', 'tsx', 'src/cli.ts', '--help'], { encoding: 'utf8' });
const commands = new Set([...usage.matchAll(/^ {2}([a-z][a-z-]+)\b/gm)].map((m) => m[1]));

/** What a document names, with the line it is on. */
function mentions(pattern: RegExp): { doc: string; line: number; name: string }[] {
  return DOCS.flatMap((doc) => readFileSync(doc, 'utf8').split('\n').flatMap((text, i) =>
    [...text.matchAll(pattern)].map((m) => ({ doc, line: i + 1, name: m[1] ?? '' }))));
}

test('the CLI usage lists the commands (the check below reads it)', () => {
  for (const command of ['api', 'worker', 'webhook', 'all', 'migrate', 'doctor', 'setup-storage']) assert.ok(commands.has(command), command);
});

test('every `npm run X` in the docs is a script of package.json', () => {
  const found = mentions(/npm run (?:-s )?([a-z][a-z:-]*)/g);
  assert.ok(found.length > 10);
  const missing = found.filter((m) => !scripts.has(m.name)).map((m) => `${m.doc}:${m.line} npm run ${m.name}`);
  assert.deepEqual(missing, []);
});

test('every `docpipe -- X` and `dist/src/cli.js X` in the docs is a CLI command', () => {
  const found = mentions(/(?:docpipe -- |cli\.js )([a-z][a-z-]*)/g);
  assert.ok(found.length > 5);
  // `docpipe -- api|worker|webhook` names three: the first is checked with the others below.
  const missing = found.filter((m) => !commands.has(m.name)).map((m) => `${m.doc}:${m.line} ${m.name}`);
  assert.deepEqual(missing, []);
});

test('every repository file the docs name exists', () => {
  const found = mentions(/(?<![\w./-])((?:docs|scripts|src|test|\.github\/workflows)\/[\w./-]+\.(?:md|ts|sh|yml|sql)|fly\.(?:api|worker|webhook|autoscaler)\.toml|Dockerfile|\.ci\/run)\b/g);
  assert.ok(found.length > 20);
  const missing = found.filter((m) => !existsSync(m.name)).map((m) => `${m.doc}:${m.line} ${m.name}`);
  assert.deepEqual(missing, []);
});
