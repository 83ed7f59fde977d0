// Rollback is safe by construction only if the previous image keeps working against the schema
// the new image migrated to: within a release, migrations only expand. A deploy runs
// `docpipe migrate` (the api's release command) before any machine changes, and a rollback
// (docs/DEPLOY.md, "Rolling back") redeploys the previous image without undoing a migration. So a
// migration must not remove, rename or retype anything, nor tighten what the previous code may
// write, unless it carries a line
//
//   -- contract: <why the code of the previous release no longer needs what this removes>
//
// which belongs in a release after the one whose code stopped using it (expand, then contract).
// The other half of the bargain, that the previous image's `migrate` and /readyz accept a
// ledger with versions they do not know, is tested here too, on a real database.
//
// What counts as contracting, and why:
// - DROP of anything (table, view, column, function, trigger, type, default, ...): the previous
//   code may use it. DROP NOT NULL is the one exception: it only relaxes.
// - DROP CONSTRAINT and DROP INDEX too. A unique constraint or index is what ON CONFLICT infers
//   (webhook de-duplication, idempotency keys) and what makes two appends at one stream version
//   collide (events_stream_version_unique): dropping one makes the previous code fail, or
//   silently lose a guarantee. A statement does not say whether an index is unique; a
//   non-unique one is harmless but for speed, and then the reason line costs one line.
// - RENAME (table, column, constraint, index, type value): the previous code uses the old name.
// - ALTER COLUMN ... TYPE / SET DATA TYPE: the previous code reads and writes the old type.
// - ALTER COLUMN ... SET NOT NULL, and ADD COLUMN ... NOT NULL without a DEFAULT: the previous
//   code's inserts, which do not know the column or may write NULL, would be refused.
// Not checked: ADD CONSTRAINT (CHECK, UNIQUE, FOREIGN KEY) and CREATE UNIQUE INDEX on an
// existing table can also refuse the previous code's writes; whether they do depends on what
// that code writes, which no statement shows. Review them as such (NOT VALID, then VALIDATE
// in a later release). Data-level compatibility (new event types or job payloads that the
// previous code cannot fold) is not a schema question either.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadMigrations, migrate, migrationsCurrent } from '../../src/db/migrate.ts';
import { createDatabase } from '../helpers/db.ts';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../src/db/migrations/', import.meta.url));

const CONTRACT_LINE = /^\s*--\s*contract:(.*)$/im;

/**
 * The SQL's statements, lower-cased, whitespace collapsed, with comments removed and the
 * contents of string literals and quoted identifiers blanked (a literal 'drop table' is data).
 * Dollar-quoted bodies are kept and split like the rest: a DO block runs at migration time,
 * so what it contains counts.
 */
function statements(sql: string): string[] {
  const out: string[] = [];
  let current = '';
  let i = 0;
  const flush = () => {
    const s = current.replace(/\s+/g, ' ').trim().toLowerCase();
    if (s) out.push(s);
    current = '';
  };
  while (i < sql.length) {
    const ch = sql[i]!;
    const next = sql[i + 1];
    if (ch === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      i = end === -1 ? sql.length : end;
      current += ' ';
    } else if (ch === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < sql.length && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') (depth++, (i += 2));
        else if (sql[i] === '*' && sql[i + 1] === '/') (depth--, (i += 2));
        else i++;
      }
      current += ' ';
    } else if (ch === "'" || ch === '"') {
      // '' (or "") inside the quotes is an escaped quote: skipping both keeps us inside.
      i++;
      while (i < sql.length) {
        if (sql[i] === ch && sql[i + 1] === ch) i += 2;
        else if (sql[i] === ch) break;
        else i++;
      }
      i++;
      current += ch === "'" ? "''" : '"q"';
    } else if (ch === '$' && /^\$[A-Za-z_]*\$/.test(sql.slice(i))) {
      // A dollar quote's delimiter: dropped, its body scanned as SQL.
      const tag = /^\$[A-Za-z_]*\$/.exec(sql.slice(i))![0];
      i += tag.length;
      current += ' ';
    } else if (ch === ';') {
      flush();
      i++;
    } else {
      current += ch;
      i++;
    }
  }
  flush();
  return out;
}

/** The actions of an ALTER TABLE statement, split at top-level commas. */
function alterTableActions(statement: string): string[] {
  const at = /\balter table (?:if exists )?(?:only )?\S+ (.*)$/.exec(statement);
  if (!at) return [];
  const actions: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of at[1]!) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      actions.push(current.trim());
      current = '';
    } else current += ch;
  }
  actions.push(current.trim());
  return actions;
}

interface Contraction {
  rule: 'drop' | 'rename' | 'retype' | 'not-null';
  statement: string;
}

/** Every contracting statement of a migration (see the header for the rules). */
function contractions(sql: string): Contraction[] {
  const found: Contraction[] = [];
  for (const statement of statements(sql)) {
    const withoutDropNotNull = statement.replace(/\bdrop not null\b/g, '');
    if (/\bdrop\b/.test(withoutDropNotNull)) found.push({ rule: 'drop', statement });
    if (/\brename\b/.test(statement)) found.push({ rule: 'rename', statement });
    if (/\balter (?:column )?(?:if exists )?\S+ (?:set data )?type\b/.test(statement)) found.push({ rule: 'retype', statement });
    const tightens =
      /\bset not null\b/.test(statement) ||
      alterTableActions(statement).some(
        (action) =>
          /^add\b/.test(action) &&
          !/^add (?:constraint|primary|unique|check|foreign|exclude)\b/.test(action) &&
          /\bnot null\b/.test(action) &&
          !/\b(?:default|generated)\b/.test(action),
      );
    if (tightens) found.push({ rule: 'not-null', statement });
  }
  return found;
}

/** Problems of one migration: contractions, unless it carries a `-- contract: <reason>` line. */
function checkMigration(name: string, sql: string): string[] {
  const found = contractions(sql);
  if (found.length === 0) return [];
  const line = CONTRACT_LINE.exec(sql);
  if (line && line[1]!.trim().length > 0) return [];
  const why = line ? ' (its `-- contract:` line gives no reason)' : '';
  return found.map(
    (c) =>
      `${name}: ${c.rule} is not expand-only${why}: "${c.statement.slice(0, 160)}". The previous image must keep working ` +
      'against the new schema (a rollback does not undo migrations); contract in a later release, with a `-- contract: <reason>` line.',
  );
}

describe('migrations are expand-only', () => {
  test('every migration on disk expands, or carries a `-- contract:` line with a reason', async () => {
    const migrations = await loadMigrations();
    assert.ok(migrations.length >= 3, 'the migrations were found');
    const problems = migrations.flatMap((m) => checkMigration(m.name, m.sql));
    assert.deepEqual(problems, []);
  });

  test('every .sql file in the directory is one that migrate() applies (a misnamed file would be skipped silently)', async () => {
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql'));
    const loaded = new Set((await loadMigrations()).map((m) => `${m.name}.sql`));
    assert.deepEqual(files.filter((f) => !loaded.has(f)), [], `not NNN_name.sql in ${path.relative(process.cwd(), MIGRATIONS_DIR)}`);
  });
});

describe('the previous image against a newer ledger', () => {
  // A rollback redeploys the api's previous image, whose release command runs its own
  // `migrate`, and whose /readyz asks migrationsCurrent: both must accept the versions a newer
  // image applied, which they do not know.
  test('migrate() of an older image is a no-op and migrationsCurrent() holds', async () => {
    const db = await createDatabase({ migrate: true });
    await db.sql`insert into docpipe.schema_migrations (version, name, checksum) values (9999, '9999_from_a_newer_image', 'x')`;
    assert.deepEqual(await migrate(db.sql), []);
    assert.equal(await migrationsCurrent(db.sql), true);
  });
});

describe('the checker', () => {
  const flagged: [string, Contraction['rule'], string][] = [
    ['drop table', 'drop', 'drop table docpipe.events;'],
    ['drop table if exists', 'drop', 'DROP TABLE IF EXISTS docpipe.pending_uploads CASCADE;'],
    ['drop column', 'drop', 'alter table docpipe.document_status drop column error_code;'],
    ['drop column without COLUMN', 'drop', 'ALTER TABLE docpipe.document_status\n  DROP error_code;'],
    ['drop column among other actions', 'drop', 'alter table docpipe.document_status add column note text, drop column error_code;'],
    ['drop constraint', 'drop', 'alter table docpipe.events drop constraint events_stream_version_unique;'],
    ['drop index', 'drop', 'drop index docpipe.events_transaction_position_idx;'],
    ['drop default', 'drop', 'alter table docpipe.events alter column created_at drop default;'],
    ['drop view', 'drop', 'drop materialized view docpipe.stats;'],
    ['drop function', 'drop', 'drop function docpipe.refuse_event_mutation() cascade;'],
    ['drop inside a DO block', 'drop', "do $$ begin execute 'x'; alter table docpipe.events drop column data; end $$;"],
    ['rename table', 'rename', 'alter table docpipe.events rename to event_log;'],
    ['rename column', 'rename', 'ALTER TABLE docpipe.document_status RENAME COLUMN error_code TO error;'],
    ['rename constraint', 'rename', 'alter table docpipe.events rename constraint events_stream_version_unique to events_version_key;'],
    ['rename index', 'rename', 'alter index docpipe.events_transaction_position_idx rename to events_tx_idx;'],
    ['retype', 'retype', 'alter table docpipe.document_status alter column progress type integer;'],
    ['retype without COLUMN', 'retype', 'alter table docpipe.document_status alter progress type integer using progress::integer;'],
    ['set data type', 'retype', 'alter table docpipe.document_status alter column progress set data type integer;'],
    ['set not null', 'not-null', 'alter table docpipe.document_status alter column parser_job_id set not null;'],
    ['add a NOT NULL column without a default', 'not-null', 'alter table docpipe.document_status add column tenant text not null;'],
  ];
  for (const [what, rule, sql] of flagged) {
    test(`flags ${what}`, () => {
      assert.ok(
        contractions(sql).some((c) => c.rule === rule),
        `${rule} expected in ${JSON.stringify(contractions(sql))}`,
      );
      const problems = checkMigration('004_sample', sql);
      assert.ok(problems.length > 0);
      assert.match(problems[0]!, /^004_sample: .* is not expand-only/);
    });
  }

  const allowed: [string, string][] = [
    ['create table and index', 'create table docpipe.t (id uuid primary key, note text);\ncreate index t_note_idx on docpipe.t (note);'],
    ['add a nullable column', 'alter table docpipe.document_status add column parser_job_id text;'],
    ['add several nullable columns', 'alter table docpipe.document_status\n  add column a text,\n  add column b integer;'],
    ['add a NOT NULL column with a default', "alter table docpipe.document_status add column tenant text not null default 'default';"],
    ['drop not null (relaxes)', 'alter table docpipe.document_status alter column sha256 drop not null;'],
    ['add a value to an enum type', "alter type docpipe.status add value 'archived';"],
    ['keywords in comments and literals', "-- we never drop or rename anything here\n/* alter column x type int */\ncreate table docpipe.t (note text default 'drop table x; rename', \"drop\" text);"],
    ['a function whose message says refused', "create function docpipe.f() returns trigger language plpgsql as $$\nbegin\n  raise exception 'append-only (% refused)', tg_op;\nend $$;"],
  ];
  for (const [what, sql] of allowed) {
    test(`allows ${what}`, () => {
      assert.deepEqual(contractions(sql), []);
      assert.deepEqual(checkMigration('004_sample', sql), []);
    });
  }

  test('a `-- contract:` line with a reason allows a contraction; one without a reason does not', () => {
    const sql = 'alter table docpipe.document_status drop column error_code;';
    assert.deepEqual(checkMigration('009_drop', `-- contract: error_code unused since release 12 (replaced by error, migration 007)\n${sql}`), []);
    const bare = checkMigration('009_drop', `-- contract:\n${sql}`);
    assert.equal(bare.length, 1);
    assert.match(bare[0]!, /gives no reason/);
  });

  test('statements are split at semicolons outside quotes and comments', () => {
    assert.deepEqual(statements("select 'a;b'; -- c;d\nselect 2 /* ; */;"), ["select ''", 'select 2']);
  });
});
