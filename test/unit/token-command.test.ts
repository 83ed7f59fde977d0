// `docpipe token`: the real CLI prints a user JWT the api's verifier accepts, for the subject and
// lifetime asked for (a smoke-test user's token outlives the default day); bad arguments are
// refused with exit code 2 and a message naming them.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { createTokenVerifier, parseTokenArgs } from '../../src/security/tokens.ts';
import { runToExit } from '../helpers/process.ts';

const JWT_SECRET = 'token-command-test-secret-0123456789abcdefgh';
const dir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-token-'));
after(() => rm(dir, { recursive: true, force: true }));

const token = (...args: string[]) =>
  runToExit(process.execPath, ['--import', 'tsx', path.resolve('src/cli.ts'), 'token', ...args], {
    env: { PATH: process.env.PATH, JWT_SECRET, JWT_ISSUER: 'https://ref.supabase.co/auth/v1', DOCPIPE_DATA_DIR: dir, LOG_LEVEL: 'silent' },
    timeoutMs: 60_000,
  });
const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString()) as { sub: string; iat: number; exp: number; iss: string };

test('docpipe token smoke-test --ttl 365d: a year-long token the api accepts, with the issuer', async () => {
  const run = await token('smoke-test', '--ttl', '365d');
  assert.equal(run.code, 0, run.stderr);
  const jwt = run.stdout.trim();
  const verified = createTokenVerifier({ secret: JWT_SECRET, audience: 'authenticated', issuer: 'https://ref.supabase.co/auth/v1' })(jwt);
  assert.equal(verified.sub, 'smoke-test');
  const c = claims(jwt);
  assert.equal(c.exp - c.iat, 365 * 86_400);
  const byDefault = claims((await token('someone')).stdout.trim());
  assert.equal(byDefault.exp - byDefault.iat, 24 * 3600, 'a day by default');
});

test('bad arguments: exit 2 and a message naming them', async () => {
  for (const [args, message] of [
    [['--ttl', '5'], /--ttl "5": expected a number and a unit/],
    [['--ttl', '401d'], /over 400 days/],
    [['a', 'b'], /one subject at most/],
    [['--bogus'], /Unknown option '--bogus'/],
  ] as const) {
    const run = await token(...args);
    assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
    assert.match(run.stderr, message);
    assert.equal(run.stdout, '', 'no token printed');
  }
  assert.deepEqual(parseTokenArgs(['--ttl', '30m'], 'dev'), { sub: 'dev', ttlSeconds: 1800 });
});
