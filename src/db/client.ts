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
  /** Count the pool's work in flight into this object (the services' pools, for the metrics). */
  track?: PoolUse;
}

/** Whether prepared statements work over `url`: not through Supavisor's transaction mode (port 6543). */
export function canPrepare(url: string): boolean {
  return new URL(url).port !== '6543';
}

export function createSql(url: string, options: DbOptions = {}): Sql {
  const sql = postgres(url, {
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
  return options.track ? tracked(sql, options.track) : sql;
}

/** What a tracked pool reports (observability/metrics.ts, docpipe_db_pool_connections). */
export interface PoolUse {
  /** Queries dispatched and not settled, plus transactions open: each holds or awaits a connection. */
  inFlight: number;
}

/**
 * The pool with a count of its work in flight: postgres.js keeps its connection queues private,
 * so the count is taken at the two doors everything goes through. A query counts from the moment
 * it is dispatched to a connection (its handler runs) to its settling; a transaction (begin)
 * counts as one for its whole length, and the queries inside it (on the transaction's own sql)
 * do not count again. What goes past the pool's size waits for a connection.
 */
function tracked(sql: Sql, use: PoolUse): Sql {
  type Dispatchable = { handler: ((q: unknown) => unknown) & { debug?: unknown }; resolve: (x: unknown) => void; reject: (x: unknown) => void };
  const count = (query: unknown): unknown => {
    if (!(query instanceof Promise) || typeof (query as unknown as Dispatchable).handler !== 'function') return query;
    const q = query as unknown as Dispatchable;
    const handler = q.handler;
    const dispatch = Object.assign((self: unknown) => {
      use.inFlight++;
      const { resolve, reject } = q;
      let settled = false;
      const done = () => {
        if (!settled) {
          settled = true;
          use.inFlight--;
        }
      };
      q.resolve = (x) => (done(), resolve(x));
      q.reject = (x) => (done(), reject(x));
      return handler(self);
    }, { debug: handler.debug });
    q.handler = dispatch;
    return query;
  };
  return new Proxy(sql, {
    apply(target, thisArg, args) {
      return count(Reflect.apply(target, thisArg, args));
    },
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (property === 'unsafe') return (...args: unknown[]) => count((value as (...a: unknown[]) => unknown)(...args));
      if (property === 'begin') {
        return async (...args: unknown[]) => {
          use.inFlight++;
          try {
            return await (value as (...a: unknown[]) => Promise<unknown>)(...args);
          } finally {
            use.inFlight--;
          }
        };
      }
      return value;
    },
  });
}

/** True when the error is Postgres' unique_violation on the named constraint (or any, if none named). */
/**
 * Rows as one parameter, for `jsonb_to_recordset(${jsonRows(tx, rows)}::jsonb)` and its kin:
 * a multi-row write whose statement text is the same whatever the count, so every connection
 * prepares it once (a new text costs a describe round trip, and a plan). Sent as text (bigint
 * values as their digits) and cast by the statement.
 */
export function jsonRows(db: Db, rows: readonly object[]) {
  return db.typed(JSON.stringify(rows, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value)), 25);
}

export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  const e = err as { code?: string; constraint_name?: string };
  return e?.code === '23505' && (constraint === undefined || e.constraint_name === constraint);
}
