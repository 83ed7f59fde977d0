import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createDatabase } from '../helpers/db.ts';

test('each test file gets its own migrated database', async () => {
  const db = await createDatabase();
  const [row] = await db.sql`select current_database() as name, count(*)::int as n from docpipe.schema_migrations`;
  assert.equal(row!.name, db.name);
  assert.ok(row!.n >= 2);
});
