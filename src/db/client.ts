// The postgres.js client. One pool per process; every docpipe table lives in the `docpipe`
// schema and is always schema-qualified in SQL, so the search_path does not matter.
import postgres from 'postgres';

export type Sql = postgres.Sql;
/** A pool or a transaction: anything that can run a query. */
export type Db = postgres.Sql | postgres.TransactionSql;

export interface DbOptions {
  max?: number;
  /** Supavisor transaction mode (port 6543) cannot use prepared statements. */
  prepare?: boolean;
  applicationName?: string;
}

/** Whether prepared statements work over `url`: not through Supavisor's transaction mode (port 6543). */
export function canPrepare(url: string): boolean {
  return new URL(url).port !== '6543';
}

export function createSql(url: string, options: DbOptions = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    prepare: options.prepare ?? canPrepare(url),
    idle_timeout: 60,
    connect_timeout: 10,
    onnotice: () => {},
    connection: { application_name: options.applicationName ?? 'docpipe' },
    types: {
      // bigint columns arrive as native BigInt; callers convert with Number() where they
      // serialise (positions and sizes stay far below 2^53).
      bigint: postgres.BigInt,
    },
    transform: { undefined: null },
  });
}

/** True when the error is Postgres' unique_violation on the named constraint (or any, if none named). */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: string; constraint_name?: string };
  return e?.code === '23505' && (constraint === undefined || e.constraint_name === constraint);
}
