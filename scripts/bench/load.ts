// The load generator, run as a child process of the harness so that the client's CPU work
// (autocannon's HTTP client, body generation) runs on its own event loop and not on the
// server's. It receives one job over IPC, reports `mark` messages around the measured window
// (the harness samples CPU there) and sends back one result. The evenly paced webhook load
// (`kind: 'paced'`) lives in ./paced.ts.
import http from 'node:http';
import { once } from 'node:events';
import autocannon from 'autocannon';
import { MULTIPART_CONTENT_TYPE, multipartBody, multipartFraming, textDocument } from './documents.ts';
import { runPaced, type PacedChildMessage, type PacedJob, type PacedResult } from './paced.ts';
import type { AutocannonJob, AutocannonResult, Job, JobResult, UploadLargeJob, UploadLargeResult, UploadManyJob, UploadManyResult } from './protocol.ts';
import { summarize } from './stats.ts';

const now = () => performance.timeOrigin + performance.now();

function send(message: PacedChildMessage): void {
  process.send?.(message);
}

function mark(which: 'start' | 'end'): void {
  send({ type: 'mark', mark: which, cpu: process.cpuUsage() });
}

async function cannon(job: AutocannonJob, seconds: number, latencies: number[] | null): Promise<autocannon.Result> {
  const headers = { ...job.headers, ...(job.body === 'multipart-4k' ? { 'content-type': MULTIPART_CONTENT_TYPE } : {}) };
  const request: autocannon.Request = { method: job.method, headers };
  if (job.body === 'multipart-4k') {
    request.setupRequest = (req) => ({ ...req, body: multipartBody('bench.txt', textDocument(4096, 'autocannon')) });
  }
  return new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      { url: job.url, connections: job.connections, duration: seconds, timeout: 10, requests: [request] },
      (err: unknown, result: autocannon.Result) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(result)),
    );
    if (latencies) {
      instance.on('response', (_client, statusCode, _bytes, responseTime) => {
        if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
      });
    }
  });
}

async function runAutocannon(job: AutocannonJob): Promise<AutocannonResult> {
  if (job.warmupSeconds > 0) await cannon(job, job.warmupSeconds, null);
  const latencies: number[] = [];
  mark('start');
  const started = now();
  const result = await cannon(job, job.durationSeconds, latencies);
  const seconds = (now() - started) / 1000;
  mark('end');
  const statusCodes: Record<string, number> = {};
  for (const [code, stat] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = stat.count ?? 0;
  return {
    name: job.name,
    connections: job.connections,
    seconds,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    reqPerSec: result['2xx'] / seconds,
    latency: summarize(latencies),
  };
}

async function runUploadMany(job: UploadManyJob): Promise<UploadManyResult> {
  // Bodies are prebuilt so the upload burst measures the server, not the generator.
  const bodies = Array.from({ length: job.count }, (_, i) => multipartBody(`doc-${i}.txt`, textDocument(job.bytes, 'pipeline')));
  const statusCodes: Record<string, number> = {};
  const ids: string[] = [];
  const latencies: number[] = [];
  let next = 0;
  mark('start');
  const startedAt = now();
  await Promise.all(
    Array.from({ length: Math.min(job.concurrency, job.count) }, async () => {
      while (next < bodies.length) {
        const body = bodies[next++]!;
        const t = now();
        const res = await fetch(`${job.url}/v1/documents`, {
          method: 'POST',
          body,
          headers: { authorization: `Bearer ${job.token}`, 'content-type': MULTIPART_CONTENT_TYPE },
        });
        const json = (await res.json().catch(() => null)) as { id?: string } | null;
        latencies.push(now() - t);
        statusCodes[res.status] = (statusCodes[res.status] ?? 0) + 1;
        if (res.status === 202 && json?.id) ids.push(json.id);
      }
    }),
  );
  const finishedAt = now();
  mark('end');
  return { startedAt, finishedAt, accepted: ids.length, statusCodes, ids, latency: summarize(latencies) };
}

async function runUploadLarge(job: UploadLargeJob): Promise<UploadLargeResult> {
  const { head, tail } = multipartFraming('large.txt');
  const chunk = textDocument(1024 * 1024, 'large');
  const url = new URL('/v1/documents', job.url);
  const started = now();
  const req = http.request(url, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${job.token}`,
      'content-type': MULTIPART_CONTENT_TYPE,
      'content-length': String(head.length + job.bytes + tail.length),
    },
  });
  const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  req.write(head);
  for (let sent = 0; sent < job.bytes; sent += chunk.length) {
    const piece = job.bytes - sent >= chunk.length ? chunk : chunk.subarray(0, job.bytes - sent);
    if (!req.write(piece)) await Promise.race([once(req, 'drain'), response]);
  }
  req.end(tail);
  const { status, body } = await response;
  const id = status === 202 ? ((JSON.parse(body) as { id?: string }).id ?? null) : null;
  return { status, id, seconds: (now() - started) / 1000, body: body.slice(0, 300) };
}

async function run(job: Job | PacedJob): Promise<JobResult | PacedResult> {
  switch (job.kind) {
    case 'paced':
      return runPaced(job, mark);
    case 'autocannon':
      return runAutocannon(job);
    case 'upload-many':
      return runUploadMany(job);
    case 'upload-large':
      return runUploadLarge(job);
  }
}

process.once('message', (job: Job | PacedJob) => {
  run(job).then(
    (result) => send({ type: 'result', result, cpu: process.cpuUsage() } as PacedChildMessage),
    (err: unknown) => send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  ).finally(() => process.disconnect?.());
});
