// scripts/fly-setup.sh, run for real with a stand-in `flyctl` on PATH that records its calls
// (no Fly account here) and the Supabase Storage fake over HTTP. It creates the three apps and
// stages secrets with which each app's configuration (its toml's [env] plus the staged values)
// loads with the real providers, naming nothing its toml does not list; it generates the webhook
// key once, creates the bucket, and prints the deploy and smoke commands with a token the stack
// accepts. It refuses a transaction-mode DATABASE_URL and a file with a missing value.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parse as parseToml } from 'smol-toml';
import { loadConfig, type Config } from '../../src/config.ts';
import { createTokenVerifier } from '../../src/security/tokens.ts';
import { startFakeSupabaseStorage } from '../fakes/supabase-storage.ts';
import { documentedSecrets } from '../helpers/fly-toml.ts';
import { runToExit } from '../helpers/process.ts';

const JWT_SECRET = 'fly-setup-test-secret-fly-setup-test-secret-0123';
const storage = await startFakeSupabaseStorage();
const dir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-fly-setup-'));
after(async () => {
  await storage.close();
  await rm(dir, { recursive: true, force: true });
});

// flyctl as the script uses it: whoami succeeds, no app exists yet, every call is recorded
// (one argument per line, a blank line between calls, so values with spaces stay whole).
const calls = path.join(dir, 'calls');
await writeFile(path.join(dir, 'flyctl'), `#!/bin/sh\nprintf '%s\\n' "$@" >> '${calls}'\necho >> '${calls}'\ncase "$1" in status) exit 1;; esac\nexit 0\n`);
await chmod(path.join(dir, 'flyctl'), 0o755);

async function flyCalls(): Promise<string[][]> {
  const text = await readFile(calls, 'utf8').catch(() => '');
  return text.split('\n\n').filter((c) => c.trim() !== '').map((c) => c.split('\n').filter((a) => a !== ''));
}

interface Run { status: number | null; stdout: string; stderr: string; envFile: string }
let runs = 0;
async function run(values: Record<string, string>): Promise<Run> {
  await rm(calls, { force: true });
  const name = `deploy-${++runs}.env`;
  const file = path.join(dir, name);
  await writeFile(file, Object.entries(values).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  // From another directory, with a relative path, as a user would run it.
  const result = await runToExit('bash', [path.resolve('scripts/fly-setup.sh'), name], {
    cwd: dir,
    env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, DOCPIPE_DATA_DIR: path.join(dir, 'data') },
    timeoutMs: 120_000,
  });
  return { status: result.code, stdout: result.stdout, stderr: result.stderr, envFile: await readFile(file, 'utf8') };
}

const good = {
  API_APP: 'acme-docpipe-api',
  WEBHOOK_APP: 'acme-docpipe-webhook',
  WORKER_APP: 'acme-docpipe-worker',
  // A password a shell would mangle: the file is read literally, never sourced.
  DATABASE_URL: 'postgres://postgres.ref:p$HOME&`id` x@aws-0-us-east-1.pooler.supabase.com:5432/postgres',
  JWT_SECRET,
  SUPABASE_URL: storage.url,
  SUPABASE_SERVICE_ROLE_KEY: storage.serviceKey,
  LLAMAPARSE_API_KEY: 'llx-test',
  OPENAI_API_KEY: 'sk-test',
};

/** The configuration an app's machines get: its toml's [env] and the secrets staged for it. */
async function machineConfig(service: 'api' | 'webhook' | 'worker', staged: Record<string, string>): Promise<{ config: Config; documented: Set<string> }> {
  const text = await readFile(`fly.${service}.toml`, 'utf8');
  const env = (parseToml(text).env ?? {}) as Record<string, string>;
  return { config: loadConfig({ ...env, ...staged }), documented: documentedSecrets(text) };
}

test('creates the apps, stages what each app needs to run, creates the bucket, prints the next commands', async () => {
  const result = await run(good);
  assert.equal(result.status, 0, result.stderr + result.stdout);
  const log = await flyCalls();
  const apps = { api: good.API_APP, webhook: good.WEBHOOK_APP, worker: good.WORKER_APP } as const;
  for (const app of Object.values(apps)) assert.ok(log.some((c) => c.join(' ') === `apps create ${app}`), `apps create ${app}`);

  const generated = /^WEBHOOK_SECRET=(\S{32,})$/m.exec(result.envFile)?.[1];
  assert.ok(generated, 'the generated webhook key is kept in the file');
  const configs: Partial<Record<keyof typeof apps, Config>> = {};
  for (const [service, app] of Object.entries(apps) as [keyof typeof apps, string][]) {
    const call = log.find((c) => c.slice(0, 5).join(' ') === `secrets set --stage -a ${app}`);
    assert.ok(call, `secrets staged for ${app}`);
    const staged = Object.fromEntries(call.slice(5).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    const { config, documented } = await machineConfig(service, staged);
    for (const name of Object.keys(staged)) assert.ok(documented.has(name), `${name} staged for ${app}, but fly.${service}.toml does not list it`);
    assert.equal(config.databaseUrl, good.DATABASE_URL);
    assert.equal(config.jwt.secret, JWT_SECRET);
    assert.deepEqual([config.storage.kind, config.storage.kind === 'supabase' && config.storage.url], ['supabase', storage.url]);
    configs[service] = config;
  }
  assert.equal(configs.webhook!.webhook.secret, generated);
  assert.equal(configs.worker!.webhook.secret, generated, 'the worker signs with the key the webhook verifies');
  assert.equal(configs.worker!.webhook.publicUrl, `https://${good.WEBHOOK_APP}.fly.dev`);
  assert.deepEqual([configs.worker!.parser.kind, configs.worker!.embedder.kind], ['llamaparse', 'openai']);
  assert.deepEqual(configs.api!.embedder, configs.worker!.embedder, 'the api embeds search queries as the worker embeds chunks (same key, model, dimensions)');
  assert.equal(configs.api!.webhook.secret, undefined, 'the api holds no webhook key');
  const signing = /^LLAMAPARSE_WEBHOOK_SIGNING_SECRET=(\S{32,})$/m.exec(result.envFile)?.[1];
  assert.ok(signing, 'the generated signing key is kept in the file');
  assert.equal(configs.webhook!.webhook.llamaparseSigningSecret, signing, 'the webhook verifies LC-Signature');
  assert.ok(configs.worker!.parser.kind === 'llamaparse' && configs.worker!.parser.webhookSigningSecret === signing, 'the worker sends the key it is verified with');

  assert.ok(storage.buckets.has('documents'), 'the bucket was created');
  assert.match(result.stdout, new RegExp(`fly deploy -c fly.api.toml -a ${good.API_APP}`));
  const token = /--token (\S+)/.exec(result.stdout)?.[1];
  assert.ok(token, 'a smoke token is printed');
  assert.equal(createTokenVerifier({ secret: JWT_SECRET, audience: 'authenticated', issuer: undefined })(token).sub, 'smoke-test');

  // A second run keeps the key (the webhook and worker would otherwise fall out of step).
  const again = await run(Object.fromEntries(result.envFile.split('\n').filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])));
  assert.equal(again.status, 0, again.stderr);
  assert.doesNotMatch(again.stdout, /generated (WEBHOOK_SECRET|LLAMAPARSE_WEBHOOK_SIGNING_SECRET)/);
  assert.ok((await flyCalls()).some((c) => c.includes(`WEBHOOK_SECRET=${generated}`)));
});

test('a project on asymmetric keys: JWT_JWKS_URL alone is staged, and the smoke token is left to Supabase Auth', async () => {
  const { JWT_SECRET: _legacy, ...rest } = good;
  const result = await run({ ...rest, JWT_JWKS_URL: 'https://abcd.supabase.co/auth/v1/.well-known/jwks.json' });
  assert.equal(result.status, 0, result.stderr + result.stdout);
  const call = (await flyCalls()).find((c) => c.slice(0, 5).join(' ') === `secrets set --stage -a ${good.API_APP}`)!;
  const staged = Object.fromEntries(call.slice(5).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  assert.equal(staged.JWT_SECRET, undefined);
  const { config, documented } = await machineConfig('api', staged);
  assert.equal(config.jwt.jwksUrl, 'https://abcd.supabase.co/auth/v1/.well-known/jwks.json');
  assert.ok(documented.has('JWT_JWKS_URL'), 'fly.api.toml lists JWT_JWKS_URL');
  assert.match(result.stdout, /--token "<the access_token of a Supabase user of this project>"/);
  const neither = await run(rest);
  assert.equal(neither.status, 1);
  assert.match(neither.stderr, /set JWT_JWKS_URL or JWT_SECRET/);
});

test('a line that is not NAME=value is refused by its number, without echoing it (it may hold a secret)', async () => {
  const result = await run({ ...good, 'sk-live-pasted-on-its-own-line #': '' });
  assert.equal(result.status, 1);
  assert.match(result.stderr, /line 10: expected NAME=value/);
  assert.doesNotMatch(result.stderr, /sk-live/);
});

test('refuses a transaction-mode DATABASE_URL and names a missing value, before touching Fly', async () => {
  const pooled = await run({ ...good, DATABASE_URL: good.DATABASE_URL.replace(':5432/', ':6543/') });
  assert.equal(pooled.status, 1);
  assert.match(pooled.stderr, /transaction mode \(port 6543\).*5432/);
  const { OPENAI_API_KEY: _omit, ...rest } = good;
  const missing = await run(rest);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /set OPENAI_API_KEY/);
  assert.ok((await flyCalls()).every((c) => c[0] === 'auth'), 'nothing created or staged');
});
