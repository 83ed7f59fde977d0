// The migration runner: applies everything once, is idempotent, serialises concurrent runners,
// and refuses to run over a migration that changed after it was applied.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createSql, type Sql } from '../../src/db/client.ts';
import { loadMigrations, migrate, MigrationChecksumError, migrationsCurrent } from '../../src/db/migrate.ts';
import { createDatabase } from '../helpers/db.ts';

const migrations = await loadMigrations();
const versions = migrations.map((m) => m.version);

async function ledger(sql: Sql): Promise<{ version: number; name: string; checksum: string }[]> {
  return [...(await sql<{ version: number; name: string; checksum: string }[]>`select version, name, checksum from docpipe.schema_migrations order by version`)];
}

describe('migrations', () => {
  test('the migrations on disk are numbered 1, 2, ...', () => {
    assert.ok(versions.length >= 2);
    assert.deepEqual(versions, versions.map((_, i) => i + 1));
  });

  test('migrate() applies all, then nothing; migrationsCurrent follows', async () => {
    const db = await createDatabase({ migrate: false });
    assert.equal(await migrationsCurrent(db.sql), false, 'an empty database is not current');

    const logged: string[] = [];
    assert.deepEqual(await migrate(db.sql, { log: (m) => logged.push(m) }), versions);
    assert.deepEqual(logged, migrations.map((m) => `applied migration ${m.name}`));
    assert.equal(await migrationsCurrent(db.sql), true);
    assert.deepEqual(await ledger(db.sql), migrations.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum })));

    // The schema is really there.
    const tables = await db.sql<{ t: string }[]>`
      select table_name as t from information_schema.tables where table_schema = 'docpipe' order by table_name`;
    const names = tables.map((r) => r.t);
    for (const t of ['document_chunks', 'document_status', 'events', 'idempotency_keys', 'schema_migrations']) assert.ok(names.includes(t), `table ${t}`);

    assert.deepEqual(await migrate(db.sql), [], 'second run applies nothing');
    assert.equal(await migrationsCurrent(db.sql), true);
    assert.equal((await ledger(db.sql)).length, versions.length);
  });

  test('five concurrent migrate() calls on five clients: all succeed, each version applied once', async () => {
    const db = await createDatabase({ migrate: false });
    const clients = Array.from({ length: 5 }, (_, i) => createSql(db.url, { max: 2, applicationName: `migrate-${i}` }));
    try {
      const results = await Promise.allSettled(clients.map((c) => migrate(c)));
      const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.deepEqual(rejected.map((r) => String(r.reason)), [], 'every runner succeeds');
      const applied = results.map((r) => (r as PromiseFulfilledResult<number[]>).value);
      // Between them, the runners applied each version exactly once.
      assert.deepEqual(applied.flat().sort((a, b) => a - b), versions);
      const [dupes] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from (select version from docpipe.schema_migrations group by version having count(*) > 1) d`;
      assert.equal(dupes!.n, 0);
      assert.deepEqual((await ledger(db.sql)).map((r) => r.version), versions);
      for (const c of clients) assert.equal(await migrationsCurrent(c), true);
    } finally {
      await Promise.all(clients.map((c) => c.end({ timeout: 5 })));
    }
  });

  test('a changed checksum makes migrate() throw MigrationChecksumError', async () => {
    const db = await createDatabase();
    const first = migrations[0]!;
    await db.sql`update docpipe.schema_migrations set checksum = 'x' where version = ${first.version}`;
    await assert.rejects(migrate(db.sql), (err: unknown) => {
      assert.ok(err instanceof MigrationChecksumError, String(err));
      assert.equal(err.code, 'MIGRATION_CHECKSUM_MISMATCH');
      assert.equal(err.version, first.version);
      assert.equal(err.migrationName, first.name);
      return true;
    });
    assert.equal(await migrationsCurrent(db.sql), false);

    // Any changed migration, not only the first.
    await db.sql`update docpipe.schema_migrations set checksum = ${first.checksum} where version = ${first.version}`;
    assert.deepEqual(await migrate(db.sql), []);
    const last = migrations.at(-1)!;
    await db.sql`update docpipe.schema_migrations set checksum = 'x' where version = ${last.version}`;
    await assert.rejects(migrate(db.sql), (err: unknown) => err instanceof MigrationChecksumError && err.version === last.version);
  });
});
