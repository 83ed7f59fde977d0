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
 * Checks out `rev` into `<tmp>/before` and runs its bench with `args`, its progress on our
 * stderr. Resolves with its figures; the caller removes the worktree with `removeWorktree`.
 */
export async function runBefore<R>(options: { root: string; tmp: string; rev: string; args: string[]; timeoutMs: number; log(message: string): void }): Promise<BeforeRun<R>> {
  const { root, tmp, rev, log } = options;
  const commit = execFileSync('git', ['-C', root, 'rev-parse', '--verify', `${rev}^{commit}`], { encoding: 'utf8' }).trim();
  const dir = path.join(tmp, 'before');
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', '--force', dir, commit], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (!existsSync(path.join(dir, 'node_modules'))) symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const json = path.join(tmp, 'before.json');
  log(`--before ${rev}: running the bench of ${commit.slice(0, 12)} first (${dir})`);
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(path.join(root, 'node_modules/.bin/tsx'), ['scripts/bench.ts', ...options.args, '--json', json], {
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
