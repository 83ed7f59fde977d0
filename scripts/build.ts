// `npm run build`: the production build. Compiles src/ to dist/ (tsconfig.build.json) and copies
// next to it every other file under src/ that the code reads at run time (today the SQL
// migrations), so that dist/ plus a production install of the dependencies is the whole
// application: the Dockerfile copies nothing else. Starts from an empty output directory, because
// a file deleted from src/ (a migration above all) must not live on in a build.
//
//   node scripts/build.ts [--out-dir DIR]     (default: dist)
//
// Plain Node 24 runs it (it strips the types itself; no tsx), as the Dockerfile's build stage does:
// keep this file free of TypeScript-only syntax such as enums and parameter properties.
import { spawnSync } from 'node:child_process';
import { chmod, cp, readdir, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { 'out-dir': { type: 'string', default: 'dist' } } });
const outDir = path.resolve(root, values['out-dir']!);

/** Files the built code opens by path at run time; the build fails if one is missing. */
const RUNTIME_ENTRIES = ['src/cli.js', 'src/providers/sandbox/child.js', 'src/db/migrations'];

function fail(message: string): never {
  process.stderr.write(`build: ${message}\n`);
  process.exit(1);
}

const started = Date.now();
await rm(outDir, { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const compiled = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', outDir], { cwd: root, stdio: 'inherit' });
if (compiled.status !== 0) fail(`tsc failed (exit ${compiled.status ?? compiled.signal})`);

// Everything under src/ that is not TypeScript is data the code reads beside itself.
let assets = 0;
for (const entry of await readdir(path.join(root, 'src'), { recursive: true, withFileTypes: true })) {
  if (!entry.isFile() || entry.name.endsWith('.ts')) continue;
  const relative = path.relative(root, path.join(entry.parentPath, entry.name));
  await cp(path.join(root, relative), path.join(outDir, relative));
  assets++;
}

for (const entry of RUNTIME_ENTRIES) {
  await stat(path.join(outDir, entry)).catch(() => fail(`${entry} is missing from ${outDir}`));
}
const migrations = (await readdir(path.join(outDir, 'src/db/migrations'))).filter((f) => f.endsWith('.sql'));
if (!migrations.length) fail('no SQL migrations in the build');
// package.json's "bin" points here; the shebang is kept by tsc.
await chmod(path.join(outDir, 'src/cli.js'), 0o755);

process.stdout.write(`build: ${outDir} in ${((Date.now() - started) / 1000).toFixed(1)} s (${assets} runtime files copied, ${migrations.length} migrations)\n`);
