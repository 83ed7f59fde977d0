// `docpipe doctor` against the local fakes of LlamaParse, OpenAI and Supabase Storage and a
// database of the test cluster: every check passes with a healthy configuration, and each
// mistake a deployment can make fails its own check (and only that one), with a fix.
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { runDoctor, type CheckResult, type DoctorOptions } from '../../src/ops/doctor.ts';
import { freePort } from '../../src/util/free-port.ts';
import { FAKE_VERSIONS, startFakeLlamaParse } from '../fakes/llamaparse.ts';
import { startFakeOpenAI } from '../fakes/openai.ts';
import { startFakeSupabaseStorage } from '../fakes/supabase-storage.ts';
import { createDatabase } from '../helpers/db.ts';
import { runToExit, type Exit } from '../helpers/process.ts';
import { TEST_JWT_SECRET, TEST_WEBHOOK_SECRET } from '../helpers/stack.ts';

const CHECKS = ['configuration', 'database', 'session mode', 'migrations', 'connection budget', 'storage', 'jwt', 'llamaparse key', 'openai key', 'webhook url'];

const [db, llama, openai, supabase] = await Promise.all([createDatabase(), startFakeLlamaParse(), startFakeOpenAI(), startFakeSupabaseStorage({ buckets: ['documents'] })]);
const dataDir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-doctor-'));
after(async () => {
  await Promise.all([llama.close(), openai.close(), supabase.close()]);
  await rm(dataDir, { recursive: true, force: true });
});

/** What a correct deployment sets (against the fakes); each test changes one thing. */
const healthy: Record<string, string> = {
  DATABASE_URL: db.url,
  DOCPIPE_DATA_DIR: dataDir,
  JWT_SECRET: TEST_JWT_SECRET,
  JWT_ISSUER: `${supabase.url}/auth/v1`,
  DOCPIPE_STORAGE: 'supabase',
  SUPABASE_URL: supabase.url,
  SUPABASE_SERVICE_ROLE_KEY: supabase.serviceKey,
  SUPABASE_STORAGE_BUCKET: 'documents',
  DOCPIPE_PARSER: 'llamaparse',
  LLAMAPARSE_API_KEY: llama.apiKey,
  LLAMAPARSE_BASE_URL: llama.url,
  WEBHOOK_PUBLIC_URL: 'https://docpipe-webhook.example.com',
  WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
  DOCPIPE_EMBEDDER: 'openai',
  OPENAI_API_KEY: openai.apiKey,
  OPENAI_BASE_URL: openai.url,
};

function doctor(env: Record<string, string | undefined>, options: Omit<DoctorOptions, 'env'> = {}): Promise<CheckResult[]> {
  const merged = { ...healthy, ...env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  return runDoctor({ env: merged as NodeJS.ProcessEnv, timeoutMs: 5_000, ...options });
}

function byName(results: CheckResult[], name: string): CheckResult {
  const found = results.find((r) => r.name === name);
  assert.ok(found, `no check named ${name}: ${results.map((r) => r.name).join(', ')}`);
  return found;
}

/** Exactly the named checks fail, each with a fix; every other check passes (or is skipped, if listed). */
function assertFails(results: CheckResult[], failing: string[], skipped: string[] = []): void {
  const show = JSON.stringify(results, null, 2);
  assert.deepEqual(results.map((r) => r.name), CHECKS);
  for (const r of results) {
    if (failing.includes(r.name)) {
      assert.equal(r.ok, false, `${r.name} should fail:\n${show}`);
      assert.ok(r.fix && r.fix.length > 10, `${r.name} says what to do:\n${show}`);
    } else if (skipped.includes(r.name)) {
      assert.equal(r.skipped, true, `${r.name} should be skipped:\n${show}`);
      assert.ok(r.detail.length > 0, `a skipped check says why:\n${show}`);
    } else {
      assert.equal(r.ok, true, `${r.name} should pass:\n${show}`);
      assert.ok(!r.skipped, `${r.name} should run:\n${show}`);
    }
  }
}

/** Runs the real CLI (`docpipe doctor`) with exactly `env` (plus PATH), as a child process. */
function cli(args: string[], env: Record<string, string>): Promise<Exit> {
  return runToExit(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), 'doctor', ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    timeoutMs: 60_000,
  });
}

describe('a healthy configuration', () => {
  test('every check passes, none is skipped', async () => {
    assertFails(await doctor({}), []);
  });

  test('the CLI prints a line per check and exits 0', async () => {
    const { code, stdout, stderr } = await cli(['--api', '2', '--worker', '3', '--webhook', '2'], healthy);
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    for (const name of CHECKS) assert.match(stdout, new RegExp(`^PASS  ${name} `, 'm'), stdout);
    assert.match(stdout, /api 2, worker 3, webhook 2 machines/);
    assert.match(stdout, /2 api × 17 \+ 3 worker × 16 \+ 2 webhook × 16/, 'the budget shows its arithmetic');
    assert.match(stdout, /^all checks passed/m);
    assert.doesNotMatch(stdout, new RegExp(db.url.split('@')[0]!.split(':').at(-1)!), 'the database password is never printed');
  });

  test('without DATABASE_URL (the local default) the database check fails: no false all-clear; what depends on it, and unused providers, are skipped with a reason', async () => {
    const local = await runDoctor({ env: { DOCPIPE_DATA_DIR: dataDir }, timeoutMs: 5_000 });
    assertFails(local, ['database'], ['session mode', 'migrations', 'connection budget', 'jwt', 'llamaparse key', 'openai key', 'webhook url']);
    assert.match(byName(local, 'database').detail, /DATABASE_URL is not set/);
    assert.match(byName(local, 'database').fix!, /export the production variables/);
    assert.match(byName(local, 'llamaparse key').detail, /local/);
  });
});

describe('each mistake fails its own check', () => {
  test('a wrong database password', async () => {
    const url = new URL(db.url);
    url.password = 'not-the-password';
    const results = await doctor({ DATABASE_URL: url.toString() });
    assertFails(results, ['database'], ['session mode', 'migrations', 'connection budget']);
    assert.match(byName(results, 'database').detail, /password authentication failed/);
    assert.match(byName(results, 'database').fix!, /password in DATABASE_URL is wrong/);
    assert.doesNotMatch(JSON.stringify(results), /not-the-password/);
    assert.match(byName(results, 'migrations').detail, /not reachable/);
  });

  test('a database URL where nothing listens', async () => {
    const url = new URL(db.url);
    url.port = String(await freePort());
    const results = await doctor({ DATABASE_URL: url.toString() });
    assertFails(results, ['database'], ['session mode', 'migrations', 'connection budget']);
    assert.match(byName(results, 'database').detail, /nothing accepts connections/);
  });

  test('a Supavisor transaction-mode URL (port 6543) is named as the mistake it is', async (t) => {
    // A plain TCP relay on port 6543 to the test database: everything works except what the
    // port says (the doctor must not need a real transaction pooler to name the mistake).
    const target = new URL(db.url);
    const relay = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      client.pipe(upstream).pipe(client);
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    try {
      await new Promise<void>((resolve, reject) => relay.once('error', reject).listen(6543, '127.0.0.1', () => resolve()));
    } catch (err) {
      t.skip(`port 6543 is taken here (${(err as Error).message})`);
      return;
    }
    try {
      const url = new URL(db.url);
      url.port = '6543';
      const results = await doctor({ DATABASE_URL: url.toString() });
      assertFails(results, ['session mode']);
      assert.match(byName(results, 'session mode').detail, /6543.*transaction mode/);
      assert.match(byName(results, 'session mode').fix!, /port 5432/);
    } finally {
      relay.close();
    }
  });

  test('a migration this build ships that the database has not applied', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-doctor-migrations-'));
    try {
      await cp(path.resolve('src/db/migrations'), dir, { recursive: true });
      await writeFile(path.join(dir, '999_doctor_probe.sql'), 'create table docpipe.doctor_probe (id int);\n');
      const results = await doctor({}, { migrationsDir: dir });
      assertFails(results, ['migrations']);
      assert.match(byName(results, 'migrations').detail, /1 pending: 999_doctor_probe/);
      assert.match(byName(results, 'migrations').fix!, /docpipe migrate/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a connection budget over max_connections', async () => {
    const results = await doctor({}, { machines: { api: 2, worker: 40, webhook: 2 } });
    assertFails(results, ['connection budget']);
    const budget = byName(results, 'connection budget');
    assert.match(budget.detail, /40 worker × 16/);
    assert.match(budget.detail, /max_connections 300/);
    assert.match(budget.fix!, /DATABASE_POOL_MAX=\d+ \(it fits\)|fewer machines/);
  });

  test('a missing bucket', async () => {
    const results = await doctor({ SUPABASE_STORAGE_BUCKET: 'not-created' });
    assertFails(results, ['storage']);
    assert.match(byName(results, 'storage').detail, /not-created/);
    assert.match(byName(results, 'storage').fix!, /setup-storage/);
  });

  test('a wrong, garbled or expired service key: the storage check blames the key, not the bucket', async () => {
    const [head, payload] = supabase.serviceKey.split('.') as [string, string];
    const keys = [`${head}.${payload}.${Buffer.alloc(32, 9).toString('base64url')}`, 'not-a-key-at-all', supabase.signKey('service_role', -60)];
    for (const key of keys) {
      const results = await doctor({ SUPABASE_SERVICE_ROLE_KEY: key });
      assertFails(results, ['storage']);
      const storage = byName(results, 'storage');
      assert.match(storage.detail, /SUPABASE_SERVICE_ROLE_KEY .*not a valid key of the project/);
      assert.doesNotMatch(storage.detail, /missing/);
      assert.match(storage.fix!, /not a valid key of the project in SUPABASE_URL .*copy the service_role key again/);
    }
    // The anon key is valid but sees no bucket: "missing, or no access", and the fix names the key.
    const anon = byName(await doctor({ SUPABASE_SERVICE_ROLE_KEY: supabase.anonKey }), 'storage');
    assert.equal(anon.ok, false);
    assert.match(anon.detail, /missing, or SUPABASE_SERVICE_ROLE_KEY has no access/);
    assert.match(anon.fix!, /SUPABASE_SERVICE_ROLE_KEY is the service_role key/);
  });

  test('a short JWT secret: the configuration and the jwt check say so, the other checks still run', async () => {
    const results = await doctor({ JWT_SECRET: 'too-short-secret' });
    assertFails(results, ['configuration', 'jwt']);
    assert.match(byName(results, 'configuration').detail, /JWT_SECRET: must be at least 32 characters/);
    assert.match(byName(results, 'jwt').detail, /16 characters/);
  });

  test('a JWT issuer that is not the project in SUPABASE_URL', async () => {
    const results = await doctor({ JWT_ISSUER: 'https://someone-else.supabase.co/auth/v1' });
    assertFails(results, ['jwt']);
    assert.match(byName(results, 'jwt').fix!, new RegExp(`JWT_ISSUER=${supabase.url}/auth/v1`));
  });

  test('a pinned LLAMAPARSE_VERSION the tier does not have; a listed one passes', async () => {
    const unknown = await doctor({ LLAMAPARSE_VERSION: '2019-01-01' });
    assertFails(unknown, ['llamaparse key']);
    assert.match(byName(unknown, 'llamaparse key').detail, /LLAMAPARSE_VERSION 2019-01-01 is not a version of tier cost_effective/);
    const listed = await doctor({ LLAMAPARSE_VERSION: FAKE_VERSIONS.cost_effective[0]! });
    assert.equal(byName(listed, 'llamaparse key').ok, true, byName(listed, 'llamaparse key').detail);
    assert.match(byName(listed, 'llamaparse key').detail, new RegExp(`version ${FAKE_VERSIONS.cost_effective[0]}`));
  });

  test('a LlamaParse key LlamaCloud rejects', async () => {
    const results = await doctor({ LLAMAPARSE_API_KEY: 'llx-revoked' });
    assertFails(results, ['llamaparse key']);
    assert.match(byName(results, 'llamaparse key').detail, /401/);
    assert.doesNotMatch(JSON.stringify(results), /llx-revoked/);
  });

  test('an OpenAI key OpenAI rejects', async () => {
    const results = await doctor({ OPENAI_API_KEY: 'sk-revoked-0123456789' });
    assertFails(results, ['openai key']);
    assert.match(byName(results, 'openai key').detail, /401/);
    assert.doesNotMatch(JSON.stringify(results), /sk-revoked-0123456789/);
  });

  test('an http webhook URL', async () => {
    const results = await doctor({ WEBHOOK_PUBLIC_URL: 'http://docpipe-webhook.example.com' });
    assertFails(results, ['webhook url']);
    assert.match(byName(results, 'webhook url').detail, /https/);
  });

  test('the CLI exits 1 on a failure and 2 on bad flags', async () => {
    const failing = await cli([], { ...healthy, WEBHOOK_PUBLIC_URL: 'http://docpipe-webhook.example.com' });
    assert.equal(failing.code, 1, failing.stdout + failing.stderr);
    assert.match(failing.stdout, /^FAIL  webhook url .*\n +fix: /m);
    assert.match(failing.stdout, /^1 failed, 9 passed, 0 skipped/m);
    const bad = await cli(['--worker', 'three'], healthy);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--worker must be a number of machines/);
    assert.match(bad.stderr, /usage: docpipe doctor/);
  });
});
