// The smoke test after a deploy, against real URLs (or a local stack in CI):
//
//   npm run smoke -- --api https://docpipe-api.fly.dev --webhook https://docpipe-webhook.fly.dev --token "$TOKEN"
//
// It checks /readyz of both services; uploads a one-page PDF (generated here, so the script needs
// nothing from the checkout but itself) that must reach `ready` within --ready-within seconds
// (default 10; that bound also proves the parser's webhooks arrive, since polling starts much
// later), then deletes it; that an unauthenticated webhook POST is answered 401 within 1 s; the
// error shape of a 404; and, on https URLs, the HSTS header. It prints a verdict table and exits
// 0 when every check passes, 1 when one fails, 2 for bad flags. Every wait is bounded.
//
// The token is a user JWT the deployment accepts (signed with its JWT_SECRET: `docpipe token`
// with the production variables). The webhook check counts one rejected delivery in
// docpipe_webhook_auth_failures_total (reason "missing"): expect one per smoke run.
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

const USAGE = `usage: npm run smoke -- --api URL --webhook URL --token TOKEN [--ready-within SECONDS]

  --api URL             the API's base URL, e.g. https://docpipe-api.fly.dev
  --webhook URL         the webhook service's base URL, e.g. https://docpipe-webhook.fly.dev
  --token TOKEN         a user JWT the deployment accepts (docpipe token, with its JWT_SECRET)
  --ready-within SECS   how long the uploaded PDF may take to become ready (default 10)

Exit code: 0 all checks passed, 1 a check failed, 2 bad flags.
`;

type Status = 'PASS' | 'FAIL' | 'SKIP';
interface Row {
  check: string;
  status: Status;
  ms: number | null;
  detail: string;
}

interface Target {
  api: string;
  webhook: string;
  token: string;
  readyWithinMs: number;
}

/** The flags, or a message for stderr. */
function parseFlags(argv: string[]): Target | { error: string } | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        api: { type: 'string' },
        webhook: { type: 'string' },
        token: { type: 'string' },
        'ready-within': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    return { error: (err as Error).message };
  }
  if (values.help) return 'help';
  const url = (flag: 'api' | 'webhook'): string | { error: string } => {
    const raw = values[flag];
    if (typeof raw !== 'string' || raw === '') return { error: `--${flag} is required` };
    try {
      const parsed = new URL(raw);
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error();
    } catch {
      return { error: `--${flag} must be an http:// or https:// URL, got ${JSON.stringify(raw)}` };
    }
    return raw.replace(/\/+$/, '');
  };
  const api = url('api');
  if (typeof api !== 'string') return api;
  const webhook = url('webhook');
  if (typeof webhook !== 'string') return webhook;
  if (typeof values.token !== 'string' || values.token === '') return { error: '--token is required (a user JWT the deployment accepts: docpipe token)' };
  const within = values['ready-within'] ?? '10';
  if (typeof within !== 'string' || !/^\d{1,3}$/.test(within) || Number(within) < 1) return { error: `--ready-within must be a number of seconds from 1 to 999, got ${JSON.stringify(within)}` };
  return { api, webhook, token: values.token, readyWithinMs: Number(within) * 1000 };
}

/** A one-page PDF whose text is `lines`, built by hand (valid xref), so the script needs no fixture. */
function smokePdf(lines: string[]): Buffer {
  const escape = (text: string) => text.replace(/[^\x20-\x7e]/g, '?').replace(/[\\()]/g, (c) => `\\${c}`);
  const content = ['BT', '/F1 14 Tf', '72 720 Td', '18 TL', ...lines.map((l) => `(${escape(l)}) Tj T*`), 'ET'].join('\n');
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>',
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
    `<< /Length ${Buffer.byteLength(content, 'latin1')} >>\nstream\n${content}\nendstream`,
  ];
  let pdf = '%PDF-1.4\n';
  const offsets: number[] = [];
  objects.forEach((body, i) => {
    offsets.push(Buffer.byteLength(pdf, 'latin1'));
    pdf += `${i + 1} 0 obj\n${body}\nendobj\n`;
  });
  const xref = Buffer.byteLength(pdf, 'latin1');
  pdf += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, '0')} 00000 n \n`).join('')}`;
  pdf += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(pdf, 'latin1');
}

/** Why a fetch got no answer, in a few words. */
function noAnswer(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'no answer in time';
  return `no answer (${e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err)})`;
}

const DOWN_HINT = 'is the app deployed and started? (fly status -a <app>; fly logs -a <app>)';

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - started };
}

async function readyz(name: string, base: string): Promise<Row> {
  const check = `${name} /readyz`;
  const started = performance.now();
  try {
    const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5_000) });
    const ms = performance.now() - started;
    const body = (await res.json().catch(() => null)) as { status?: string; checks?: { name: string; ok: boolean; error?: string }[] } | null;
    const checks = body?.checks ?? [];
    if (res.status === 200 && body?.status === 'ready') return { check, status: 'PASS', ms, detail: `ready: ${checks.map((c) => c.name).join(', ') || 'ok'}` };
    const failing = checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.error ?? 'failed'}`);
    if (failing.length > 0) return { check, status: 'FAIL', ms, detail: `${res.status} not ready: ${failing.join('; ')} (docpipe doctor explains each)` };
    return { check, status: 'FAIL', ms, detail: `HTTP ${res.status}, not a docpipe readiness answer: is ${base} the ${name} service?` };
  } catch (err) {
    return { check, status: 'FAIL', ms: performance.now() - started, detail: `${noAnswer(err)}: ${DOWN_HINT}` };
  }
}

type Json = Record<string, any>;

async function uploadUntilReady(t: Target, runId: string): Promise<{ row: Row; id: string | null }> {
  const check = 'upload to ready';
  const auth = { authorization: `Bearer ${t.token}` };
  const pdf = smokePdf([
    'docpipe smoke test',
    `run ${runId} at ${new Date().toISOString()}`,
    'The keeper climbed the spiral stair at dusk to light the lamp.',
    'This page checks that an upload is stored, parsed, chunked and embedded.',
  ]);
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(pdf)], { type: 'application/pdf' }), `smoke-${runId}.pdf`);
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  let id: string;
  try {
    const res = await fetch(`${t.api}/v1/documents`, {
      method: 'POST',
      body: form,
      headers: { ...auth, 'idempotency-key': `smoke-${runId}`, 'x-request-id': `smoke-${runId}` },
      signal: AbortSignal.timeout(15_000),
    });
    const body = (await res.json().catch(() => ({}))) as Json;
    if (res.status === 401) return { row: { check, status: 'FAIL', ms: elapsed(), detail: `401 ${body.error?.code ?? ''}: the API refused --token; pass a user JWT signed with the deployment's JWT_SECRET (docpipe token)` }, id: null };
    if (res.status !== 202 || typeof body.id !== 'string') {
      return { row: { check, status: 'FAIL', ms: elapsed(), detail: `the upload answered ${res.status} ${body.error?.code ?? ''} ${body.error?.message ?? ''}`.trim() + ' (see the API logs for this request id: smoke-' + runId + ')' }, id: null };
    }
    id = body.id;
  } catch (err) {
    return { row: { check, status: 'FAIL', ms: elapsed(), detail: `the upload got ${noAnswer(err)}: ${DOWN_HINT}` }, id: null };
  }

  let last: Json | null = null;
  while (elapsed() < t.readyWithinMs) {
    // Long-poll: the API answers as soon as the document changes, at the latest after `wait`.
    const wait = Math.max(1, Math.min(30, Math.floor((t.readyWithinMs - elapsed()) / 1000)));
    try {
      const res = await fetch(`${t.api}/v1/documents/${id}?wait=${wait}`, {
        headers: { ...auth, ...(last ? { 'if-none-match': `"${last.version}"` } : {}) },
        signal: AbortSignal.timeout(wait * 1000 + 5_000),
      });
      if (res.status === 200) last = (await res.json()) as Json;
      else if (res.status !== 304) {
        const body = (await res.json().catch(() => ({}))) as Json;
        return { row: { check, status: 'FAIL', ms: elapsed(), detail: `document ${id}: the status answered ${res.status} ${body.error?.code ?? ''}` }, id };
      }
    } catch (err) {
      return { row: { check, status: 'FAIL', ms: elapsed(), detail: `document ${id}: the status got ${noAnswer(err)}` }, id };
    }
    if (last?.status === 'ready') return { row: { check, status: 'PASS', ms: elapsed(), detail: `document ${id} ready, ${last.chunkCount} chunk${last.chunkCount === 1 ? '' : 's'}` }, id };
    if (last?.status === 'failed') {
      return { row: { check, status: 'FAIL', ms: elapsed(), detail: `document ${id} failed: ${last.error?.code} ${last.error?.message ?? ''} (GET /v1/documents/${id}/events has every attempt)` }, id };
    }
  }
  return {
    row: {
      check,
      status: 'FAIL',
      ms: elapsed(),
      detail: `document ${id} still ${last?.status ?? 'unknown'} after ${t.readyWithinMs / 1000} s: is the worker running? with LlamaParse, do webhooks reach WEBHOOK_PUBLIC_URL (polling starts only after LLAMAPARSE_POLL_AFTER_SECONDS)?`,
    },
    id,
  };
}

async function remove(t: Target, id: string | null): Promise<Row> {
  const check = 'delete';
  if (!id) return { check, status: 'SKIP', ms: null, detail: 'no document was uploaded' };
  try {
    const { value: res, ms } = await timed(() => fetch(`${t.api}/v1/documents/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${t.token}` }, signal: AbortSignal.timeout(10_000) }));
    if (res.status === 204) return { check, status: 'PASS', ms, detail: `document ${id} deleted` };
    const body = (await res.json().catch(() => ({}))) as Json;
    return { check, status: 'FAIL', ms, detail: `DELETE answered ${res.status} ${body.error?.code ?? ''}: remove document ${id} by hand once the cause is fixed` };
  } catch (err) {
    return { check, status: 'FAIL', ms: null, detail: `DELETE got ${noAnswer(err)}: remove document ${id} by hand` };
  }
}

async function webhookRefusesStrangers(t: Target): Promise<Row> {
  const check = 'webhook without credential';
  const url = `${t.webhook}/v1/webhooks/llamaparse/${randomUUID()}`;
  const body = JSON.stringify({ event_id: randomUUID(), event_type: 'parse.success', data: { id: randomUUID(), job_id: randomUUID() } });
  const started = performance.now();
  try {
    const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', 'user-agent': 'docpipe-smoke' }, signal: AbortSignal.timeout(5_000) });
    const answer = (await res.json().catch(() => ({}))) as Json;
    const ms = performance.now() - started;
    if (res.status !== 401) {
      return { check, status: 'FAIL', ms, detail: `answered ${res.status}, not 401: the webhook endpoint accepts unauthenticated deliveries, or ${t.webhook} is not the webhook service` };
    }
    if (ms >= 1000) return { check, status: 'FAIL', ms, detail: `401 took ${Math.round(ms)} ms (over 1 s): the service is overloaded or starting; check its metrics and logs` };
    return { check, status: 'PASS', ms, detail: `401 ${answer.error?.code ?? ''}`.trim() };
  } catch (err) {
    return { check, status: 'FAIL', ms: performance.now() - started, detail: `${noAnswer(err)}: ${DOWN_HINT}` };
  }
}

async function errorShape(t: Target, runId: string): Promise<Row> {
  const check = '404 error shape';
  const requestId = `smoke-404-${runId}`;
  try {
    const { value: res, ms } = await timed(() =>
      fetch(`${t.api}/v1/documents/${randomUUID()}`, { headers: { authorization: `Bearer ${t.token}`, 'x-request-id': requestId }, signal: AbortSignal.timeout(5_000) }),
    );
    const body = (await res.json().catch(() => null)) as Json | null;
    const error = body?.error;
    const shaped = error && typeof error.code === 'string' && typeof error.message === 'string' && typeof error.requestId === 'string';
    if (res.status !== 404 || !shaped) {
      return { check, status: 'FAIL', ms, detail: `expected 404 {"error":{"code","message","requestId"}}, got ${res.status} ${JSON.stringify(body).slice(0, 120)}: is ${t.api} the docpipe API, and does it accept --token?` };
    }
    if (error.requestId !== requestId) return { check, status: 'FAIL', ms, detail: `requestId ${JSON.stringify(error.requestId)} is not the X-Request-Id sent (${requestId}): a proxy in front rewrites it?` };
    return { check, status: 'PASS', ms, detail: `404 ${error.code}, requestId echoed` };
  } catch (err) {
    return { check, status: 'FAIL', ms: null, detail: `${noAnswer(err)}: ${DOWN_HINT}` };
  }
}

async function hsts(name: string, base: string): Promise<Row> {
  const check = `${name} HSTS`;
  if (!base.startsWith('https:')) return { check, status: 'SKIP', ms: null, detail: 'http URL: HSTS applies to https only' };
  try {
    const { value: res, ms } = await timed(() => fetch(`${base}/healthz`, { signal: AbortSignal.timeout(5_000) }));
    await res.arrayBuffer();
    const header = res.headers.get('strict-transport-security');
    const maxAge = Number(/max-age=(\d+)/i.exec(header ?? '')?.[1] ?? 0);
    if (!header || maxAge <= 0) {
      return { check, status: 'FAIL', ms, detail: `no Strict-Transport-Security header${header ? ` with a max-age (got ${JSON.stringify(header)})` : ''}: set it on the service (e.g. in the fly.toml's [http_service.http_options.response.headers])` };
    }
    return { check, status: 'PASS', ms, detail: header };
  } catch (err) {
    return { check, status: 'FAIL', ms: null, detail: `${noAnswer(err)}: ${DOWN_HINT}` };
  }
}

function table(t: Target, rows: Row[]): string {
  const time = (ms: number | null) => (ms === null ? '' : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`);
  const width = Math.max(5, ...rows.map((r) => r.check.length));
  const lines = [
    'docpipe smoke test',
    `  api      ${t.api}`,
    `  webhook  ${t.webhook}`,
    '',
    `${'CHECK'.padEnd(width)}  RESULT  ${'TIME'.padEnd(8)}  DETAIL`,
    ...rows.map((r) => `${r.check.padEnd(width)}  ${r.status.padEnd(6)}  ${time(r.ms).padEnd(8)}  ${r.detail}`),
    '',
  ];
  const failed = rows.filter((r) => r.status === 'FAIL').length;
  const skipped = rows.filter((r) => r.status === 'SKIP').length;
  lines.push(`verdict: ${failed === 0 ? 'PASS' : 'FAIL'} (${rows.length - failed - skipped} passed, ${failed} failed, ${skipped} skipped)`);
  return lines.join('\n') + '\n';
}

async function main(): Promise<number> {
  const target = parseFlags(process.argv.slice(2));
  if (target === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if ('error' in target) {
    process.stderr.write(`smoke: ${target.error}\n\n${USAGE}`);
    return 2;
  }
  const runId = randomUUID().slice(0, 8);
  const rows: Row[] = [await readyz('api', target.api), await readyz('webhook', target.webhook)];
  const upload = await uploadUntilReady(target, runId);
  rows.push(upload.row, await remove(target, upload.id));
  rows.push(await webhookRefusesStrangers(target), await errorShape(target, runId));
  rows.push(await hsts('api', target.api), await hsts('webhook', target.webhook));
  process.stdout.write(table(target, rows));
  return rows.some((r) => r.status === 'FAIL') ? 1 : 0;
}

process.exitCode = await main();
