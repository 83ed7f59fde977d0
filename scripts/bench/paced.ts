// An open-loop, evenly paced HTTP load: request i is scheduled at t0 + i / rate, whatever the
// answers to the earlier requests did, and its latency is counted from that scheduled time
// (so a slow server or a lagging client cannot hide its queueing: no coordinated omission).
//
// Why not autocannon's `overallRate`: autocannon gives each connection a per-second quota and
// resets all quotas on one 1 s timer, so at `overallRate: 500` the connections fire the whole
// second's 500 requests back to back in the first ~100 ms and then idle (checked by timing the
// arrivals at a bare server: ~5,000 req/s bursts, then ~900 ms of nothing). Its p99 would be the
// latency of that burst, not "at 500 req/s".
//
// Used for the webhook phase: each request is a LlamaParse delivery to its own document (round
// robin over the targets) with a unique event id, or, for the duplicate pass, a re-delivery of
// an event id already sent. Runs in the load child (scripts/bench/load.ts).
import http from 'node:http';
import type { ChildMessage, CpuTimes } from './protocol.ts';
import { percentile, summarize, type Summary } from './stats.ts';

export interface WebhookTarget {
  documentId: string;
  /** The x-docpipe-webhook-token credential of the document. */
  token: string;
  /** The LlamaParse job id the document was submitted as. */
  jobId: string;
}

export interface PacedJob {
  kind: 'paced';
  name: string;
  /** Base URL; requests go to `${url}/v1/webhooks/llamaparse/${documentId}`. */
  url: string;
  /** Requests per second, evenly spaced. */
  rate: number;
  warmupSeconds: number;
  durationSeconds: number;
  /** Keep-alive sockets the client may open (open loop: it never waits for a free one unless all are busy). */
  maxSockets: number;
  /** Request i goes to targets[i % targets.length]. */
  targets: WebhookTarget[];
  /** Event id of request i: `${eventIdPrefix}-${i}` (the same prefix again re-delivers the same events). */
  eventIdPrefix: string;
}

export interface PacedResult {
  name: string;
  rate: number;
  maxSockets: number;
  /** Requests sent in the measured window (warm-up excluded) and in the warm-up. */
  sent: number;
  warmupSent: number;
  /** Measured window: first scheduled send -> last answer, s. */
  seconds: number;
  /** 2xx answers in the measured window. */
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** `outcome` field of the 2xx answers, measured window and warm-up together. */
  outcomes: Record<string, number>;
  /** 2xx answers per second of the measured window. */
  reqPerSec: number;
  /** Scheduled send -> last byte of the answer, ms, 2xx answers of the measured window. */
  latency: Summary;
  /** p99.9 of the same. */
  p999: number;
  /** Actual send -> last byte of the answer, ms (without the client's scheduling lag). */
  serviceLatency: Summary;
  /** The largest lag between a request's scheduled and actual send, ms (client-side pacing error). */
  maxSendLagMs: number;
  /** Sockets the client opened in all. */
  socketsOpened: number;
}

export type PacedChildMessage = ChildMessage | { type: 'result'; result: PacedResult; cpu: CpuTimes };

const REQUEST_TIMEOUT_MS = 10_000;

export function webhookBody(eventId: string, jobId: string): string {
  return JSON.stringify({ event_id: eventId, event_type: 'parse.success', timestamp: Date.now() / 1000, data: { id: jobId, job_id: jobId } });
}

export async function runPaced(job: PacedJob, mark: (which: 'start' | 'end') => void): Promise<PacedResult> {
  if (job.targets.length === 0) throw new Error('paced job without targets');
  const base = new URL(job.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.maxSockets });
  let socketsOpened = 0;
  const interval = 1000 / job.rate;
  let index = 0;

  interface Window {
    latencies: number[];
    service: number[];
    statusCodes: Record<string, number>;
    outcomes: Record<string, number>;
    errors: number;
    timeouts: number;
    maxLag: number;
    lastAnswer: number;
  }

  function fire(scheduled: number, w: Window): Promise<void> {
    const i = index++;
    const target = job.targets[i % job.targets.length]!;
    const body = Buffer.from(webhookBody(`${job.eventIdPrefix}-${i}`, target.jobId));
    return new Promise<void>((resolve) => {
      const sentAt = performance.now();
      w.maxLag = Math.max(w.maxLag, sentAt - scheduled);
      let settled = false;
      const done = () => {
        if (settled) return;
        settled = true;
        resolve();
      };
      const req = http.request(
        {
          host: base.hostname,
          port: base.port,
          path: `/v1/webhooks/llamaparse/${target.documentId}`,
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            'content-length': String(body.length),
            'x-docpipe-webhook-token': target.token,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () => {
            const end = performance.now();
            const status = res.statusCode ?? 0;
            w.statusCodes[status] = (w.statusCodes[status] ?? 0) + 1;
            w.lastAnswer = Math.max(w.lastAnswer, end);
            if (status >= 200 && status < 300) {
              w.latencies.push(end - scheduled);
              w.service.push(end - sentAt);
              let outcome = 'unparsed';
              try {
                outcome = String((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { outcome?: unknown }).outcome ?? 'none');
              } catch {
                /* counted as unparsed */
              }
              w.outcomes[outcome] = (w.outcomes[outcome] ?? 0) + 1;
            }
            done();
          });
          res.on('error', () => {
            w.errors++;
            done();
          });
        },
      );
      req.on('socket', (socket) => {
        if (!(socket as { benchSeen?: boolean }).benchSeen) {
          (socket as { benchSeen?: boolean }).benchSeen = true;
          socketsOpened++;
        }
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => {
        w.timeouts++;
        req.destroy(new Error('timeout'));
      });
      req.on('error', () => {
        w.errors++;
        done();
      });
      req.end(body);
    });
  }

  async function phase(seconds: number): Promise<{ w: Window; sent: number; t0: number }> {
    const count = Math.round(job.rate * seconds);
    const w: Window = { latencies: [], service: [], statusCodes: {}, outcomes: {}, errors: 0, timeouts: 0, maxLag: 0, lastAnswer: 0 };
    const inflight: Promise<void>[] = [];
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      let sent = 0;
      const tick = () => {
        const elapsed = performance.now() - t0;
        while (sent < count && sent * interval <= elapsed) {
          inflight.push(fire(t0 + sent * interval, w));
          sent++;
        }
        if (sent >= count) return resolve();
        setTimeout(tick, Math.max(0, sent * interval - (performance.now() - t0)));
      };
      tick();
    });
    await Promise.all(inflight);
    return { w, sent: count, t0 };
  }

  let warmupSent = 0;
  const warmOutcomes: Record<string, number> = {};
  if (job.warmupSeconds > 0) {
    const warm = await phase(job.warmupSeconds);
    warmupSent = warm.sent;
    Object.assign(warmOutcomes, warm.w.outcomes);
  }
  mark('start');
  const { w, sent, t0 } = await phase(job.durationSeconds);
  mark('end');
  agent.destroy();
  const seconds = (Math.max(w.lastAnswer, t0) - t0) / 1000;
  const ok = w.latencies.length;
  const total = Object.values(w.statusCodes).reduce((s, n) => s + n, 0);
  const outcomes = { ...warmOutcomes };
  for (const [k, n] of Object.entries(w.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + n;
  const sorted = [...w.latencies].sort((a, b) => a - b);
  return {
    name: job.name,
    rate: job.rate,
    maxSockets: job.maxSockets,
    sent,
    warmupSent,
    seconds,
    ok,
    non2xx: total - ok,
    errors: w.errors,
    timeouts: w.timeouts,
    statusCodes: w.statusCodes,
    outcomes,
    reqPerSec: seconds > 0 ? ok / seconds : Number.NaN,
    latency: summarize(sorted),
    p999: percentile(sorted, 99.9),
    serviceLatency: summarize(w.service),
    maxSendLagMs: w.maxLag,
    socketsOpened,
  };
}
