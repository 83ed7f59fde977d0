// `npm test` names its test directories (the hostile suite runs alone, after the rest: it measures
// a process's latency and memory, which another test file on the same cores would disturb). A
// test file in any other directory would never run: each must be in one the scripts name.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { glob } from 'node:fs/promises';
import { test } from 'node:test';

test('every *.test.ts is in a directory that npm test runs', async () => {
  const scripts = JSON.parse(readFileSync('package.json', 'utf8')).scripts as Record<string, string>;
  const run = `${scripts.test} ${scripts['test:hostile']}`;
  assert.match(scripts.test!, /npm run -s test:hostile/, 'npm test runs the hostile suite too');
  const dirs = [...run.matchAll(/"test\/([a-z0-9-]+)\/\*\*\/\*\.test\.ts"/g)].map((m) => m[1]);
  assert.ok(dirs.length >= 5, `directories named: ${dirs.join(', ')}`);
  const files: string[] = [];
  for await (const file of glob('test/**/*.test.ts')) files.push(file);
  assert.ok(files.length > 40);
  const orphans = files.filter((file) => !dirs.includes(file.split('/')[1]!));
  assert.deepEqual(orphans, []);
});
