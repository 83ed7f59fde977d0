// scripts/fly-rollback.sh with a stand-in `flyctl` that answers from canned listings (the shapes
// of `fly releases --image` and `fly machines list --json`) and records deploys: `current` is what
// the machines run, not the newest release; `previous` skips releases newer than the running
// image (a failed deploy Fly undid) and those that kept its image; each refusal says why.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { runToExit } from '../helpers/process.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'docpipe-fly-rollback-'));
after(() => rm(dir, { recursive: true, force: true }));
await writeFile(
  path.join(dir, 'flyctl'),
  `#!/bin/sh
[ -f '${dir}/fail' ] && { echo "Error: failed to list releases: unauthorized" >&2; exit 1; }
case "$1 $2" in
  "releases -a") cat '${dir}/releases.txt' ;;
  "machines list") cat '${dir}/machines.json' ;;
  "deploy -c") echo "$*" >> '${dir}/deploys' ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
`,
);
await chmod(path.join(dir, 'flyctl'), 0o755);

const img = (id: string) => `registry.fly.io/acme-api:deployment-${id}`;
async function given(releases: [string, string, string][], machines: { image: string; state?: string }[] | null): Promise<void> {
  const rows = releases.map(([v, status, image], i) => `v${v}\t${status}\tRelease\tci@example.com\t${i + 1}h ago\t${image}`);
  await writeFile(path.join(dir, 'releases.txt'), ['VERSION\tSTATUS\tDESCRIPTION\tUSER\tDATE\tDOCKER IMAGE', ...rows].join('\n') + '\n');
  await writeFile(path.join(dir, 'machines.json'), JSON.stringify(machines?.map((m, i) => ({ id: `m${i}`, state: m.state ?? 'started', config: { image: m.image } })) ?? null));
}
const rollback = (...args: string[]) => runToExit('bash', ['scripts/fly-rollback.sh', ...args], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, timeoutMs: 30_000 });

const history: [string, string, string][] = [
  ['6', 'failed', img('F')], // a bluegreen deploy whose machines never got healthy: undone by Fly
  ['5', 'complete', img('C')], // a secrets change: same image
  ['4', 'complete', img('C')],
  ['3', 'complete', img('B')],
  ['2', 'complete', img('A')],
];

test('current: the image most machines run, not the newest release', async () => {
  await given(history, [{ image: img('C') }, { image: img('C') }, { image: img('F'), state: 'destroyed' }, { image: img('B') }]);
  const run = await rollback('current', 'acme-api');
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim(), img('C'));
});

test('current: nothing for an app without machines (a first deploy), exit 0', async () => {
  await given([], []);
  const run = await rollback('current', 'acme-api');
  assert.deepEqual([run.code, run.stdout], [0, '']);
});

test('previous: the release before the running image, past the undone deploy and the secrets change', async () => {
  await given(history, [{ image: img('C') }]);
  const run = await rollback('previous', 'acme-api');
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stdout.trim(), img('B'));
});

test('previous: the running image older than the listed releases: the newest listed other image', async () => {
  await given(history.slice(0, 2), [{ image: img('Z') }]);
  assert.equal((await rollback('previous', 'acme-api')).stdout.trim(), img('F'));
});

test('previous: refusals say why, exit 1', async () => {
  await given([['1', 'complete', img('C')]], [{ image: img('C') }]);
  const only = await rollback('previous', 'acme-api');
  assert.equal(only.code, 1);
  assert.match(only.stderr, /no earlier image of acme-api among its last 25 releases/);
  await given(history, []);
  const none = await rollback('previous', 'acme-api');
  assert.equal(none.code, 1);
  assert.match(none.stderr, /has no machines/);
});

test('a flyctl failure is an error, never an empty answer taken as "nothing to roll back to"', async () => {
  await given(history, [{ image: img('C') }]);
  await writeFile(path.join(dir, 'fail'), '');
  try {
    const run = await rollback('current', 'acme-api');
    assert.notEqual(run.code, 0);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /unauthorized/);
  } finally {
    await rm(path.join(dir, 'fail'));
  }
});

test('deploy: the image with the toml; no recorded image is a no-op; a foreign image is refused', async () => {
  const ok = await rollback('deploy', 'fly.api.toml', 'acme-api', img('B'));
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((await readFile(path.join(dir, 'deploys'), 'utf8')).trim(), `deploy -c fly.api.toml -a acme-api --image ${img('B')}`);
  const empty = await rollback('deploy', 'fly.api.toml', 'acme-api', '');
  assert.equal(empty.code, 0);
  assert.match(empty.stderr, /nothing to roll back to/);
  const foreign = await rollback('deploy', 'fly.api.toml', 'acme-api', 'docker.io/evil/image:latest');
  assert.equal(foreign.code, 2);
  assert.match(foreign.stderr, /not a registry\.fly\.io image/);
  assert.equal((await readFile(path.join(dir, 'deploys'), 'utf8')).trim().split('\n').length, 1, 'only the first deployed');
});
