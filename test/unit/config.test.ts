// loadConfig(env): defaults, one ConfigError naming every bad variable, cross-variable rules,
// the generated .env.example, and the CLI's exit on a bad variable.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, configTable, envExample, loadConfig, SPEC, type Config } from '../../src/config.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SECRET = 'x'.repeat(32);

function configError(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    return err;
  }
  assert.fail(`expected a ConfigError for ${JSON.stringify(env)}`);
}

/** The variable names a ConfigError's problems are about. */
const named = (err: ConfigError) => err.problems.map((p) => p.slice(0, p.indexOf(':')));

describe('loadConfig', () => {
  test('defaults from an empty environment', () => {
    const dataDir = path.resolve('.data');
    const expected: Config = {
      databaseUrl: undefined,
      databasePoolMax: 10,
      dataDir,
      embeddedPgPort: 54329,
      host: '127.0.0.1',
      apiPort: 3000,
      webhookPort: 3001,
      workerPort: 3002,
      metricsPorts: { api: 9464, worker: 9465, webhook: 9466 },
      metricsSampleIntervalSeconds: 15,
      logLevel: 'info',
      logFormat: 'auto',
      jwt: { secret: undefined, jwksUrl: undefined, audience: 'authenticated', issuer: undefined },
      maxUploadBytes: 50 * 1024 * 1024,
      storage: { kind: 'fs', dir: path.join(dataDir, 'files') },
      parser: { kind: 'local' },
      embedder: { kind: 'local', dimensions: 512 },
      pricing: { llamaparseCreditDollars: 0.001, openaiMillionTokensDollars: 0.02 },
      webhook: { publicUrl: undefined, secret: undefined, llamaparseSigningSecret: undefined, deliveryRetentionDays: 7 },
      uploads: { publicApiUrl: 'http://127.0.0.1:3000', directMaxBytes: 100 * 1024 * 1024, urlTtlSeconds: 7200 },
      chunking: { maxTokens: 512, overlapTokens: 64, maxDocumentTokens: 40_000_000 },
      parserLimits: {
        pdfMaxPages: 5000,
        pdfMaxStreamBytes: 64 * 1024 * 1024,
        pdfMaxInflatedBytes: 512 * 1024 * 1024,
        docxMaxXmlBytes: 32 * 1024 * 1024,
        docxMaxCompressionRatio: 200,
        htmlMaxDepth: 512,
      },
      sandbox: { processes: 2, memoryMb: 1024, timeoutSeconds: 300 },
      workerDocumentBudgetBytes: 64 * 1024 * 1024,
      http: { trustProxy: 'none', rateLimits: { perAddress: 1200, uploads: 60, searches: 120, longPolls: 120, requests: 1200, longPollsPerUser: 10, longPollsMax: 5000 }, corsOrigins: [], maxConnections: 1000, uploadConcurrencyPerUser: 4, uploadConcurrencyMax: 64, uploadMinBytesPerSecond: 1024 },
      security: { auditRetentionDays: 90, threats: { authFailuresToBlock: 50, blockSeconds: 900, foreignIdsToFlag: 20, forgedWebhooksToFlag: 20, webhookFailuresPerAddress: 30 } },
      embedBatchSize: 64,
      queue: {
        concurrency: 4,
        batchSize: 16,
        retryLimit: 4,
        retryDelaySeconds: 2,
        heartbeatSeconds: 30,
        superviseIntervalSeconds: 15,
        pollingIntervalSeconds: 2,
      },
      longPollMaxSeconds: 30,
      searchEmbedTimeoutSeconds: 10,
      shutdownTimeoutMs: 10000,
    };
    assert.deepEqual(loadConfig({}), expected);
  });

  test('set variables are parsed and typed', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgresql://u:p@db.example.com:5432/postgres',
      JWT_SECRET: SECRET,
      JWT_ISSUER: 'https://ref.supabase.co/auth/v1',
      API_PORT: '8080',
      LOG_LEVEL: 'debug',
      DOCPIPE_DATA_DIR: '/tmp/docpipe-x',
      STORAGE_DIR: '/srv/files',
      CHUNK_MAX_TOKENS: '100',
      CHUNK_OVERLAP_TOKENS: '49',
      JOB_RETRY_LIMIT: '0',
    });
    assert.equal(config.databaseUrl, 'postgresql://u:p@db.example.com:5432/postgres');
    assert.deepEqual(config.jwt, { secret: SECRET, jwksUrl: undefined, audience: 'authenticated', issuer: 'https://ref.supabase.co/auth/v1' });
    assert.equal(config.apiPort, 8080);
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.dataDir, '/tmp/docpipe-x');
    assert.deepEqual(config.storage, { kind: 'fs', dir: '/srv/files' });
    assert.deepEqual(config.chunking, { maxTokens: 100, overlapTokens: 49, maxDocumentTokens: 40_000_000 });
    assert.equal(config.queue.retryLimit, 0);
  });

  test('every malformed variable is named in one ConfigError', () => {
    const err = configError({ API_PORT: 'notaport', LOG_LEVEL: 'loud', EMBEDDING_DIMENSIONS: '3' });
    assert.equal(err.problems.length, 3, err.message);
    assert.deepEqual(named(err).sort(), ['API_PORT', 'EMBEDDING_DIMENSIONS', 'LOG_LEVEL']);
    for (const name of ['API_PORT', 'LOG_LEVEL', 'EMBEDDING_DIMENSIONS']) assert.match(err.message, new RegExp(`\\b${name}\\b`));
    assert.match(err.message, /notaport/);
    assert.match(err.message, /loud/);
  });

  test('out-of-range and non-integer numbers are rejected', () => {
    for (const [name, value] of [['API_PORT', '65536'], ['API_PORT', '-1'], ['DATABASE_POOL_MAX', '0'], ['WORKER_CONCURRENCY', '1.5'], ['JOB_HEARTBEAT_SECONDS', '9']]) {
      assert.deepEqual(named(configError({ [name!]: value })), [name], `${name}=${value}`);
    }
  });

  test('prices are non-negative decimals', () => {
    const config = loadConfig({ PRICE_LLAMAPARSE_CREDIT_DOLLARS: '0.00125', PRICE_OPENAI_MILLION_TOKENS_DOLLARS: '0', METRICS_SAMPLE_INTERVAL_SECONDS: '1' });
    assert.deepEqual(config.pricing, { llamaparseCreditDollars: 0.00125, openaiMillionTokensDollars: 0 });
    assert.equal(config.metricsSampleIntervalSeconds, 1);
    for (const value of ['-0.01', '1e-3', 'free', '0.1.2', '$0.02']) {
      assert.deepEqual(named(configError({ PRICE_OPENAI_MILLION_TOKENS_DOLLARS: value })), ['PRICE_OPENAI_MILLION_TOKENS_DOLLARS'], value);
    }
    assert.deepEqual(named(configError({ METRICS_SAMPLE_INTERVAL_SECONDS: '0' })), ['METRICS_SAMPLE_INTERVAL_SECONDS']);
  });

  test('JWT_SECRET or JWT_JWKS_URL is required with DATABASE_URL', () => {
    const err = configError({ DATABASE_URL: 'postgres://u@localhost/db' });
    assert.deepEqual(named(err), ['JWT_SECRET or JWT_JWKS_URL']);
    assert.match(err.message, /one is required when DATABASE_URL is set/);
    // A secret that is too short is reported once, for its length.
    const short = configError({ DATABASE_URL: 'postgres://u@localhost/db', JWT_SECRET: 'short' });
    assert.deepEqual(named(short), ['JWT_SECRET']);
    assert.match(short.message, /at least 32 characters/);
    assert.equal(loadConfig({ DATABASE_URL: 'postgres://u@localhost/db', JWT_SECRET: SECRET }).jwt.secret, SECRET);
  });

  test('an overlap of half the max tokens or more is rejected', () => {
    assert.deepEqual(named(configError({ CHUNK_MAX_TOKENS: '100', CHUNK_OVERLAP_TOKENS: '50' })), ['CHUNK_OVERLAP_TOKENS']);
    assert.deepEqual(named(configError({ CHUNK_MAX_TOKENS: '100', CHUNK_OVERLAP_TOKENS: '80' })), ['CHUNK_OVERLAP_TOKENS']);
    assert.deepEqual(named(configError({ CHUNK_MAX_TOKENS: '100' })), ['CHUNK_OVERLAP_TOKENS'], 'the default overlap 64 is too much for 100');
    assert.equal(loadConfig({ CHUNK_MAX_TOKENS: '100', CHUNK_OVERLAP_TOKENS: '49' }).chunking.overlapTokens, 49);
  });

  test('a DATABASE_URL that is not postgres:// is rejected', () => {
    for (const url of ['mysql://u@localhost/db', 'https://example.com', 'not a url']) {
      const err = configError({ DATABASE_URL: url, JWT_SECRET: SECRET });
      assert.deepEqual(named(err), ['DATABASE_URL'], url);
      assert.match(err.message, /postgres:\/\/ or postgresql:\/\//);
    }
    assert.equal(loadConfig({ DATABASE_URL: 'postgres://u@localhost/db', JWT_SECRET: SECRET }).databaseUrl, 'postgres://u@localhost/db');
  });

  test('an empty string counts as unset', () => {
    const config = loadConfig({ API_PORT: '', LOG_LEVEL: '', DATABASE_URL: '', JWT_SECRET: '', STORAGE_DIR: '' });
    assert.equal(config.apiPort, 3000);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.jwt.secret, undefined);
    assert.deepEqual(config.storage, { kind: 'fs', dir: path.join(path.resolve('.data'), 'files') });
    // An empty JWT_SECRET is a missing one, not a too-short one.
    const err = configError({ DATABASE_URL: 'postgres://u@localhost/db', JWT_SECRET: '' });
    assert.match(err.message, /JWT_SECRET or JWT_JWKS_URL: one is required/);
    // A JWKS alone is enough (new Supabase projects sign with asymmetric keys).
    const jwksOnly = loadConfig({ DATABASE_URL: 'postgres://u@localhost/db', JWT_JWKS_URL: 'https://ref.supabase.co/auth/v1/.well-known/jwks.json' });
    assert.deepEqual([jwksOnly.jwt.secret, jwksOnly.jwt.jwksUrl], [undefined, 'https://ref.supabase.co/auth/v1/.well-known/jwks.json']);
  });
});

describe('README', () => {
  test('the configuration table is configTable() output (every variable, its default and meaning)', async () => {
    const readme = await readFile(path.join(ROOT, 'README.md'), 'utf8');
    assert.ok(readme.includes(configTable() + '\n'), 'README.md: replace the table under "## Configuration" with `npm run -s docpipe -- config-table`');
  });
});

describe('.env.example', () => {
  test('the file at the repository root is envExample() output', async () => {
    const file = await readFile(path.join(ROOT, '.env.example'), 'utf8');
    assert.equal(file, envExample());
  });

  test('documents every variable with its default', () => {
    const text = envExample();
    for (const spec of SPEC) {
      const line = spec.default === undefined ? `# ${spec.name}=` : `${spec.name}=${spec.default}`;
      assert.ok(text.split('\n').includes(line), `missing line ${line}`);
    }
    // Every default in the example is itself a valid configuration.
    const env = Object.fromEntries(SPEC.filter((s) => s.default !== undefined).map((s) => [s.name, s.default]));
    assert.deepEqual(loadConfig(env), loadConfig({}));
  });
});

describe('CLI', () => {
  // One child run, asserted by two tests: the message and the exit status.
  let result: Promise<{ code: number | null; stderr: string }> | undefined;
  const runCli = () =>
    (result ??= new Promise((resolve, reject) => {
      const env: NodeJS.ProcessEnv = { ...process.env, API_PORT: 'notaport' };
      delete env.NODE_TEST_CONTEXT;
      delete env.DATABASE_URL;
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'migrate'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.stdout.resume();
      child.once('error', reject);
      child.once('close', (code) => resolve({ code, stderr }));
    }));

  test('a bad variable is named on stderr', { timeout: 60_000 }, async () => {
    const { stderr } = await runCli();
    assert.match(stderr, /API_PORT/);
    assert.match(stderr, /notaport/);
  });

  test(
    'a bad variable exits with status 2',
    {
      timeout: 60_000,
    },
    async () => {
      const { code, stderr } = await runCli();
      assert.equal(code, 2, stderr);
    },
  );
});

describe('provider selection', () => {
  test('each remote adapter names what it is missing, in one error', () => {
    const err = configError({ DOCPIPE_STORAGE: 'supabase', DOCPIPE_PARSER: 'llamaparse', DOCPIPE_EMBEDDER: 'openai', WEBHOOK_PUBLIC_URL: 'https://hooks.example.com' });
    assert.deepEqual(err.problems, [
      'DOCPIPE_STORAGE=supabase needs SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY (unset)',
      'DOCPIPE_PARSER=llamaparse needs LLAMAPARSE_API_KEY (unset)',
      'DOCPIPE_EMBEDDER=openai needs OPENAI_API_KEY (unset)',
      'WEBHOOK_PUBLIC_URL needs WEBHOOK_SECRET (unset)',
    ]);
    assert.match(err.message, /SUPABASE_URL/);
  });

  test('a partial combination names only what is missing', () => {
    const err = configError({ DOCPIPE_STORAGE: 'supabase', SUPABASE_URL: 'https://ref.supabase.co' });
    assert.deepEqual(err.problems, ['DOCPIPE_STORAGE=supabase needs SUPABASE_SERVICE_ROLE_KEY (unset)']);
  });

  test('unknown adapters and bad URLs are refused', () => {
    const err = configError({ DOCPIPE_STORAGE: 's3', DOCPIPE_PARSER: 'tika', OPENAI_BASE_URL: 'ftp://x', WEBHOOK_SECRET: 'short' });
    assert.deepEqual(named(err), ['DOCPIPE_STORAGE', 'DOCPIPE_PARSER', 'WEBHOOK_SECRET', 'OPENAI_BASE_URL']);
  });

  test('a complete remote configuration', () => {
    const config = loadConfig({
      DOCPIPE_STORAGE: 'supabase',
      SUPABASE_URL: 'https://ref.supabase.co/',
      SUPABASE_SERVICE_ROLE_KEY: 'service-key',
      DOCPIPE_PARSER: 'llamaparse',
      LLAMAPARSE_API_KEY: 'llx-key',
      LLAMAPARSE_PROJECT_ID: 'p1',
      WEBHOOK_PUBLIC_URL: 'https://docpipe-webhook.fly.dev',
      WEBHOOK_SECRET: SECRET,
      DOCPIPE_EMBEDDER: 'openai',
      OPENAI_API_KEY: 'sk-key',
      EMBEDDING_DIMENSIONS: '1536',
      HOST: '::',
    });
    assert.deepEqual(config.storage, { kind: 'supabase', url: 'https://ref.supabase.co', serviceKey: 'service-key', bucket: 'documents', timeoutSeconds: 120 });
    assert.equal(config.parser.kind, 'llamaparse');
    assert.ok(config.parser.kind === 'llamaparse');
    assert.deepEqual([config.parser.tier, config.parser.version, config.parser.jobTimeout, config.parser.projectId], ['cost_effective', 'latest', { baseSeconds: 1800, perPageSeconds: 60 }, 'p1']);
    assert.deepEqual(config.embedder, {
      kind: 'openai',
      dimensions: 1536,
      apiKey: 'sk-key',
      baseUrl: 'https://api.openai.com/v1',
      model: 'text-embedding-3-small',
      timeoutSeconds: 60,
      requestsPerMinute: 3000,
      tokensPerMinute: 1_000_000,
      maxRateLimitWaitSeconds: 900,
    });
    assert.equal(config.webhook.publicUrl, 'https://docpipe-webhook.fly.dev');
    assert.equal(config.uploads.publicApiUrl, 'http://127.0.0.1:3000');
  });

  test('LlamaParse tier, version and job time limits are checked', () => {
    const base = { DOCPIPE_PARSER: 'llamaparse', LLAMAPARSE_API_KEY: 'llx-key' };
    const pinned = loadConfig({ ...base, LLAMAPARSE_TIER: 'agentic', LLAMAPARSE_VERSION: '2026-09-07', LLAMAPARSE_WEBHOOK_SIGNING_SECRET: 'whsec-'.padEnd(32, 'x'), LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO: '0.2' });
    assert.ok(pinned.parser.kind === 'llamaparse');
    assert.deepEqual([pinned.parser.tier, pinned.parser.version, pinned.parser.webhookSigningSecret, pinned.parser.allowedPageFailureRatio], ['agentic', '2026-09-07', 'whsec-'.padEnd(32, 'x'), 0.2]);
    for (const [name, value, message] of [
      ['LLAMAPARSE_TIER', 'premium', /LLAMAPARSE_TIER: must be one of fast, cost_effective, agentic, agentic_plus/],
      ['LLAMAPARSE_VERSION', '2026-13-45', /LLAMAPARSE_VERSION: must be latest or a date/],
      ['LLAMAPARSE_VERSION', 'v2', /LLAMAPARSE_VERSION: must be latest or a date/],
      ['LLAMAPARSE_JOB_TIMEOUT_BASE_SECONDS', '3600', /LLAMAPARSE_JOB_TIMEOUT_BASE_SECONDS: must be between 60 and 1800/],
      ['LLAMAPARSE_JOB_TIMEOUT_PER_PAGE_SECONDS', '301', /LLAMAPARSE_JOB_TIMEOUT_PER_PAGE_SECONDS: must be between 0 and 300/],
      ['LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO', '1.5', /LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO: must be a number between 0 and 1/],
      ['LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO', 'half', /LLAMAPARSE_ALLOWED_PAGE_FAILURE_RATIO: must be a number between 0 and 1/],
      ['LLAMAPARSE_WEBHOOK_SIGNING_SECRET', 'whsec', /LLAMAPARSE_WEBHOOK_SIGNING_SECRET: must be at least 32 characters/],
    ] as const) {
      assert.throws(() => loadConfig({ ...base, [name]: value }), (err: Error) => (assert.match(err.message, message), true), `${name}=${value}`);
    }
  });
});
