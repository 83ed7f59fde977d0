// Starts the local fakes of LlamaParse, OpenAI and Supabase Storage on fixed loopback ports, so
// `npm start` can run the real provider code paths (webhooks, polling, rate limits, signed
// uploads) without any account:
//
//   terminal 1:  npm run fakes -- --write-env .env.fakes
//   terminal 2:  set -a && . ./.env.fakes && set +a && npm start
//
// Every fake has an admin API under /_fake/ for fault injection (see test/fakes/*.ts), e.g.
//   curl -XPOST localhost:4011/_fake/webhook-mode -d '{"mode":"drop"}' -H 'content-type: application/json'
//   curl -XPOST localhost:4012/_fake/fail-next -d '{"status":429,"count":5}' -H 'content-type: application/json'
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startFakeLlamaParse } from '../test/fakes/llamaparse.ts';
import { startFakeOpenAI } from '../test/fakes/openai.ts';
import { startFakeSupabaseStorage } from '../test/fakes/supabase-storage.ts';

const { values } = parseArgs({
  options: {
    'llamaparse-port': { type: 'string', default: '4011' },
    'openai-port': { type: 'string', default: '4012' },
    'supabase-port': { type: 'string', default: '4013' },
    'webhook-port': { type: 'string', default: process.env.WEBHOOK_PORT ?? '3001' },
    'write-env': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write('usage: npm run fakes -- [--write-env FILE] [--llamaparse-port N] [--openai-port N] [--supabase-port N] [--webhook-port N]\n');
  process.exit(0);
}
const port = (name: string, raw: string) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    process.stderr.write(`fakes: --${name} must be a port number, got ${JSON.stringify(raw)}\n`);
    process.exit(2);
  }
  return n;
};

const bucket = 'documents';
const llama = await startFakeLlamaParse({ port: port('llamaparse-port', values['llamaparse-port']!), processingMs: 1500 });
const openai = await startFakeOpenAI({ port: port('openai-port', values['openai-port']!) });
const supabase = await startFakeSupabaseStorage({ port: port('supabase-port', values['supabase-port']!), buckets: [bucket] });

const env: Record<string, string> = {
  DOCPIPE_STORAGE: 'supabase',
  SUPABASE_URL: supabase.url,
  SUPABASE_SERVICE_ROLE_KEY: supabase.serviceKey,
  SUPABASE_STORAGE_BUCKET: bucket,
  DOCPIPE_PARSER: 'llamaparse',
  LLAMAPARSE_API_KEY: llama.apiKey,
  LLAMAPARSE_BASE_URL: llama.url,
  LLAMAPARSE_POLL_AFTER_SECONDS: '10',
  WEBHOOK_PUBLIC_URL: `http://127.0.0.1:${port('webhook-port', values['webhook-port']!)}`,
  WEBHOOK_SECRET: 'local-fakes-webhook-secret-not-for-production',
  LLAMAPARSE_WEBHOOK_SIGNING_SECRET: 'local-fakes-signing-secret-not-for-production',
  DOCPIPE_EMBEDDER: 'openai',
  OPENAI_API_KEY: openai.apiKey,
  OPENAI_BASE_URL: openai.url,
};
const lines = Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n');
if (values['write-env']) await writeFile(values['write-env'], lines + '\n', { mode: 0o600 });
{
  process.stdout.write(
    [
      'docpipe fakes are running (Ctrl-C stops them):',
      `  LlamaParse        ${llama.url}   admin ${llama.url}/_fake/state`,
      `  OpenAI            ${openai.url}`,
      `  Supabase Storage  ${supabase.url}/storage/v1   bucket "${bucket}"`,
      '',
      `Start docpipe against them with this environment${values['write-env'] ? ` (written to ${values['write-env']})` : ''}:`,
      '',
      lines,
      '',
    ].join('\n'),
  );
}

const stop = async () => {
  await Promise.allSettled([llama.close(), openai.close(), supabase.close()]);
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
