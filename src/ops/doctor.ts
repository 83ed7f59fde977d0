// `docpipe doctor`: checks an environment against the services it names and reports line by
// line, with a fix for every failure. Run it with the production variables from a laptop, or on
// a machine: fly ssh console -a APP -C "node /app/dist/src/cli.js doctor --api 2 --worker 3 --webhook 2".
//
// Each check is a small function returning a CheckResult; a check that cannot run says why
// (skipped), and only failures make the exit code non-zero. An invalid variable does not stop
// the others: the configuration check names it and the checks that depend on it are skipped, so
// one run shows every problem at once. Network calls are bounded and cost nothing, or next to
// nothing: one job lookup at LlamaCloud, one embedding of two words at OpenAI, one tiny object
// written to and removed from the bucket.
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { createSql, type Sql } from '../db/client.ts';
import { loadMigrations } from '../db/migrate.ts';
import { acceptsDimensions } from '../providers/embedder/openai.ts';
import { createStorage } from '../providers/index.ts';
import { ProviderError } from '../providers/types.ts';
import { BOSS_POOL_MAX } from '../queue/boss.ts';

export interface CheckResult {
  name: string;
  /** True for a pass and for a skip: only failures count against the verdict. */
  ok: boolean;
  /** The check did not run; `detail` says why. */
  skipped?: boolean;
  detail: string;
  /** What to do about a failure. */
  fix?: string;
}

/** Machines per Fly app, for the connection budget. */
export interface Machines {
  api: number;
  worker: number;
  webhook: number;
}

export interface DoctorOptions {
  env?: NodeJS.ProcessEnv;
  machines?: Partial<Machines>;
  /** Bound of each network call (default 10 s). */
  timeoutMs?: number;
  /** The migrations this build ships (tests point it elsewhere). */
  migrationsDir?: string;
}

export const DEFAULT_MACHINES: Machines = { api: 1, worker: 1, webhook: 1 };

/**
 * pg-boss's pool in every service process: startBoss's default (src/queue/boss.ts), which
 * openRuntime does not override. Keep the two in step.
 */

/** Connections of a one-off command that may overlap the services: `docpipe migrate` in the release machine, or this doctor. */
const ONE_OFF_CONNECTIONS = 2;
const SUPABASE_DASHBOARD = 'Supabase dashboard';

export const DOCTOR_USAGE = `usage: docpipe doctor [--api N] [--worker N] [--webhook N]

Checks this environment's configuration against the services it names and prints one line per
check, with a fix under each failure. --api, --worker and --webhook are the machine counts of
each Fly app (default 1 each) for the connection budget. Exit code 0 when every check passes.
`;

/** The doctor's flags: machine counts, or 'help'. Throws with a message that names the bad flag. */
export function parseDoctorArgs(args: string[]): Machines | 'help' {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: { api: { type: 'string' }, worker: { type: 'string' }, webhook: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) return 'help';
  if (positionals.length > 0) throw new Error(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const count = (flag: keyof Machines): number => {
    const raw = values[flag];
    if (raw === undefined) return DEFAULT_MACHINES[flag];
    if (!/^\d{1,4}$/.test(raw)) throw new Error(`--${flag} must be a number of machines (0 or more), got ${JSON.stringify(raw)}`);
    return Number(raw);
  };
  return { api: count('api'), worker: count('worker'), webhook: count('webhook') };
}

const pass = (name: string, detail: string): CheckResult => ({ name, ok: true, detail });
const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, ok: false, detail, fix });
const skip = (name: string, detail: string): CheckResult => ({ name, ok: true, skipped: true, detail });

/** Runs every check, in the order they are reported. Never throws for what it checks. */
export async function runDoctor(options: DoctorOptions = {}): Promise<CheckResult[]> {
  const env = options.env ?? process.env;
  const machines = { ...DEFAULT_MACHINES, ...options.machines };
  const timeoutMs = options.timeoutMs ?? 10_000;
  const loaded = loadLeniently(env);
  const results: CheckResult[] = [configurationCheck(loaded)];
  const { config } = loaded;
  const invalid = (...names: string[]) => names.find((n) => loaded.invalid.has(n));

  const db = await databaseCheck(env, config, invalid, timeoutMs).catch((err: unknown): DbState => {
    const why = 'the database check failed (see database)';
    return { result: fail('database', `the check itself failed: ${(err as Error)?.message ?? String(err)}`, 'check DATABASE_URL, then run the doctor again'), sql: null, url: null, unavailable: why };
  });
  results.push(db.result);
  try {
    results.push(await safely('session mode', () => sessionModeCheck(db, timeoutMs)));
    results.push(await safely('migrations', () => migrationsCheck(db, options.migrationsDir, timeoutMs)));
    results.push(await safely('connection budget', () => connectionBudgetCheck(db, config, machines, timeoutMs)));
    // The providers are independent of each other and of the database: ask them all at once.
    const remote = await Promise.all([
      safely('storage', () => storageCheck(env, config, invalid, timeoutMs)),
      safely('llamaparse key', () => llamaParseCheck(env, config, invalid, timeoutMs)),
      safely('openai key', () => openAICheck(env, config, invalid, timeoutMs)),
    ]);
    results.push(remote[0], await safely('jwt', async () => jwtCheck(env)), remote[1], remote[2], await safely('webhook url', async () => webhookUrlCheck(env, config, invalid)));
  } finally {
    await db.sql?.end({ timeout: 2 }).catch(() => {});
  }
  return results;
}

// --- configuration -------------------------------------------------------------------------

interface Loaded {
  /** The configuration, with every invalid variable set back to its default (null if even that fails). */
  config: Config | null;
  problems: string[];
  /** Variables named by a problem: checks that depend on them are skipped. */
  invalid: Set<string>;
}

/** A stand-in that passes validation; the jwt check reads the real JWT_SECRET from the environment. */
const PLACEHOLDER_SECRET = 'docpipe-doctor-placeholder-secret-0123456789';

function loadLeniently(env: NodeJS.ProcessEnv): Loaded {
  const invalid = new Set<string>();
  let problems: string[] = [];
  const lenient: NodeJS.ProcessEnv = { ...env };
  for (let round = 0; round < 8; round++) {
    try {
      return { config: loadConfig(lenient), problems, invalid };
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      if (round === 0) problems = err.problems;
      let changed = false;
      for (const problem of err.problems) {
        // Every problem starts with the variable it is about ("JWT_SECRET: ...",
        // "DOCPIPE_PARSER=llamaparse needs ..."); that one falls back to its default.
        const name = /^[A-Z][A-Z0-9_]*/.exec(problem)?.[0];
        if (!name) continue;
        invalid.add(name);
        if (name === 'JWT_SECRET' && lenient.JWT_SECRET !== PLACEHOLDER_SECRET) {
          // Required with DATABASE_URL: removing it would only trade one problem for another.
          lenient.JWT_SECRET = PLACEHOLDER_SECRET;
          changed = true;
        } else if (name !== 'JWT_SECRET' && lenient[name] !== undefined) {
          delete lenient[name];
          changed = true;
        }
      }
      if (!changed) break;
    }
  }
  return { config: null, problems, invalid };
}

function configurationCheck({ config, problems }: Loaded): CheckResult {
  if (problems.length > 0) {
    return fail('configuration', problems.join('; '), 'set the variables named above (`docpipe env-example` lists every variable with its meaning); the services refuse to start until they are valid');
  }
  const c = config!;
  return pass('configuration', `valid: storage ${c.storage.kind}, parser ${c.parser.kind}, embedder ${c.embedder.kind}`);
}

// --- database ------------------------------------------------------------------------------

interface DbState {
  result: CheckResult;
  sql: Sql | null;
  url: URL | null;
  /** Why the checks that need the database cannot run, when they cannot. */
  unavailable: string | null;
}

/** Where a URL points, without its password. */
function describeUrl(url: URL): string {
  return `${decodeURIComponent(url.username) || '(no user)'}@${url.hostname}:${url.port || '5432'}${url.pathname}`;
}

async function databaseCheck(env: NodeJS.ProcessEnv, config: Config | null, invalid: (...n: string[]) => string | undefined, timeoutMs: number): Promise<DbState> {
  const name = 'database';
  if (invalid('DATABASE_URL')) {
    const why = 'DATABASE_URL is invalid (see configuration)';
    return { result: skip(name, why), sql: null, url: null, unavailable: why };
  }
  if (!config?.databaseUrl) {
    if (env.DATABASE_URL) {
      const why = 'the configuration is invalid (see configuration)';
      return { result: skip(name, why), sql: null, url: null, unavailable: why };
    }
    // A failure, not a skip: the doctor checks a deployment, and "all checks passed" from a shell
    // where the production variables were not exported would be a false all-clear.
    return {
      result: fail(name, 'DATABASE_URL is not set (the services would start an embedded PostgreSQL: local development, not a deployment)', 'export the production variables first, or run the doctor on a machine: fly ssh console -a APP -C "node /app/dist/src/cli.js doctor"'),
      sql: null,
      url: null,
      unavailable: 'no DATABASE_URL to check (see database)',
    };
  }
  const url = new URL(config.databaseUrl);
  const sql = createSql(config.databaseUrl, { max: 2, applicationName: 'docpipe-doctor' });
  try {
    const [row] = await within(timeoutMs, sql<{ version: string; user: string }[]>`select current_setting('server_version') as version, current_user as user`, 'the database did not answer');
    return { result: pass(name, `reachable: PostgreSQL ${row!.version} at ${describeUrl(url)}`), sql, url, unavailable: null };
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => {});
    const { detail, fix } = explainDatabaseError(err, url);
    return { result: fail(name, detail, fix), sql: null, url, unavailable: 'the database is not reachable (see database)' };
  }
}

function explainDatabaseError(err: unknown, url: URL): { detail: string; fix: string } {
  const e = err as { code?: string; message?: string };
  const where = describeUrl(url);
  const message = e.message ?? String(err);
  const copyUrl = `copy the URL again (${SUPABASE_DASHBOARD} → Connect → Session pooler, or Direct connection)`;
  switch (e.code) {
    case '28P01':
      return { detail: `password authentication failed at ${where}`, fix: `the password in DATABASE_URL is wrong: ${copyUrl}, and percent-encode special characters in the password (@ → %40, # → %23, / → %2F)` };
    case '3D000':
      return { detail: `${message} at ${where}`, fix: "the database name is the URL's path: Supabase's is /postgres" };
    case '28000':
      return { detail: `${message} at ${where}`, fix: 'check the user name in DATABASE_URL: through Supavisor it is postgres.<project ref>, directly it is postgres' };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { detail: `host ${url.hostname} does not resolve`, fix: `check the host in DATABASE_URL (${copyUrl}); the direct host db.<ref>.supabase.co has only an IPv6 address: from an IPv4-only network use the session pooler, <region>.pooler.supabase.com:5432` };
    case 'ENETUNREACH':
    case 'EHOSTUNREACH':
      return { detail: `${url.hostname} is unreachable from this network (${e.code})`, fix: 'the direct host db.<ref>.supabase.co is IPv6-only: from an IPv4-only network use the session pooler URL (<region>.pooler.supabase.com:5432); Fly machines have IPv6' };
    case 'ECONNREFUSED':
      return { detail: `nothing accepts connections at ${url.hostname}:${url.port || '5432'}`, fix: 'check the host and port in DATABASE_URL: 5432 for a direct or session-pooler URL' };
    case 'CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
    case 'DOCTOR_TIMEOUT':
      return { detail: `no answer from ${url.hostname}:${url.port || '5432'} (${e.code})`, fix: 'check the host and port, that this network may reach them (firewalls; the direct host is IPv6-only), and that the project is not paused' };
    default:
      if (/tenant or user not found/i.test(message)) {
        return { detail: `Supavisor: ${message} (${where})`, fix: 'through the pooler the user is postgres.<project ref> and the host must be the project\'s region: copy the session pooler URL from the dashboard (Connect)' };
      }
      if (/password must be a string|SASL/i.test(message)) {
        return { detail: `${message} (${where})`, fix: `DATABASE_URL has no usable password: ${copyUrl}` };
      }
      return { detail: `${message} (${where})`, fix: `check DATABASE_URL: ${copyUrl}` };
  }
}

async function sessionModeCheck(db: DbState, timeoutMs: number): Promise<CheckResult> {
  const name = 'session mode';
  if (db.url?.port === '6543') {
    return fail(
      name,
      'DATABASE_URL uses port 6543, Supavisor\'s transaction mode: no LISTEN/NOTIFY (job pickup and long-polls fall back to slow polling), no prepared statements, no session state',
      'use the session-mode URL: the same pooler host on port 5432 (Connect → Session pooler), or the direct connection db.<ref>.supabase.co:5432',
    );
  }
  if (!db.sql) return skip(name, db.unavailable!);
  const channel = `docpipe_doctor_${randomBytes(6).toString('hex')}`;
  let heard: (payload: string) => void = () => {};
  const notified = new Promise<string>((resolve) => (heard = resolve));
  try {
    const subscription = await within(timeoutMs, db.sql.listen(channel, (payload) => heard(payload)), 'LISTEN did not answer');
    try {
      await within(timeoutMs, db.sql`select pg_notify(${channel}, 'ping')`, 'NOTIFY did not answer');
      await within(Math.min(timeoutMs, 5_000), notified, 'no notification arrived');
    } finally {
      await subscription.unlisten().catch(() => {});
    }
    return pass(name, 'LISTEN/NOTIFY works: a session-mode or direct connection');
  } catch (err) {
    return fail(
      name,
      `LISTEN/NOTIFY does not work over DATABASE_URL: ${(err as Error).message}; a transaction-mode pooler drops LISTEN`,
      'use a session-mode URL (Supavisor port 5432) or the direct connection; pg-boss and long-polls need LISTEN',
    );
  }
}

async function migrationsCheck(db: DbState, dir: string | undefined, timeoutMs: number): Promise<CheckResult> {
  const name = 'migrations';
  if (!db.sql) return skip(name, db.unavailable!);
  const shipped = await loadMigrations(dir);
  let rows: { version: number; name: string; checksum: string }[];
  try {
    rows = await within(timeoutMs, db.sql<{ version: number; name: string; checksum: string }[]>`select version, name, checksum from docpipe.schema_migrations order by version`, 'the database did not answer');
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== '42P01' && code !== '3F000') return fail(name, `cannot read docpipe.schema_migrations: ${(err as Error).message}`, 'check that the DATABASE_URL user may read the docpipe schema');
    rows = []; // a database docpipe never migrated
  }
  const applied = new Map(rows.map((r) => [r.version, r]));
  const pending = shipped.filter((m) => !applied.has(m.version));
  const changed = shipped.filter((m) => applied.has(m.version) && applied.get(m.version)!.checksum !== m.checksum);
  const unknown = rows.filter((r) => !shipped.some((m) => m.version === r.version));
  if (changed.length > 0) {
    return fail(name, `migration${changed.length > 1 ? 's' : ''} ${changed.map((m) => m.name).join(', ')} changed after ${changed.length > 1 ? 'they were' : 'it was'} applied`, 'restore the migration file as it was applied and put the change in a new migration');
  }
  if (pending.length > 0) {
    return fail(
      name,
      `${pending.length} pending: ${pending.map((m) => m.name).join(', ')} (${rows.length} applied)`,
      'run `docpipe migrate` with this DATABASE_URL (on Fly: fly ssh console -a API_APP -C "node /app/dist/src/cli.js migrate"), or deploy again so the release command runs it',
    );
  }
  const newer = unknown.length > 0 ? `; the database also has ${unknown.map((r) => r.name).join(', ')}, which this build does not know (it is older than the database)` : '';
  return pass(name, `current: ${shipped.length} applied${newer}`);
}

/** Connections one process of each service may open, and why. */
export function connectionsPerProcess(poolMax: number): Record<keyof Machines, number> {
  // The postgres.js pool, pg-boss's pool and pg-boss's LISTEN connection in every process; the
  // api also LISTENs for long-polls on a connection of its own.
  const base = poolMax + BOSS_POOL_MAX + 1;
  return { api: base + 1, worker: base, webhook: base };
}

async function connectionBudgetCheck(db: DbState, config: Config | null, machines: Machines, timeoutMs: number): Promise<CheckResult> {
  const name = 'connection budget';
  if (!db.sql || !config) return skip(name, db.unavailable ?? 'the configuration is invalid (see configuration)');
  type Usage = { max: number; superuser: number; reserved: number; others: number; docpipe: number };
  let row: Usage;
  try {
    const rows = await within(
      timeoutMs,
      db.sql<Usage[]>`
        select current_setting('max_connections')::int as max,
               current_setting('superuser_reserved_connections')::int as superuser,
               coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int as reserved,
               count(*) filter (where not mine and not docpipe)::int as others,
               count(*) filter (where docpipe and not mine)::int as docpipe
          from (select coalesce(application_name, '') = 'docpipe-doctor' as mine,
                       coalesce(application_name, '') like 'docpipe-%' as docpipe
                  from pg_stat_activity
                 where coalesce(backend_type, 'client backend') = 'client backend') as client`,
      'the database did not answer',
    );
    row = rows[0]!;
  } catch (err) {
    return fail(name, `cannot read max_connections and pg_stat_activity: ${(err as Error).message}`, 'run the doctor as a user that may read pg_stat_activity (on Supabase: postgres)');
  }
  const per = connectionsPerProcess(config.databasePoolMax);
  const processes = machines.api + machines.worker + machines.webhook;
  const services = (['api', 'worker', 'webhook'] as const).filter((s) => machines[s] > 0);
  const planned = services.reduce((sum, s) => sum + machines[s] * per[s], 0) + ONE_OFF_CONNECTIONS;
  const available = row.max - row.superuser - row.reserved - row.others;
  const plan = services.map((s) => `${machines[s]} ${s} × ${per[s]}`).join(' + ');
  const detail =
    `docpipe may open ${planned} (${plan || 'no machines'} + ${ONE_OFF_CONNECTIONS} for migrate/doctor; per process DATABASE_POOL_MAX ${config.databasePoolMax} + pg-boss ${BOSS_POOL_MAX} + LISTEN) ` +
    `of ${available} available (max_connections ${row.max} − ${row.superuser + row.reserved} reserved − ${row.others} used by other clients; docpipe holds ${row.docpipe} now)` +
    (db.url?.hostname.endsWith('pooler.supabase.com') ? "; Supavisor's session mode is also capped by the project's pool size" : '');
  if (planned <= available) return pass(name, detail);
  const fixed = services.reduce((sum, s) => sum + machines[s] * (per[s] - config.databasePoolMax), 0) + ONE_OFF_CONNECTIONS;
  const fits = processes > 0 ? Math.floor((available - fixed) / processes) : 0;
  return fail(
    name,
    detail,
    `${fits >= 1 ? `set DATABASE_POOL_MAX=${fits} (it fits), ` : ''}run fewer machines, or raise max_connections (on Supabase a larger compute size raises it); a bluegreen deploy runs a second set of machines for a while, so keep room for it`,
  );
}

// --- providers -----------------------------------------------------------------------------

async function storageCheck(env: NodeJS.ProcessEnv, config: Config | null, invalid: (...n: string[]) => string | undefined, timeoutMs: number): Promise<CheckResult> {
  const name = 'storage';
  const bad = invalid('DOCPIPE_STORAGE', 'SUPABASE_URL', 'SUPABASE_SERVICE_ROLE_KEY', 'SUPABASE_STORAGE_BUCKET', 'SUPABASE_TIMEOUT_SECONDS', 'STORAGE_DIR');
  if (bad || !config) return skip(name, `${bad ?? 'the configuration'} is invalid (see configuration)`);
  const s = config.storage;
  const where = s.kind === 'supabase' ? `bucket "${s.bucket}" at ${s.url}` : `directory ${s.dir}`;
  // Storage checks sign nothing: a throwaway key spares reading or creating the development secret.
  const storage = createStorage(config, randomBytes(32));
  const key = `doctor-probe-${randomUUID()}`;
  try {
    await within(timeoutMs, storage.check(), 'the storage did not answer');
    const probe = Buffer.from('docpipe doctor\n');
    await within(timeoutMs, storage.put(key, Readable.from([probe]), { contentType: 'text/plain', size: probe.length }), 'a write did not finish');
    await within(timeoutMs, storage.deletePrefix(key), 'a delete did not finish');
  } catch (err) {
    return fail(name, `${where}: ${(err as Error).message}`, storageFix(err, s.kind));
  }
  const note = s.kind === 'fs' && env.DATABASE_URL ? ' (local to this machine: separate api and worker machines need DOCPIPE_STORAGE=supabase)' : '';
  return pass(name, `${where}: present and writable${note}`);
}

function storageFix(err: unknown, kind: string): string {
  if (kind === 'fs') return 'make the directory writable by this user, or set STORAGE_DIR to one that is';
  const code = err instanceof ProviderError ? err.code : undefined;
  // Storage refuses a wrong, garbled or expired key (AccessDenied "signature verification failed")
  // differently from a valid key without access (the anon key, row-level security).
  if (code === 'STORAGE_AUTH_FAILED') {
    return `SUPABASE_SERVICE_ROLE_KEY is not a valid key of the project in SUPABASE_URL (mistyped, another project's, or expired): copy the service_role key again (${SUPABASE_DASHBOARD}, Project Settings: API keys)`;
  }
  if (code === 'STORAGE_ACCESS_DENIED') {
    return `SUPABASE_SERVICE_ROLE_KEY must be the project's service_role key (${SUPABASE_DASHBOARD}, Project Settings: API keys), not the anon key`;
  }
  if (code === 'STORAGE_UNAVAILABLE' || code === 'STORAGE_RATE_LIMITED' || (err as { code?: string }).code === 'DOCTOR_TIMEOUT') {
    return 'check SUPABASE_URL (https://<ref>.supabase.co, no /storage/v1) and that the project is not paused; then run the doctor again';
  }
  return 'run `docpipe setup-storage` with these variables (it creates the private bucket), and check that SUPABASE_SERVICE_ROLE_KEY is the service_role key of the project in SUPABASE_URL';
}

/** A JWT: three base64url parts, the first a JSON header ("eyJ"). */
const LOOKS_LIKE_JWT = /^eyJ[\w-]*\.[\w-]+\.[\w-]+$/;

function jwtCheck(env: NodeJS.ProcessEnv): CheckResult {
  const name = 'jwt';
  const secret = env.JWT_SECRET || undefined;
  const audience = env.JWT_AUDIENCE || 'authenticated';
  const issuer = env.JWT_ISSUER || undefined;
  const supabaseUrl = (env.SUPABASE_URL || '').replace(/\/+$/, '') || undefined;
  const where = `${SUPABASE_DASHBOARD}, Project Settings: the legacy JWT secret`;
  if (!secret) {
    if (env.DATABASE_URL) return fail(name, 'JWT_SECRET is not set: no token can be verified', `set JWT_SECRET to the project's JWT secret (${where}) as a Fly secret`);
    return skip(name, 'JWT_SECRET is not set: the embedded default signs with a development secret under DOCPIPE_DATA_DIR');
  }
  if (LOOKS_LIKE_JWT.test(secret)) {
    return fail(name, 'JWT_SECRET is a JWT (the anon or service_role key?), not the secret that signs tokens', `set JWT_SECRET to the project's JWT secret (${where})`);
  }
  if (secret.length < 32) {
    return fail(name, `JWT_SECRET has ${secret.length} characters; docpipe needs at least 32, and a Supabase project's secret is longer`, `set JWT_SECRET to the project's JWT secret (${where}), not a password of your own`);
  }
  if (supabaseUrl && audience !== 'authenticated') {
    return fail(name, `JWT_AUDIENCE is ${JSON.stringify(audience)}, but Supabase signs user tokens with aud "authenticated": every request would answer 401`, 'unset JWT_AUDIENCE (the default is authenticated)');
  }
  if (issuer === 'supabase') {
    return fail(name, 'JWT_ISSUER is "supabase", the iss of the anon and service_role keys; user tokens carry https://<ref>.supabase.co/auth/v1', `set JWT_ISSUER=${supabaseUrl ? `${supabaseUrl}/auth/v1` : 'https://<ref>.supabase.co/auth/v1'}, or unset it`);
  }
  if (supabaseUrl) {
    const expected = `${supabaseUrl}/auth/v1`;
    if (issuer !== undefined && issuer.replace(/\/+$/, '') !== expected) {
      return fail(name, `JWT_ISSUER is ${issuer}, but the project in SUPABASE_URL issues tokens as ${expected}: every request would answer 401`, `set JWT_ISSUER=${expected}`);
    }
    if (issuer === undefined) return pass(name, `secret set (${secret.length} characters), aud ${audience}; JWT_ISSUER is not set, so iss is not checked (stricter: JWT_ISSUER=${expected})`);
  } else if (issuer !== undefined && !/^https:\/\/[^/]+\/auth\/v1\/?$/.test(issuer)) {
    return fail(name, `JWT_ISSUER ${issuer} does not look like a Supabase issuer (https://<ref>.supabase.co/auth/v1)`, 'set JWT_ISSUER to the iss claim of your tokens, or unset it');
  }
  return pass(name, `secret set (${secret.length} characters), aud ${audience}, iss ${issuer ?? 'not checked'}`);
}

async function llamaParseCheck(env: NodeJS.ProcessEnv, config: Config | null, invalid: (...n: string[]) => string | undefined, timeoutMs: number): Promise<CheckResult> {
  const name = 'llamaparse key';
  const bad = invalid('DOCPIPE_PARSER', 'LLAMAPARSE_API_KEY', 'LLAMAPARSE_BASE_URL');
  if (bad) return skip(name, `${bad} is invalid (see configuration)`);
  const parser = config?.parser;
  if (parser?.kind !== 'llamaparse') return skip(name, env.DOCPIPE_PARSER === 'llamaparse' ? 'the configuration is invalid (see configuration)' : 'DOCPIPE_PARSER is local: LlamaParse is not used');
  // The cheapest authenticated call: the status of a job that does not exist. LlamaCloud checks
  // the key (401) and the organization/project (403) first, then answers 404; nothing is billed.
  const urlOf = (route: string) => {
    const url = new URL(`${parser.baseUrl.replace(/\/+$/, '')}${route}`);
    if (parser.organizationId) url.searchParams.set('organization_id', parser.organizationId);
    if (parser.projectId) url.searchParams.set('project_id', parser.projectId);
    return url;
  };
  const get = (route: string) =>
    fetch(urlOf(route), { headers: { authorization: `Bearer ${parser.apiKey}`, accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  let res: Response;
  let versions: unknown;
  try {
    res = await get('/api/v2/parse/pjb-00000000000000000000000000');
    await res.arrayBuffer();
    // The tier's versions: a pinned LLAMAPARSE_VERSION the API does not know would fail every job (422).
    if (parser.version !== 'latest' && res.status !== 401 && res.status !== 403) {
      const list = await get('/api/v2/parse/versions');
      versions = list.ok ? await list.json().catch(() => undefined) : await list.arrayBuffer().then(() => undefined);
    }
  } catch (err) {
    return fail(name, `no answer from ${parser.baseUrl}: ${reason(err)}`, 'check LLAMAPARSE_BASE_URL (https://api.cloud.llamaindex.ai, EU: https://api.cloud.eu.llamaindex.ai) and that this network reaches it');
  }
  if (res.status === 401) {
    return fail(name, `LlamaCloud rejected LLAMAPARSE_API_KEY (HTTP 401) at ${parser.baseUrl}`, 'create a key at cloud.llamaindex.ai (API Keys) and set it as a Fly secret; keys work only in their region: an EU key needs LLAMAPARSE_BASE_URL=https://api.cloud.eu.llamaindex.ai');
  }
  if (res.status === 403) {
    return fail(name, 'LlamaCloud accepted the key but refused LLAMAPARSE_ORGANIZATION_ID / LLAMAPARSE_PROJECT_ID (HTTP 403)', 'unset them, or set the ids of an organization and project this key belongs to');
  }
  if (res.status === 429 || res.status >= 500) {
    return fail(name, `LlamaCloud answered HTTP ${res.status}: the key could not be checked`, 'run the doctor again in a minute; if it persists, check status.llamaindex.ai');
  }
  const known = (versions as Record<string, unknown> | undefined)?.[parser.tier];
  if (Array.isArray(known) && !known.includes(parser.version)) {
    return fail(
      name,
      `LLAMAPARSE_VERSION ${parser.version} is not a version of tier ${parser.tier} (LlamaCloud lists ${known.slice(0, 5).join(', ')}${known.length > 5 ? ', ...' : ''})`,
      'set LLAMAPARSE_VERSION to one of the listed dates (or latest)',
    );
  }
  return pass(name, `accepted by ${parser.baseUrl} (a lookup of a job that does not exist answered ${res.status}); tier ${parser.tier}, version ${parser.version}`);
}

async function openAICheck(env: NodeJS.ProcessEnv, config: Config | null, invalid: (...n: string[]) => string | undefined, timeoutMs: number): Promise<CheckResult> {
  const name = 'openai key';
  const bad = invalid('DOCPIPE_EMBEDDER', 'OPENAI_API_KEY', 'OPENAI_BASE_URL', 'OPENAI_EMBEDDING_MODEL', 'EMBEDDING_DIMENSIONS');
  if (bad) return skip(name, `${bad} is invalid (see configuration)`);
  const embedder = config?.embedder;
  if (embedder?.kind !== 'openai') return skip(name, env.DOCPIPE_EMBEDDER === 'openai' ? 'the configuration is invalid (see configuration)' : 'DOCPIPE_EMBEDDER is local: OpenAI is not used');
  // One embedding of two words (a few millionths of a cent) with the worker's exact parameters:
  // it proves the key, the model and EMBEDDING_DIMENSIONS together.
  const body = { model: embedder.model, input: ['docpipe doctor'], encoding_format: 'float', ...(acceptsDimensions(embedder.model) ? { dimensions: embedder.dimensions } : {}) };
  let res: Response;
  let answer: { data?: { embedding?: unknown }[]; error?: { message?: string; code?: string | null } };
  try {
    res = await fetch(`${embedder.baseUrl}/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${embedder.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    answer = (await res.json().catch(() => ({}))) as typeof answer;
  } catch (err) {
    return fail(name, `no answer from ${embedder.baseUrl}: ${reason(err)}`, 'check OPENAI_BASE_URL (https://api.openai.com/v1, /v1 included) and that this network reaches it');
  }
  const said = answer.error?.message ? `: ${answer.error.message.split(embedder.apiKey).join('[key]')}` : '';
  if (res.status === 401) return fail(name, `OpenAI rejected OPENAI_API_KEY (HTTP 401)${said}`, 'create a key at platform.openai.com/api-keys and set it as a Fly secret');
  if (res.status === 403 || res.status === 404) {
    return fail(name, `the key may not use ${embedder.model} (HTTP ${res.status})${said}`, 'set OPENAI_EMBEDDING_MODEL to an embedding model this key\'s project may use (text-embedding-3-small), or allow it in the project\'s settings');
  }
  if (res.status === 429 && answer.error?.code === 'insufficient_quota') {
    return fail(name, `OpenAI accepted the key but the account has no quota left${said}`, 'add credit or raise the budget at platform.openai.com/settings/organization/billing');
  }
  if (res.status === 400) return fail(name, `OpenAI refused the request the worker would send (HTTP 400)${said}`, 'check OPENAI_EMBEDDING_MODEL and EMBEDDING_DIMENSIONS (text-embedding-3-small: at most 1536; older models take no dimensions)');
  if (!res.ok) return fail(name, `OpenAI answered HTTP ${res.status}${said}: the key could not be checked`, 'run the doctor again in a minute; if it persists, check status.openai.com');
  const vector = answer.data?.[0]?.embedding;
  const size = Array.isArray(vector) ? vector.length : -1;
  if (size !== embedder.dimensions) {
    return fail(name, `${embedder.model} answered ${size} dimensions, EMBEDDING_DIMENSIONS is ${embedder.dimensions}`, `set EMBEDDING_DIMENSIONS=${size} (the model's size), or use a text-embedding-3 model, which takes dimensions`);
  }
  return pass(name, `accepted: ${embedder.model} answers ${size} dimensions at ${embedder.baseUrl}`);
}

function webhookUrlCheck(env: NodeJS.ProcessEnv, config: Config | null, invalid: (...n: string[]) => string | undefined): CheckResult {
  const name = 'webhook url';
  const bad = invalid('DOCPIPE_PARSER', 'WEBHOOK_PUBLIC_URL', 'WEBHOOK_SECRET');
  if (bad) return skip(name, `${bad} is invalid (see configuration)`);
  if (config?.parser.kind !== 'llamaparse') return skip(name, env.DOCPIPE_PARSER === 'llamaparse' ? 'the configuration is invalid (see configuration)' : 'the local parser uses no webhooks');
  const publicUrl = config.webhook.publicUrl;
  if (!publicUrl) {
    return pass(name, `WEBHOOK_PUBLIC_URL is not set: polling only, so every parse waits LLAMAPARSE_POLL_AFTER_SECONDS (${env.LLAMAPARSE_POLL_AFTER_SECONDS || 60} s) for its first status check; set it to the webhook app's https URL for prompt results`);
  }
  const url = new URL(publicUrl);
  if (url.protocol !== 'https:') {
    return fail(name, `WEBHOOK_PUBLIC_URL is ${publicUrl}: LlamaCloud delivers webhooks only to public https URLs`, 'set WEBHOOK_PUBLIC_URL to the webhook app\'s https URL, e.g. https://<webhook app>.fly.dev');
  }
  if (isPrivateHost(url.hostname)) {
    return fail(name, `WEBHOOK_PUBLIC_URL is ${publicUrl}: ${url.hostname} is not reachable from LlamaCloud`, 'use the webhook app\'s public URL (https://<webhook app>.fly.dev), not a private, .internal or .flycast address');
  }
  return pass(name, `LlamaCloud calls ${publicUrl}/v1/webhooks/llamaparse/<document id>`);
}

function isPrivateHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost') || h.endsWith('.internal') || h.endsWith('.flycast') || h.endsWith('.local')) return true;
  if (/^(127\.|10\.|192\.168\.|169\.254\.|0\.)/.test(h) || /^172\.(1[6-9]|2\d|3[01])\./.test(h)) return true;
  return h === '::1' || h.startsWith('fc') || h.startsWith('fd') || h.startsWith('fe80:');
}

// --- helpers and report --------------------------------------------------------------------

/** A check that throws (a bug, or something nobody foresaw) is a failure of that check, not the end of the report. */
async function safely(name: string, check: () => Promise<CheckResult>): Promise<CheckResult> {
  try {
    return await check();
  } catch (err) {
    return fail(name, `the check itself failed: ${(err as Error)?.message ?? String(err)}`, 'run the doctor again; if this persists, report it with this line');
  }
}

/** `promise`, or a rejection with code DOCTOR_TIMEOUT after `ms`. */
async function within<T>(ms: number, promise: PromiseLike<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what} within ${Math.round(ms / 1000)} s`), { code: 'DOCTOR_TIMEOUT' })), ms);
  });
  try {
    return await Promise.race([Promise.resolve(promise), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function reason(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') return 'timed out';
  return e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
}

/** The report: one line per check, its fix indented below a failure, then the verdict. */
export function formatReport(results: CheckResult[], machines: Machines): string {
  const width = Math.max(...results.map((r) => r.name.length));
  const lines = [`docpipe doctor (connection budget for: api ${machines.api}, worker ${machines.worker}, webhook ${machines.webhook} machines)`, ''];
  for (const r of results) {
    const mark = r.skipped ? 'SKIP' : r.ok ? 'PASS' : 'FAIL';
    lines.push(`${mark}  ${r.name.padEnd(width)}  ${r.detail}`);
    if (!r.ok && r.fix) lines.push(`${' '.repeat(width + 8)}fix: ${r.fix}`);
  }
  const failed = results.filter((r) => !r.ok).length;
  const skipped = results.filter((r) => r.skipped).length;
  const passed = results.length - failed - skipped;
  lines.push('', failed === 0 ? `all checks passed (${passed} passed, ${skipped} skipped)` : `${failed} failed, ${passed} passed, ${skipped} skipped: fix the failures above and run the doctor again`);
  return lines.join('\n') + '\n';
}
