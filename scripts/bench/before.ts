// `npm run bench -- --before <rev>`: the same bench, same flags, run first on an earlier commit
// (a git worktree of <rev> in the bench's temp dir, sharing this checkout's node_modules), so
// one run shows a change's cost as the same figures before and after. The earlier run is a child
// process of this one: its own embedded PostgreSQL, its own servers, nothing shared at run time.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, symlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

export interface BeforeRun<R> {
  rev: string;
  commit: string;
  results: R;
  seconds: number;
}

/** Flags of this run to pass on to the earlier one: all but --before and --json. */
export function forwardedArgs(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--before' || a === '--json') {
      i++;
      continue;
    }
    if (a.startsWith('--before=') || a.startsWith('--json=')) continue;
    out.push(a);
  }
  return out;
}

/**
 * The flags a bench's usage text names, each with whether it takes a value (`--docs <n>`), e.g.
 * `--quick`: false. Read from the earlier commit's `--help`: its bench may not know newer flags.
 */
export function flagsOfUsage(usage: string): Map<string, boolean> {
  const flags = new Map<string, boolean>();
  for (const m of usage.matchAll(/^\s*(--[a-z][a-z0-9-]*)(?:,?\s+-[a-z])?(\s+<)?/gm)) flags.set(m[1]!, m[2] !== undefined);
  return flags;
}

/**
 * `args` less the flags `known` lacks (and their values: `ours` says which of our flags take
 * one). Returns what is kept and what was dropped.
 */
export function filterArgs(args: readonly string[], known: Map<string, boolean>, ours: Map<string, boolean>): { kept: string[]; dropped: string[] } {
  const kept: string[] = [];
  const dropped: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const name = a.startsWith('--') ? a.split('=')[0]! : null;
    const takesValue = name !== null && !a.includes('=') && (ours.get(name) ?? known.get(name) ?? false);
    const group = takesValue && i + 1 < args.length ? [a, args[++i]!] : [a];
    if (name === null || known.has(name)) kept.push(...group);
    else dropped.push(...group);
  }
  return { kept, dropped };
}

/**
 * Checks out `rev` into `<tmp>/before` and runs its bench with `args`, its progress on our
 * stderr. Flags its bench does not know (newer than it) are left out, with a note: `ours` is
 * this bench's usage text. Resolves with its figures; the caller removes the worktree with
 * `removeWorktree`.
 */
export async function runBefore<R>(options: { root: string; tmp: string; rev: string; args: string[]; usage: string; timeoutMs: number; log(message: string): void }): Promise<BeforeRun<R>> {
  const { root, tmp, rev, log } = options;
  const commit = execFileSync('git', ['-C', root, 'rev-parse', '--verify', `${rev}^{commit}`], { encoding: 'utf8' }).trim();
  const dir = path.join(tmp, 'before');
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', '--force', dir, commit], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (!existsSync(path.join(dir, 'node_modules'))) symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const tsx = path.join(root, 'node_modules/.bin/tsx');
  let args = options.args;
  try {
    const theirs = flagsOfUsage(execFileSync(tsx, ['scripts/bench.ts', '--help'], { cwd: dir, encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore'] }));
    if (theirs.size > 0) {
      const { kept, dropped } = filterArgs(options.args, theirs, flagsOfUsage(options.usage));
      if (dropped.length) log(`--before ${rev}: its bench does not know ${dropped.filter((a) => a.startsWith('--')).join(', ')}: left out of its run`);
      args = kept;
    }
  } catch {
    // No usage to read: pass every flag on, as before.
  }
  const json = path.join(tmp, 'before.json');
  log(`--before ${rev}: running the bench of ${commit.slice(0, 12)} first (${dir})`);
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(tsx, ['scripts/bench.ts', ...args, '--json', json], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'inherit'],
      env: process.env,
    });
    const timer = setTimeout(() => child.kill('SIGTERM'), options.timeoutMs);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`the bench of ${rev} exited with ${code ?? signal}`));
    });
  });
  const results = JSON.parse(await readFile(json, 'utf8')) as R;
  return { rev, commit, results, seconds: (Date.now() - started) / 1000 };
}

export function removeWorktree(root: string, tmp: string): void {
  const dir = path.join(tmp, 'before');
  if (!existsSync(dir)) return;
  try {
    execFileSync('git', ['-C', root, 'worktree', 'remove', '--force', dir], { stdio: 'ignore' });
  } catch {
    // The temp dir goes anyway; `git worktree prune` forgets it.
  }
  try {
    execFileSync('git', ['-C', root, 'worktree', 'prune'], { stdio: 'ignore' });
  } catch {
    // Not a git checkout any more: nothing to prune.
  }
}
