// Versioned SQL migrations: `src/db/migrations/NNN_name.sql`, applied once each, each in its own
// transaction, recorded in docpipe.schema_migrations with a checksum. A transaction-scoped
// advisory lock serialises concurrent runners (two machines of a deploy starting at once);
// unlike a session lock it also works through Supavisor's transaction mode.
// A migration cannot read the configuration; what it needs of it the runner sets as settings of
// the migration's transaction, read with current_setting(name, true):
//   docpipe.embedding_dimensions  EMBEDDING_DIMENSIONS (005: the size of the pgvector column)
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sql } from './client.ts';

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');
// Any constant works; it only has to be the same in every process.
const LOCK_KEY = 7_114_202_601;

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export class MigrationChecksumError extends Error {
  readonly code = 'MIGRATION_CHECKSUM_MISMATCH';
  constructor(readonly version: number, readonly migrationName: string) {
    super(`migration ${version} (${migrationName}) was changed after it was applied; add a new migration instead`);
    this.name = 'MigrationChecksumError';
  }
}

export async function loadMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_[\w-]+\.sql$/.test(f)).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const sql = await readFile(path.join(dir, file), 'utf8');
    const version = Number(file.slice(0, file.indexOf('_')));
    if (migrations.some((m) => m.version === version)) throw new Error(`duplicate migration version ${version}`);
    migrations.push({ version, name: file.replace(/\.sql$/, ''), sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

async function ensureLedger(sql: Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
    await tx`create schema if not exists docpipe`;
    await tx`
      create table if not exists docpipe.schema_migrations (
        version integer primary key,
        name text not null,
        checksum text not null,
        applied_at timestamptz not null default now()
      )`;
  });
}

export interface MigrateOptions {
  dir?: string;
  log?: (msg: string) => void;
  /** EMBEDDING_DIMENSIONS; required where pgvector is available, until migration 005 is applied. */
  embeddingDimensions?: number;
}

/** Applies pending migrations; returns the versions it applied (empty when already current). */
export async function migrate(sql: Sql, options: MigrateOptions = {}): Promise<number[]> {
  const migrations = await loadMigrations(options.dir);
  await ensureLedger(sql);
  const applied: number[] = [];
  for (const m of migrations) {
    const done = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${LOCK_KEY})`;
      const [row] = await tx<{ checksum: string }[]>`select checksum from docpipe.schema_migrations where version = ${m.version}`;
      if (row) {
        if (row.checksum !== m.checksum) throw new MigrationChecksumError(m.version, m.name);
        return false;
      }
      if (options.embeddingDimensions !== undefined) {
        await tx`select set_config('docpipe.embedding_dimensions', ${String(options.embeddingDimensions)}, true)`;
      }
      await tx.unsafe(m.sql);
      await tx`insert into docpipe.schema_migrations (version, name, checksum) values (${m.version}, ${m.name}, ${m.checksum})`;
      return true;
    });
    if (done) {
      applied.push(m.version);
      options.log?.(`applied migration ${m.name}`);
    }
  }
  return applied;
}

/** Readiness: true when every migration on disk has been applied (and none changed). */
export async function migrationsCurrent(sql: Sql, dir?: string): Promise<boolean> {
  const migrations = await loadMigrations(dir);
  const rows = await sql<{ version: number; checksum: string }[]>`
    select version, checksum from docpipe.schema_migrations`.catch(() => []);
  const applied = new Map(rows.map((r) => [r.version, r.checksum]));
  return migrations.every((m) => applied.get(m.version) === m.checksum);
}
