// As root in a directory the `postgres` user cannot enter (a clone under /root, any mktemp -d),
// the embedded cluster lives under a root-owned directory and <dataDir>/pg links to it. Clusters
// whose checkout is gone are swept, but not a moved checkout's: it keeps its data, reclaims its
// cluster on its next start, and only a cluster unused for ORPHAN_GRACE_MS with its link gone
// is removed. Runs only as root (CI is root); elsewhere the in-place cluster needs none of this.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink, rename, rm, stat, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import postgres from 'postgres';
import { ORPHAN_GRACE_MS, startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { freePort } from '../../src/util/free-port.ts';

const root = process.getuid?.() === 0;
const base = await mkdtemp(path.join(os.tmpdir(), 'docpipe-root-clusters-'));
after(() => rm(base, { recursive: true, force: true }));

async function query<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

test('a moved checkout keeps its cluster; a deleted one is swept once its grace time is over', { skip: !root && 'needs root (the postgres user and its reach)', timeout: 240_000 }, async () => {
  assert.equal((await stat(base)).mode & 0o777, 0o700, 'mkdtemp makes a private directory');
  const port = await freePort();
  const start = (dir: string, throwaway = false) => startEmbeddedPostgres({ dataDir: path.join(base, dir, '.data'), port, throwaway, postgresFlags: ['-c', 'fsync=off'] });

  // 1. A checkout's cluster, with something in it.
  const first = await start('a');
  const cluster = first.clusterDir;
  try {
    assert.ok(!cluster.startsWith(base), `the cluster is outside the private directory: ${cluster}`);
    assert.equal(await readlink(path.join(base, 'a/.data/pg')), cluster, '<dataDir>/pg links to it');
    await query(first.url, (sql) => sql`create table kept (v text); insert into kept values ('still here')`.simple());
  } finally {
    await first.stop();
  }

  // 2. The checkout moves; another checkout starts (and sweeps) before the moved one runs again.
  await rename(path.join(base, 'a'), path.join(base, 'b'));
  const other = await start('c', true);
  await other.stop();
  assert.ok(existsSync(cluster), 'a recently used cluster is not swept although its old link is gone');

  // 3. The moved checkout starts on its own cluster, with its data, and the record follows it.
  const moved = await start('b');
  try {
    assert.equal(moved.clusterDir, cluster);
    assert.deepEqual([...(await query(moved.url, (sql) => sql`select v from kept`))], [{ v: 'still here' }]);
    assert.equal((await readFile(`${cluster}.owner`, 'utf8')).trim(), path.join(base, 'b/.data/pg'));
  } finally {
    await moved.stop();
  }

  // 4. The checkout is deleted and the cluster left unused past the grace time: the next
  // checkout's start removes it.
  await rm(path.join(base, 'b'), { recursive: true, force: true });
  const longAgo = new Date(Date.now() - ORPHAN_GRACE_MS - 3600_000);
  await utimes(`${cluster}.owner`, longAgo, longAgo);
  const next = await start('d', true);
  await next.stop();
  assert.ok(!existsSync(cluster), 'the orphan was removed');
  assert.ok(!existsSync(`${cluster}.owner`), 'with its record');
});
