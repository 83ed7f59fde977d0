// The smoke of the pipeline in-process, and the post-deploy smoke script (scripts/smoke.ts) run
// for real, as a child process, against a local stack and against broken targets.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import path from 'node:path';
import { after, test } from 'node:test';
import { freePort } from '../../src/util/free-port.ts';
import { runToExit, type Exit } from '../helpers/process.ts';
import { startStack, upload, waitForStatus } from '../helpers/stack.ts';

test('a text file goes from upload to ready', async () => {
  const stack = await startStack();
  const res = await upload(stack, await readFile('test/fixtures/sample.txt'), 'sample.txt');
  assert.equal(res.status, 202);
  const { id } = (await res.json()) as { id: string };
  const doc = await waitForStatus(stack, id, ['ready', 'failed']);
  assert.equal(doc.status, 'ready');
  assert.ok(doc.chunkCount > 0);
});

/** `npm run smoke -- ...args`: the script under tsx, in a child process, bounded. */
function smoke(args: string[]): Promise<Exit> {
  return runToExit(process.execPath, ['--import', 'tsx', path.resolve('scripts/smoke.ts'), ...args], { timeoutMs: 90_000 });
}

/** The RESULT column of the row `check` in the verdict table. */
function result(stdout: string, check: string): string | undefined {
  return new RegExp(`^${check.replace(/[/]/g, '\\/')} +(PASS|FAIL|SKIP) `, 'm').exec(stdout)?.[1];
}

test('smoke script: a healthy local stack passes, exit 0', async () => {
  const stack = await startStack({ webhooks: true });
  const { code, stdout, stderr } = await smoke(['--api', stack.apiUrl, '--webhook', stack.webhookUrl, '--token', stack.token('smoke-user')]);
  assert.equal(code, 0, `${stdout}\n${stderr}`);
  for (const check of ['api /readyz', 'webhook /readyz', 'upload to ready', 'delete', 'webhook without credential', '404 error shape']) {
    assert.equal(result(stdout, check), 'PASS', `${check}:\n${stdout}`);
  }
  assert.equal(result(stdout, 'api HSTS'), 'SKIP');
  assert.match(stdout, /^api HSTS +SKIP +http URL/m, 'a skipped check says why');
  assert.match(stdout, /^CHECK +RESULT +TIME +DETAIL$/m);
  assert.match(stdout, /^verdict: PASS \(6 passed, 0 failed, 2 skipped\)$/m);
  // The smoke document does not stay behind.
  const [left] = await stack.db.sql<{ count: number }[]>`select count(*)::int as count from docpipe.document_status where owner_id = 'smoke-user' and status <> 'deleted'`;
  assert.equal(left!.count, 0);
});

test('smoke script: a webhook URL that accepts anything fails, exit 1', async () => {
  const stack = await startStack({ worker: false });
  // Answers 200 to every request: a catch-all proxy, or the wrong app behind the URL.
  const lenient = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  lenient.listen(0, '127.0.0.1');
  await once(lenient, 'listening');
  after(() => lenient.close());
  const address = lenient.address() as { port: number };
  const { code, stdout } = await smoke(['--api', stack.apiUrl, '--webhook', `http://127.0.0.1:${address.port}`, '--token', stack.token(), '--ready-within', '1']);
  assert.equal(code, 1, stdout);
  assert.equal(result(stdout, 'webhook /readyz'), 'FAIL', stdout);
  assert.equal(result(stdout, 'webhook without credential'), 'FAIL', stdout);
  assert.match(stdout, /^webhook without credential +FAIL .*answered 200, not 401/m);
  assert.equal(result(stdout, 'api /readyz'), 'PASS', stdout);
  assert.match(stdout, /^verdict: FAIL/m);
});

test('smoke script: an API that is down fails fast, exit 1', async () => {
  const down = `http://127.0.0.1:${await freePort()}`;
  const { code, stdout, ms } = await smoke(['--api', down, '--webhook', down, '--token', 'not-checked']);
  assert.equal(code, 1, stdout);
  assert.equal(result(stdout, 'api /readyz'), 'FAIL', stdout);
  assert.match(stdout, /^api \/readyz +FAIL .*no answer \(ECONNREFUSED\): is the app deployed and started\?/m);
  assert.equal(result(stdout, 'upload to ready'), 'FAIL');
  assert.equal(result(stdout, 'delete'), 'SKIP');
  assert.ok(ms < 30_000, `bounded: ${ms.toFixed(0)} ms`);
});

test('smoke script: bad flags exit 2 with the usage', async () => {
  const missing = await smoke(['--api', 'http://127.0.0.1:1', '--webhook', 'http://127.0.0.1:1']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--token is required/);
  assert.match(missing.stderr, /^usage: npm run smoke/m);
  const unknown = await smoke(['--api', 'ftp://x', '--webhook', 'http://127.0.0.1:1', '--token', 't']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /--api must be an http:\/\/ or https:\/\/ URL/);
});
