// The deployment configuration cannot drift from the code: fly.api.toml, fly.worker.toml and
// fly.webhook.toml are parsed and checked against the configuration (src/config.ts, loadConfig
// with each file's [env] applied), the services' real HTTP apps, the CLI's commands and the
// keys flyctl reads; the Dockerfile is checked against the build (tsconfig's output, a
// non-root user, no dev dependencies in the image). flyctl ignores unknown keys silently, so a
// misspelt key is a setting that never applies: nothing but a test like this one notices.
// The checkers are plain functions; the negative tests feed them small broken files.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Instruction, type JSONInstruction } from 'dockerfile-ast';
import { pino } from 'pino';
import { parse as parseToml } from 'smol-toml';
import ts from 'typescript';
import { ConfigError, loadConfig, SPEC, type Config, type ServiceName } from '../../src/config.ts';
import { inspectVectorStore } from '../../src/db/vectors.ts';
import { startMetricsServer } from '../../src/observability/metrics.ts';
import { createLocalEmbedder } from '../../src/providers/embedder/local.ts';
import { createStorage } from '../../src/providers/index.ts';
import { buildApiApp } from '../../src/services/api/app.ts';
import { createHttpApp, registerHealth, type App } from '../../src/services/http.ts';
import { buildWebhookApp } from '../../src/services/webhook/app.ts';
import { createDatabase, type TestDatabase } from '../helpers/db.ts';
import { documentedSecrets } from '../helpers/fly-toml.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SERVICES: ServiceName[] = ['api', 'worker', 'webhook'];
const tomlPath = (service: ServiceName) => path.join(ROOT, `fly.${service}.toml`);

// ---------------------------------------------------------------------------------------------
// The keys flyctl accepts: flyctl's config parser as of 2026-08 (read from its source). A node
// lists a table's keys; ANY is a value not inspected further (a scalar, a list, or a table of
// free names such as [env]); '*' stands for the names of a table of named entries
// ([checks.NAME]). An array of tables ([[vm]], [[http_service.checks]]) is checked element by
// element against the same node. Sections whose own keys are not listed here (mounts,
// statics, files, machine_checks, tls_options) are accepted without inspection.
// ---------------------------------------------------------------------------------------------
const ANY = null;
type KeyNode = null | { readonly [key: string]: KeyNode };

const VM_KEYS: KeyNode = { size: ANY, memory: ANY, cpus: ANY, cpu_kind: ANY, memory_mb: ANY, processes: ANY };

const FLY_KEYS: KeyNode = {
  app: ANY,
  primary_region: ANY,
  kill_signal: ANY,
  kill_timeout: ANY,
  swap_size_mb: ANY,
  console_command: ANY,
  host_dedication_id: ANY,
  build: {
    dockerfile: ANY,
    image: ANY,
    ignorefile: ANY,
    'build-target': ANY,
    args: ANY,
    builder: ANY,
    buildpacks: ANY,
    builtin: ANY,
    settings: ANY,
    compression: ANY,
    compression_level: ANY,
  },
  deploy: {
    strategy: ANY,
    max_unavailable: ANY,
    wait_timeout: ANY,
    release_command: ANY,
    release_command_timeout: ANY,
    release_command_vm: VM_KEYS,
  },
  env: ANY,
  http_service: {
    internal_port: ANY,
    force_https: ANY,
    auto_stop_machines: ANY,
    auto_start_machines: ANY,
    min_machines_running: ANY,
    processes: ANY,
    concurrency: { type: ANY, soft_limit: ANY, hard_limit: ANY },
    tls_options: ANY,
    http_options: { idle_timeout: ANY, headers_read_timeout: ANY, h2_backend: ANY, compress: ANY, response: { headers: ANY, pristine: ANY } },
    checks: { interval: ANY, timeout: ANY, grace_period: ANY, method: ANY, path: ANY, protocol: ANY, headers: ANY, tls_skip_verify: ANY, tls_server_name: ANY },
  },
  checks: {
    '*': { type: ANY, port: ANY, path: ANY, method: ANY, interval: ANY, timeout: ANY, grace_period: ANY, protocol: ANY, headers: ANY, processes: ANY },
  },
  metrics: { port: ANY, path: ANY, processes: ANY },
  vm: VM_KEYS,
  restart: { policy: ANY, retries: ANY, processes: ANY },
  // The fields of flyctl's Experimental struct; `cmd` sets the machine's command (the image's
  // ENTRYPOINT stays). Top-level [processes] is not in the list.
  experimental: {
    cmd: ANY,
    entrypoint: ANY,
    exec: ANY,
    auto_rollback: ANY,
    enable_consul: ANY,
    enable_etcd: ANY,
    lazy_load_images: ANY,
    attached: ANY,
    machine_config: ANY,
    use_zstd: ANY,
  },
  mounts: ANY,
  statics: ANY,
  files: ANY,
  machine_checks: ANY,
};

const isTable = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

/** Every key, at every level, that flyctl does not read. */
function unknownKeys(value: unknown, node: KeyNode, where = ''): string[] {
  if (node === ANY) return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownKeys(v, node, `${where}[${i}]`));
  if (!isTable(value)) return [`${where || 'the file'} must be a table`];
  const problems: string[] = [];
  for (const [key, v] of Object.entries(value)) {
    const at = where ? `${where}.${key}` : key;
    const child = '*' in node ? node['*']! : node[key];
    if (child === undefined) {
      const known = Object.keys(node);
      const close = known.filter((k) => editDistance(k, key) <= 2);
      problems.push(`unknown key \`${at}\`: flyctl ignores it silently${close.length ? ` (did you mean \`${close.join('` or `')}\`?)` : ''}`);
      continue;
    }
    problems.push(...unknownKeys(v, child, at));
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Units. A bare number means seconds in kill_timeout, milliseconds in top-level checks and
// nanoseconds in [[http_service.checks]] and [deploy] timeouts: every duration must be a
// string with units.
// ---------------------------------------------------------------------------------------------
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go duration string ("10s", "1m30s") in milliseconds, or null. */
function durationMs(value: unknown): number | null {
  if (typeof value !== 'string' || !/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(value)) return null;
  let ms = 0;
  for (const [, n, , unit] of value.matchAll(/(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  return ms;
}

/** "512mb", "1gb", 2048 (MB) -> MB, or null. */
function memoryMb(value: unknown): number | null {
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value;
  const m = typeof value === 'string' ? /^(\d+)\s*(mb|m|gb|g)?$/i.exec(value.trim()) : null;
  if (!m) return null;
  return Number(m[1]) * (m[2] && m[2].toLowerCase().startsWith('g') ? 1024 : 1);
}

/** A [[vm]] size preset: `shared-cpu-Nx` (256 MB per CPU) or `performance-Nx` (2 GB per CPU). */
function vmPreset(size: unknown): { cpus: number; memoryMb: number; dedicated: boolean } | null {
  const m = typeof size === 'string' ? /^(shared-cpu|performance)-(\d+)x$/.exec(size) : null;
  if (!m) return null;
  const cpus = Number(m[2]);
  return m[1] === 'shared-cpu' ? { cpus, memoryMb: 256 * cpus, dedicated: false } : { cpus, memoryMb: 2048 * cpus, dedicated: true };
}

/** docs/LIMITS.md, "Sizing a worker": the worst-case memory of one worker, in MB. */
function workerWorstCaseMb(config: Config): number {
  const mainProcess = 350;
  const heldChunks = 10 * (config.workerDocumentBudgetBytes / (1024 * 1024));
  const exemptSmallDocuments = 2 * config.queue.concurrency * 10 * 1;
  const sandbox = config.sandbox.processes * config.sandbox.memoryMb;
  return mainProcess + heldChunks + exemptSmallDocuments + sandbox;
}

// ---------------------------------------------------------------------------------------------
// Secrets. The variables marked `secret` in SPEC never go in [env]. The names a file's header
// comment tells the operator to set with `fly secrets set` stand in for Fly's secrets: with
// them and [env], the configuration must load, so the comment cannot fall behind [env].
// ---------------------------------------------------------------------------------------------
const SPEC_NAMES = new Set(SPEC.map((s) => s.name));
const SECRET_NAMES = new Set(SPEC.filter((s) => s.secret).map((s) => s.name));

function placeholder(name: string): string {
  if (name === 'DATABASE_URL') return 'postgresql://docpipe:placeholder@db.example.invalid:5432/postgres';
  if (name.endsWith('_URL')) return 'https://placeholder.example.invalid';
  return `placeholder-${'x'.repeat(40)}`;
}

// ---------------------------------------------------------------------------------------------
// The checker of one fly.<service>.toml.
// ---------------------------------------------------------------------------------------------
interface CodeFacts {
  /** Does the service's real HTTP app have this route? */
  hasRoute(service: ServiceName, method: string, url: string): boolean;
  /** The CLI's commands (`docpipe --help`). */
  commands: ReadonlySet<string>;
  /** The path the metrics server answers. */
  metricsPath: string;
}

/** Start-up measured at under 3 s (0.2-0.4 s after the database answers): a grace period shorter than this is a guess. */
const MIN_GRACE_MS = 10_000;
/** Time the process needs to exit after its drain budget runs out. */
const EXIT_MARGIN_MS = 5_000;

function servicePort(service: ServiceName, config: Config): number {
  return service === 'api' ? config.apiPort : service === 'webhook' ? config.webhookPort : config.workerPort;
}

function checkFlyToml(service: ServiceName, text: string, code: CodeFacts): string[] {
  const problems: string[] = [];
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    return [`not valid TOML: ${(err as Error).message}`];
  }
  problems.push(...unknownKeys(doc, FLY_KEYS));
  const table = (v: unknown): Record<string, unknown> => (isTable(v) ? v : {});
  const tables = (v: unknown): Record<string, unknown>[] => (Array.isArray(v) ? v.filter(isTable) : isTable(v) ? [v] : []);
  const duration = (where: string, value: unknown): number | null => {
    if (value === undefined) return null;
    const ms = durationMs(value);
    if (ms === null) problems.push(`${where} = ${JSON.stringify(value)}: a duration must be a string with units ("10s"); a bare number means different units in different sections`);
    return ms;
  };

  if (typeof doc.app !== 'string' || doc.app === '') problems.push('`app` is missing (the default app name; `fly deploy -a` overrides it)');
  if (typeof doc.primary_region !== 'string') problems.push('`primary_region` is missing');
  if (doc.kill_signal !== 'SIGTERM') problems.push(`kill_signal must be "SIGTERM" (the signal the services drain on), got ${JSON.stringify(doc.kill_signal)}`);
  const build = table(doc.build);
  if (build.dockerfile !== 'Dockerfile') problems.push(`[build] dockerfile must be "Dockerfile", got ${JSON.stringify(build.dockerfile)}`);
  const cmd = table(doc.experimental).cmd;
  if (!Array.isArray(cmd) || cmd.length !== 1 || cmd[0] !== service) problems.push(`[experimental] cmd must be ["${service}"] (the image's ENTRYPOINT is the CLI), got ${JSON.stringify(cmd)}`);
  if (!code.commands.has(service)) problems.push(`the CLI has no command "${service}"`);

  // [env]: strings, no FLY_ names, only configuration variables, never a secret.
  const env = table(doc.env);
  const stringEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (typeof value !== 'string') problems.push(`[env] ${name} = ${JSON.stringify(value)}: [env] values must be strings`);
    else stringEnv[name] = value;
    if (name.startsWith('FLY_')) problems.push(`[env] ${name}: names starting with FLY_ are reserved by Fly`);
    if (SECRET_NAMES.has(name)) problems.push(`[env] ${name} is a secret (marked in src/config.ts): set it with \`fly secrets set\`, never in a file`);
    else if (!SPEC_NAMES.has(name)) problems.push(`[env] ${name} is not a configuration variable of src/config.ts (misspelt? it would be ignored)`);
  }

  // The configuration the machines get: [env] plus the secrets the header says to set.
  const secrets = documentedSecrets(text);
  for (const required of ['DATABASE_URL', 'JWT_SECRET']) {
    if (!secrets.has(required)) problems.push(`the header comment does not list ${required} among the secrets to set (without DATABASE_URL docpipe starts an embedded PostgreSQL on the machine's disk)`);
  }
  let config: Config;
  try {
    config = loadConfig({ ...Object.fromEntries([...secrets].map((n) => [n, placeholder(n)])), ...stringEnv });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(`[env] with the secrets the header lists does not load: ${err.problems.join('; ')}`);
    return problems;
  }
  if (config.host !== '::' && config.host !== '0.0.0.0') problems.push(`HOST is ${config.host}: Fly's proxy and the private network reach only "::" (or 0.0.0.0)`);
  const port = servicePort(service, config);

  // Shutdown: the drain must end before the SIGKILL.
  const kill = duration('kill_timeout', doc.kill_timeout);
  if (doc.kill_timeout === undefined) problems.push('kill_timeout is missing (Fly\'s default is 5 s)');
  if (kill !== null) {
    if (kill <= config.shutdownTimeoutMs + EXIT_MARGIN_MS) problems.push(`kill_timeout (${kill / 1000} s) must exceed SHUTDOWN_TIMEOUT_MS (${config.shutdownTimeoutMs / 1000} s) by at least ${EXIT_MARGIN_MS / 1000} s`);
    if (kill > 300_000) problems.push(`kill_timeout (${kill / 1000} s) is over Fly's maximum, 300 s`);
  }

  // [deploy]: only the api migrates; a service keeps serving during a deploy.
  const deploy = table(doc.deploy);
  duration('[deploy] wait_timeout', deploy.wait_timeout);
  duration('[deploy] release_command_timeout', deploy.release_command_timeout);
  if (service === 'api') {
    if (deploy.release_command !== 'migrate') problems.push(`[deploy] release_command must be "migrate" in the api (it replaces CMD, not the ENTRYPOINT), got ${JSON.stringify(deploy.release_command)}`);
    if (!code.commands.has('migrate')) problems.push('the CLI has no command "migrate"');
  } else if (deploy.release_command !== undefined) {
    problems.push(`[deploy] release_command belongs to the api alone (one app migrates), found in ${service}`);
  }
  if (deploy.release_command_vm !== undefined && memoryMb(table(deploy.release_command_vm).memory) === null) problems.push('[deploy.release_command_vm] memory must be like "512mb" or "1gb"');
  const strategy = deploy.strategy ?? 'rolling';
  if (!['rolling', 'immediate', 'canary', 'bluegreen'].includes(strategy as string)) problems.push(`[deploy] strategy ${JSON.stringify(strategy)} is not one of rolling, immediate, canary, bluegreen`);

  // Checks: explicit timings, a timeout inside the interval, a grace period past start-up.
  const checkTimings = (where: string, ch: Record<string, unknown>) => {
    const interval = duration(`${where} interval`, ch.interval);
    const timeout = duration(`${where} timeout`, ch.timeout);
    const grace = duration(`${where} grace_period`, ch.grace_period);
    if (interval === null || timeout === null) problems.push(`${where}: set interval and timeout explicitly`);
    else if (timeout >= interval) problems.push(`${where}: timeout must be shorter than interval`);
    if (grace === null || grace < MIN_GRACE_MS) problems.push(`${where}: grace_period must be at least ${MIN_GRACE_MS / 1000} s (longer than start-up)`);
    return { interval, timeout, grace };
  };

  // [http_service]: the api and the webhook only.
  const http = doc.http_service;
  const topChecks = table(doc.checks);
  if (service === 'worker') {
    if (http !== undefined) problems.push('the worker must have no [http_service]: it serves nobody, and the proxy would auto-stop it with nothing to wake it');
    if (Object.keys(topChecks).length === 0) problems.push('the worker needs top-level [checks] on WORKER_PORT');
    const restart = tables(doc.restart);
    if (restart.length === 0) problems.push('the worker needs a [[restart]] policy: a worker that stays down strands the queue');
    for (const r of restart) if (r.policy === 'never') problems.push('[[restart]] policy "never" would leave a crashed worker down');
  } else {
    if (!isTable(http)) {
      problems.push(`the ${service} needs an [http_service]`);
    } else {
      if (http.internal_port !== port) problems.push(`[http_service] internal_port is ${JSON.stringify(http.internal_port)}, but the ${service} listens on ${port} (${service.toUpperCase()}_PORT)`);
      if (http.force_https !== true) problems.push('[http_service] force_https must be true');
      if (strategy === 'immediate') problems.push('[deploy] strategy "immediate" replaces every machine at once: the service stops serving during a deploy');
      const c = table(http.concurrency);
      if (c.type !== 'requests') problems.push('[http_service.concurrency] type must be "requests"');
      if (typeof c.soft_limit !== 'number' || typeof c.hard_limit !== 'number' || c.soft_limit >= c.hard_limit) problems.push('[http_service.concurrency] needs soft_limit < hard_limit');
      else if (c.hard_limit >= config.http.maxConnections) problems.push(`[http_service.concurrency] hard_limit (${c.hard_limit}) must stay below MAX_CONNECTIONS (${config.http.maxConnections}): past it the process closes the proxy's connections`);
      const checks = tables(http.checks);
      const paths = new Set(checks.map((ch) => ch.path));
      for (const required of ['/healthz', '/readyz']) if (!paths.has(required)) problems.push(`[[http_service.checks]] has no check of ${required}`);
      checks.forEach((ch, i) => {
        const where = `[[http_service.checks]] #${i + 1} (${String(ch.path)})`;
        const method = typeof ch.method === 'string' ? ch.method.toUpperCase() : 'GET';
        if (typeof ch.path !== 'string' || !code.hasRoute(service, method, ch.path)) problems.push(`${where}: the ${service} app has no route ${method} ${String(ch.path)}`);
        if (http.force_https === true) {
          const headers = Object.entries(table(ch.headers)).map(([k, v]) => [k.toLowerCase(), v]);
          if (!headers.some(([k, v]) => k === 'x-forwarded-proto' && v === 'https')) problems.push(`${where}: with force_https a check must send X-Forwarded-Proto = "https" (checks do not follow the 301)`);
        }
        checkTimings(where, ch);
      });
    }
  }
  for (const [name, ch] of Object.entries(topChecks)) {
    const c = table(ch);
    const where = `[checks.${name}]`;
    if (c.type !== 'http' && c.type !== 'tcp') problems.push(`${where}: type must be "http" or "tcp"`);
    if (c.port !== port) problems.push(`${where}: port is ${JSON.stringify(c.port)}, but the ${service} listens on ${port}`);
    const method = typeof c.method === 'string' ? c.method.toUpperCase() : 'GET';
    if (c.type === 'http' && (typeof c.path !== 'string' || !code.hasRoute(service, method, c.path))) problems.push(`${where}: the ${service} app has no route ${method} ${String(c.path)}`);
    const timings = checkTimings(where, c);
    if (timings.interval !== null && timings.interval < 2000) problems.push(`${where}: interval must be at least 2 s`);
    if (timings.timeout !== null && timings.timeout > 60_000) problems.push(`${where}: timeout must be at most 60 s`);
  }
  if (strategy === 'bluegreen' && !tables(table(http).checks).length && !Object.keys(topChecks).length) problems.push('[deploy] strategy "bluegreen" needs health checks');

  // [metrics] on the service's metrics port.
  const metrics = tables(doc.metrics);
  if (metrics.length !== 1) problems.push('exactly one [metrics] section is expected');
  for (const m of metrics) {
    if (m.port !== config.metricsPorts[service]) problems.push(`[metrics] port is ${JSON.stringify(m.port)}, but the ${service}'s metrics listen on ${config.metricsPorts[service]} (${service.toUpperCase()}_METRICS_PORT)`);
    if (m.path !== code.metricsPath) problems.push(`[metrics] path must be ${code.metricsPath}, got ${JSON.stringify(m.path)}`);
  }

  // [[vm]]: a known size, a readable memory; the worker sized by docs/LIMITS.md's formula.
  const vms = tables(doc.vm);
  if (vms.length !== 1) problems.push('exactly one [[vm]] is expected');
  for (const vm of vms) {
    const preset = vmPreset(vm.size);
    if (!preset) problems.push(`[[vm]] size ${JSON.stringify(vm.size)} is not shared-cpu-Nx or performance-Nx (a bad size fails only at deploy)`);
    const mb = vm.memory !== undefined ? memoryMb(vm.memory) : vm.memory_mb !== undefined ? memoryMb(vm.memory_mb) : (preset?.memoryMb ?? null);
    if (mb === null) problems.push(`[[vm]] memory ${JSON.stringify(vm.memory ?? vm.memory_mb)} is not like "512mb" or "1gb"`);
    if (service === 'worker' && mb !== null) {
      const needed = workerWorstCaseMb(config);
      if (mb < needed) problems.push(`[[vm]] memory (${mb} MB) is below the worker's worst case, ${needed} MB (docs/LIMITS.md "Sizing a worker", from [env])`);
    }
    const cpus = typeof vm.cpus === 'number' ? vm.cpus : preset?.cpus;
    if (service === 'worker' && cpus !== undefined && cpus < config.sandbox.processes) problems.push(`[[vm]] has ${cpus} CPUs for ${config.sandbox.processes} sandbox processes (each keeps a core busy)`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile: base image an ARG, the last stage non-root, without dev dependencies, and its
// ENTRYPOINT the CLI that `npm run build` emits.
// ---------------------------------------------------------------------------------------------

/** Where tsconfig.build.json (read by TypeScript itself: comments, `extends`) emits src/cli.ts. */
function builtCliPath(): string {
  const parsed = ts.getParsedCommandLineOfConfigFile(path.join(ROOT, 'tsconfig.build.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => assert.fail(ts.flattenDiagnosticMessageText(d.messageText, '\n')),
  });
  assert.ok(parsed, 'tsconfig.build.json parses');
  const cli = path.join(ROOT, 'src/cli.ts');
  assert.ok(parsed.fileNames.map((f) => path.resolve(f)).includes(cli), 'tsconfig.build.json compiles src/cli.ts');
  const js = ts.getOutputFileNames(parsed, cli, false).find((f) => f.endsWith('.js'));
  assert.ok(js, 'src/cli.ts is emitted as JavaScript');
  return path.relative(ROOT, js).split(path.sep).join('/');
}

const OMITS_DEV = /--omit[= ]dev\b|--production\b|--only[= ]prod/;
const NPM_INSTALL = /\bnpm\s+(?:ci|install|i)\b/;

function checkDockerfile(text: string, cliPath: string): string[] {
  const problems: string[] = [];
  const df = DockerfileParser.parse(text);
  const froms = df.getFROMs();
  if (froms.length === 0) return ['no FROM'];
  const initialArgs = new Set(df.getInitialARGs().map((a) => a.getProperty()?.getName()));
  const stages: { name: string | null; start: number; end: number }[] = froms.map((f, i) => ({
    name: f.getBuildStage(),
    start: f.getRange().start.line,
    end: i + 1 < froms.length ? froms[i + 1]!.getRange().start.line : Number.POSITIVE_INFINITY,
  }));
  const inStage = (stage: (typeof stages)[number]) => df.getInstructions().filter((i) => i.getRange().start.line > stage.start && i.getRange().start.line < stage.end);

  froms.forEach((f, i) => {
    const image = f.getImage() ?? '';
    const earlierStage = stages.slice(0, i).some((s) => s.name !== null && s.name === image);
    const arg = /^\$\{?(\w+)\}?$/.exec(image);
    if (!earlierStage && !(arg && initialArgs.has(arg[1]))) problems.push(`FROM ${image}: the base image must be a build ARG declared before the first FROM (ARG NODE_IMAGE=node:24-slim, FROM \${NODE_IMAGE})`);
  });

  const last = stages.at(-1)!;
  const runtime = inStage(last);
  const ofKind = (keyword: string) => runtime.filter((i) => i.getKeyword() === keyword);

  const user = ofKind('USER').at(-1)?.getArgumentsContent()?.trim();
  if (!user) problems.push('the last stage sets no USER: the services would run as root');
  else if (/^(root|0)(:|$)/.test(user)) problems.push(`the last stage runs as ${user}: use a non-root user (USER node)`);

  const entrypoint = ofKind('ENTRYPOINT').at(-1) as JSONInstruction | undefined;
  const workdir = ofKind('WORKDIR').at(-1)?.getArgumentsContent()?.trim();
  const args = entrypoint?.getJSONStrings().map((s) => s.getJSONValue()) ?? [];
  const target = args[1] !== undefined && workdir && args[1].startsWith('/') ? path.posix.relative(workdir, args[1]) : args[1];
  if (!entrypoint) problems.push('the last stage has no ENTRYPOINT');
  else if (args.length !== 2 || args[0] !== 'node' || target !== cliPath) problems.push(`ENTRYPOINT must be ["node", "${cliPath}"] in JSON form (the CLI tsconfig.build.json emits), got ${entrypoint.getArgumentsContent()}`);
  if (!runtime.some((i) => i.getKeyword() === 'COPY' && (i.getArgumentsContent() ?? '').includes(cliPath.split('/')[0]!))) problems.push(`the last stage copies no ${cliPath.split('/')[0]}/ (the built CLI)`);

  const productionEnv = (instructions: Instruction[], beforeLine: number) =>
    instructions.some((i) => i.getKeyword() === 'ENV' && i.getRange().start.line < beforeLine && /\bNODE_ENV[= ]"?production\b/.test(i.getArgumentsContent() ?? ''));
  if (!productionEnv(runtime, Number.POSITIVE_INFINITY)) problems.push('the last stage does not set ENV NODE_ENV=production');

  // Dependencies reach the last stage by an install in it, or by copying node_modules from a
  // stage; either way every npm install involved must leave the dev dependencies out.
  const installsOmitDev = (instructions: Instruction[]) => {
    const installs = instructions.filter((i) => i.getKeyword() === 'RUN' && NPM_INSTALL.test(i.getArgumentsContent() ?? ''));
    const bad = installs.filter((i) => !OMITS_DEV.test(i.getArgumentsContent() ?? '') && !/\bNODE_ENV=production\b/.test(i.getArgumentsContent() ?? '') && !productionEnv(instructions, i.getRange().start.line));
    return { installs: installs.length, bad };
  };
  const own = installsOmitDev(runtime);
  for (const i of own.bad) problems.push(`the last stage installs dev dependencies: \`${i.getArgumentsContent()}\` (use npm ci --omit=dev)`);
  let sources = own.installs;
  for (const copy of df.getCOPYs().filter((c) => c.getRange().start.line > last.start)) {
    const from = copy.getFromFlag()?.getValue();
    if (!from || !(copy.getArgumentsContent() ?? '').includes('node_modules')) continue;
    const stage = stages.find((s) => s.name === from);
    const theirs = stage ? installsOmitDev(inStage(stage)) : { installs: 0, bad: [] };
    if (!stage || theirs.installs === 0 || theirs.bad.length > 0) problems.push(`the last stage copies node_modules from "${from}", which is not a production-only install (npm ci --omit=dev)`);
    sources++;
  }
  if (sources === 0) problems.push('the last stage installs no production dependencies');
  return problems;
}

// ---------------------------------------------------------------------------------------------
// The facts from the code: the real apps' routes, the CLI's commands, the metrics path.
// ---------------------------------------------------------------------------------------------
const silent = pino({ level: 'silent' });
const apps = new Map<ServiceName, App>();
let db: TestDatabase;
let code: CodeFacts;

function configOf(service: ServiceName): Config {
  const text = readFileSync(tomlPath(service), 'utf8');
  const env = (parseToml(text) as { env?: Record<string, string> }).env ?? {};
  return loadConfig({ ...Object.fromEntries([...documentedSecrets(text)].map((n) => [n, placeholder(n)])), ...env });
}

function cliCommands(): Set<string> {
  const usage = execFileSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', '--help'], { cwd: ROOT, encoding: 'utf8' });
  return new Set([...usage.matchAll(/^ {2}(\S+) {2,}/gm)].map((m) => m[1]!));
}

before(async () => {
  db = await createDatabase({ manual: true });
  const ctx = { sql: db.sql, jobs: { send: async () => assert.fail('health checks enqueue nothing') } };
  const apiConfig = configOf('api');
  const uploadSigningKey = randomBytes(32);
  const api = await buildApiApp({
    config: apiConfig,
    jwt: { secret: apiConfig.jwt.secret!, audience: apiConfig.jwt.audience, issuer: apiConfig.jwt.issuer },
    logger: silent,
    ctx,
    storage: createStorage(apiConfig, uploadSigningKey),
    embedder: createLocalEmbedder({ dimensions: apiConfig.embedder.dimensions }),
    vectors: await inspectVectorStore(db.sql),
    uploadSigningKey,
  });
  apps.set('api', api.app);
  apps.set('webhook', await buildWebhookApp({ ctx, config: configOf('webhook'), logger: silent }));
  // The worker's health port, built as `docpipe worker` builds it (src/cli.ts).
  const worker = createHttpApp({ service: 'worker', logger: silent, maxConnections: configOf('worker').http.maxConnections });
  registerHealth(worker, [{ name: 'database', check: async () => void (await db.sql`select 1`) }]);
  apps.set('worker', worker);
  for (const app of apps.values()) await app.ready();
  code = {
    hasRoute: (service, method, url) => apps.get(service)!.hasRoute({ method: method as 'GET', url }),
    commands: cliCommands(),
    metricsPath: '/metrics',
  };
});

after(async () => {
  for (const app of apps.values()) await app.close();
  await db?.drop();
});

// ---------------------------------------------------------------------------------------------

describe('fly.*.toml', () => {
  for (const service of SERVICES) {
    test(`fly.${service}.toml matches the code and the keys flyctl reads`, () => {
      assert.deepEqual(checkFlyToml(service, readFileSync(tomlPath(service), 'utf8'), code), []);
    });
  }

  test('every check passes against the real app: the right port, the route, a 2xx with the check\'s headers', async () => {
    for (const service of SERVICES) {
      const doc = parseToml(readFileSync(tomlPath(service), 'utf8')) as Record<string, any>;
      const checks: Record<string, any>[] = [...(doc.http_service?.checks ?? []), ...Object.values(doc.checks ?? {})];
      assert.ok(checks.length >= 2, `${service} has checks`);
      for (const check of checks) {
        const res = await apps.get(service)!.inject({ method: check.method ?? 'GET', url: check.path, headers: check.headers ?? {} });
        assert.ok(res.statusCode >= 200 && res.statusCode < 300, `${service} ${check.path}: ${res.statusCode} ${res.body}`);
      }
    }
  });

  test('the metrics server answers the [metrics] path', async () => {
    const server = await startMetricsServer('127.0.0.1', 0);
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}${code.metricsPath}`);
      assert.equal(res.status, 200);
    } finally {
      await server.close();
    }
  });

  test('the api alone migrates, the worker alone has no service, all three share a region', () => {
    const docs = Object.fromEntries(SERVICES.map((s) => [s, parseToml(readFileSync(tomlPath(s), 'utf8')) as Record<string, any>]));
    assert.deepEqual(SERVICES.filter((s) => docs[s]!.deploy?.release_command !== undefined), ['api']);
    assert.deepEqual(SERVICES.filter((s) => docs[s]!.http_service === undefined), ['worker']);
    // Each is a database client; a service far from the others is far from Postgres too.
    assert.equal(new Set(SERVICES.map((s) => docs[s]!.primary_region)).size, 1);
  });

  test('the api embeds as the worker does: search queries and chunks in one vector space, and migrate checks the dimension the worker writes', () => {
    const embedder = (s: ServiceName) => {
      const e = configOf(s).embedder;
      return e.kind === 'openai' ? { kind: e.kind, model: e.model, dimensions: e.dimensions } : { kind: e.kind, dimensions: e.dimensions };
    };
    assert.deepEqual(embedder('api'), embedder('worker'));
  });
});

describe('the checker reports broken files', () => {
  const original = readFileSync(tomlPath('api'), 'utf8');
  const broken = (from: string | RegExp, to: string) => {
    const text = original.replace(from, to);
    assert.notEqual(text, original, `the sample edit ${String(from)} applies`);
    return checkFlyToml('api', text, code);
  };
  const reports = (problems: string[], pattern: RegExp) => assert.ok(problems.some((p) => pattern.test(p)), `expected ${pattern} in:\n${problems.join('\n')}`);

  test('a misspelt key, at the top and deep down', () => {
    reports(broken('kill_timeout = "20s"', 'kill_timout = "20s"'), /unknown key `kill_timout`.*did you mean `kill_timeout`/);
    reports(broken(/^(\s*)soft_limit = 64$/m, '$1soft_limt = 64'), /unknown key `http_service\.concurrency\.soft_limt`/);
    reports(broken('grace_period = "20s"', 'grace_priod = "20s"'), /unknown key `http_service\.checks\[0\]\.grace_priod`/);
    reports(broken(/^\[experimental\]$/m, '[processes]\n  app = "api"\n[experimental]'), /unknown key `processes`/);
  });

  test('a secret in [env]', () => {
    reports(broken('[env]\n', '[env]\n  OPENAI_API_KEY = "sk-live-123"\n'), /\[env\] OPENAI_API_KEY is a secret/);
    reports(broken('[env]\n', '[env]\n  DATABASE_URL = "postgresql://u:p@db/postgres"\n'), /\[env\] DATABASE_URL is a secret/);
  });

  test('a wrong port: internal_port, [metrics], a check, API_PORT moved without the service', () => {
    reports(broken('internal_port = 3000', 'internal_port = 8080'), /internal_port is 8080, but the api listens on 3000/);
    reports(broken('API_PORT = "3000"', 'API_PORT = "8080"'), /internal_port is 3000, but the api listens on 8080/);
    reports(broken('port = 9464', 'port = 9465'), /\[metrics\] port is 9465, but the api's metrics listen on 9464/);
    reports(broken('[http_service]\n', '[checks.extra]\n  type = "http"\n  port = 3002\n  path = "/healthz"\n  interval = "15s"\n  timeout = "2s"\n  grace_period = "20s"\n\n[http_service]\n'), /\[checks\.extra\]: port is 3002, but the api listens on 3000/);
  });

  test('[env] values that are not strings, FLY_ names, unknown names', () => {
    reports(broken('API_PORT = "3000"', 'API_PORT = 3000'), /\[env\] API_PORT = 3000: \[env\] values must be strings/);
    reports(broken('[env]\n', '[env]\n  FLY_REGION = "iad"\n'), /FLY_REGION: names starting with FLY_ are reserved/);
    reports(broken('LOG_LEVEL = "info"', 'LOG_LEVLE = "info"'), /LOG_LEVLE is not a configuration variable/);
    reports(broken('LOG_LEVEL = "info"', 'LOG_LEVEL = "verbose"'), /does not load: LOG_LEVEL: must be one of/);
  });

  test('durations without units, a kill_timeout inside the drain budget', () => {
    reports(broken('kill_timeout = "20s"', 'kill_timeout = 20'), /kill_timeout = 20: a duration must be a string with units/);
    reports(broken('kill_timeout = "20s"', 'kill_timeout = "10s"'), /kill_timeout \(10 s\) must exceed SHUTDOWN_TIMEOUT_MS \(10 s\)/);
    reports(broken('SHUTDOWN_TIMEOUT_MS = "10000"', 'SHUTDOWN_TIMEOUT_MS = "30000"'), /kill_timeout \(20 s\) must exceed SHUTDOWN_TIMEOUT_MS \(30 s\)/);
    reports(broken('interval = "10s"', 'interval = 10000000000'), /interval = 10000000000: a duration must be a string with units/);
  });

  test('a check without the https header, of a route that does not exist, with too short a grace', () => {
    reports(broken('headers = { X-Forwarded-Proto = "https" }', 'headers = {}'), /must send X-Forwarded-Proto = "https"/);
    reports(broken('path = "/readyz"', 'path = "/ready"'), /has no route GET \/ready\b/);
    reports(broken('grace_period = "20s"', 'grace_period = "1s"'), /grace_period must be at least 10 s/);
  });

  test('release_command outside the api, a service in the worker, a worker too small, the wrong command', () => {
    const worker = readFileSync(tomlPath('worker'), 'utf8');
    const reportsWorker = (from: string, to: string, pattern: RegExp) => {
      const text = worker.replace(from, to);
      assert.notEqual(text, worker);
      reports(checkFlyToml('worker', text, code), pattern);
    };
    reportsWorker('strategy = "rolling"', 'strategy = "rolling"\n  release_command = "migrate"', /release_command belongs to the api alone/);
    reportsWorker('[metrics]', '[http_service]\n  internal_port = 3002\n\n[metrics]', /the worker must have no \[http_service\]/);
    reportsWorker('memory = "4gb"', 'memory = "2gb"', /memory \(2048 MB\) is below the worker's worst case, 3118 MB/);
    reportsWorker('SANDBOX_MEMORY_MB = "1024"', 'SANDBOX_MEMORY_MB = "2048"', /below the worker's worst case, 5166 MB/);
    reportsWorker('policy = "always"', 'policy = "never"', /policy "never"/);
    reportsWorker('cmd = ["worker"]', 'cmd = ["api"]', /cmd must be \["worker"\]/);
    reports(broken('release_command = "migrate"', 'release_command = "node dist/src/cli.js migrate"'), /release_command must be "migrate"/);
  });

  test('a provider selected in [env] whose key the header does not list', () => {
    // The api selects openai (for search): drop the key from its header's list of secrets.
    reports(broken('# OPENAI_API_KEY (POST', '# (POST'), /does not load: DOCPIPE_EMBEDDER=openai needs OPENAI_API_KEY/);
  });
});

describe('Dockerfile', () => {
  const cliPath = builtCliPath();

  test('the CLI is built to dist/src/cli.js, the path package.json\'s bin names', () => {
    assert.equal(cliPath, 'dist/src/cli.js');
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    assert.equal(pkg.bin.docpipe, cliPath);
  });

  test('the Dockerfile that [build] names: base image an ARG, non-root, no dev dependencies, the built CLI as ENTRYPOINT', () => {
    const file = path.join(ROOT, 'Dockerfile');
    assert.ok(existsSync(file), 'the Dockerfile the fly.*.toml files build is missing');
    assert.deepEqual(checkDockerfile(readFileSync(file, 'utf8'), cliPath), []);
  });

  const good = [
    'ARG NODE_IMAGE=node:24-slim',
    'FROM ${NODE_IMAGE} AS build',
    'WORKDIR /app',
    'COPY package.json package-lock.json ./',
    'RUN npm ci',
    'COPY . .',
    'RUN npm run build',
    '',
    'FROM ${NODE_IMAGE} AS runtime',
    'ENV NODE_ENV=production',
    'WORKDIR /app',
    'COPY package.json package-lock.json ./',
    'RUN npm ci --omit=dev && npm cache clean --force',
    'COPY --from=build /app/dist ./dist',
    'USER node',
    'ENTRYPOINT ["node", "dist/src/cli.js"]',
    'CMD ["api"]',
  ].join('\n');
  const dockerReports = (text: string, pattern: RegExp) => {
    const problems = checkDockerfile(text, cliPath);
    assert.ok(problems.some((p) => pattern.test(p)), `expected ${pattern} in:\n${problems.join('\n')}`);
  };

  test('the checker accepts the Dockerfile the deployment issue describes', () => {
    assert.deepEqual(checkDockerfile(good, cliPath), []);
    // node_modules from a production-only stage is as good as an install in the last stage.
    const copied = good.replace('FROM ${NODE_IMAGE} AS runtime', 'FROM ${NODE_IMAGE} AS deps\nWORKDIR /app\nCOPY package*.json ./\nRUN npm ci --omit=dev\n\nFROM ${NODE_IMAGE} AS runtime').replace('RUN npm ci --omit=dev && npm cache clean --force', 'COPY --from=deps /app/node_modules ./node_modules');
    assert.deepEqual(checkDockerfile(copied, cliPath), []);
  });

  test('the checker reports a root user, dev dependencies, a wrong ENTRYPOINT, a literal base image', () => {
    dockerReports(good.replace('USER node\n', ''), /sets no USER/);
    dockerReports(good.replace('USER node', 'USER root'), /runs as root/);
    dockerReports(good.replace('RUN npm ci --omit=dev', 'RUN npm ci').replace('ENV NODE_ENV=production\n', ''), /installs dev dependencies/);
    dockerReports(good.replace('RUN npm ci --omit=dev && npm cache clean --force', 'COPY --from=build /app/node_modules ./node_modules'), /copies node_modules from "build", which is not a production-only install/);
    dockerReports(good.replace('dist/src/cli.js', 'src/cli.js'), /ENTRYPOINT must be \["node", "dist\/src\/cli.js"\]/);
    dockerReports(good.replace('ENTRYPOINT ["node", "dist/src/cli.js"]', 'ENTRYPOINT node dist/src/cli.js'), /ENTRYPOINT must be/);
    dockerReports(good.replace('FROM ${NODE_IMAGE} AS runtime', 'FROM node:24-slim AS runtime'), /FROM node:24-slim: the base image must be a build ARG/);
  });
});
