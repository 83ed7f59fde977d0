// What observing docpipe costs, beside what it observes: a scrape of the registry (Fly scrapes
// every 15 s), the per-request work of the onResponse hook (a histogram observation, and the
// access line that goes to stdout at LOG_LEVEL=info), and the before/after table of `--before`.
import { pino } from 'pino';
import { Histogram, Registry } from 'prom-client';
import { fmt, pct, summarize, table, type Summary } from './stats.ts';

export interface MetricsCost {
  scrape: { ms: Summary; bytes: number; series: number };
  /** Microseconds per request of the hook's histogram observation (with its label set). */
  observeMicros: number;
  /** Microseconds per access line, pino JSON at info into /dev/null (the bench itself logs nothing). */
  accessLineMicros: number;
}

export async function measureMetricsCost(registry: Registry, scrapes = 30): Promise<MetricsCost> {
  const times: number[] = [];
  let bytes = 0;
  let text = '';
  for (let i = 0; i < scrapes; i++) {
    const t = performance.now();
    text = await registry.metrics();
    times.push(performance.now() - t);
    bytes = Buffer.byteLength(text);
  }
  const series = text.split('\n').filter((l) => l && !l.startsWith('#')).length;

  const N = 200_000;
  const scratch = new Registry();
  const h = new Histogram({ name: 'x_seconds', help: 'x', labelNames: ['service', 'method', 'route', 'status_class'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [scratch] });
  let t = performance.now();
  for (let i = 0; i < N; i++) h.observe({ service: 'api', method: 'GET', route: '/v1/documents/:id', status_class: '2xx' }, (i % 100) / 10_000);
  const observeMicros = ((performance.now() - t) * 1000) / N;

  // Synchronous, as the services' logger writes to stdout (pino's default destination).
  const out = pino.destination({ dest: '/dev/null', sync: true });
  const logger = pino({ level: 'info', base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, out).child({ service: 'api' });
  const lines = 100_000;
  t = performance.now();
  for (let i = 0; i < lines; i++) {
    logger.child({ requestId: '4b1e2c1e-9a2b-4a57-8a8c-3f0f2a4d5e6f' }).info({ method: 'GET', route: '/v1/documents/:id', statusCode: 200, durationMs: 1.3 }, 'request completed');
  }
  const accessLineMicros = ((performance.now() - t) * 1000) / lines;
  return { scrape: { ms: summarize(times), bytes, series }, observeMicros, accessLineMicros };
}

export function metricsCostReport(m: MetricsCost, options: { markdown?: boolean } = {}): string {
  return table(
    ['what', 'cost'],
    [
      ['one scrape of /metrics (registry.metrics()), p50 / p99', `${fmt(m.scrape.ms.p50, 2)} / ${fmt(m.scrape.ms.p99, 2)} ms`],
      ['exposition size, series', `${fmt(m.scrape.bytes / 1024, 0)} KB, ${m.scrape.series} series`],
      ['per request: histogram observation', `${fmt(m.observeMicros, 2)} µs`],
      ['per request: access line (pino, info, to /dev/null)', `${fmt(m.accessLineMicros, 2)} µs`],
    ],
    options,
  );
}

/** The figures compared before/after, with the path to each in the bench's results. */
const COMPARED: { name: string; pick(r: any): number | undefined; unit: string; higherIsBetter: boolean }[] = [
  { name: 'hello-world req/s (no docpipe code: the noise floor)', pick: (r) => r.hello?.reqPerSec, unit: '', higherIsBetter: true },
  { name: 'GET /v1/documents/:id req/s', pick: (r) => r.get?.reqPerSec, unit: '', higherIsBetter: true },
  { name: 'GET /v1/documents/:id p99', pick: (r) => r.get?.latency?.p99, unit: ' ms', higherIsBetter: false },
  { name: 'GET as a share of hello-world', pick: (r) => (r.get && r.hello ? r.get.reqPerSec / r.hello.reqPerSec : undefined), unit: '%', higherIsBetter: true },
  { name: 'INSERT baseline req/s (no docpipe code)', pick: (r) => r.insert?.reqPerSec, unit: '', higherIsBetter: true },
  { name: 'POST /v1/documents 4 KB req/s', pick: (r) => r.post?.reqPerSec, unit: '', higherIsBetter: true },
  { name: 'POST /v1/documents p99', pick: (r) => r.post?.latency?.p99, unit: ' ms', higherIsBetter: false },
  { name: 'POST as a share of the INSERT baseline', pick: (r) => (r.post && r.insert ? r.post.reqPerSec / r.insert.reqPerSec : undefined), unit: '%', higherIsBetter: true },
  { name: 'pipeline documents/s', pick: (r) => r.pipeline?.docsPerSecond, unit: '', higherIsBetter: true },
  { name: 'pipeline Node CPU ms per document', pick: (r) => r.pipeline?.serverCpuMsPerDoc, unit: ' ms', higherIsBetter: false },
  { name: 'pipeline Postgres CPU ms per document', pick: (r) => r.pipeline?.postgresCpuMsPerDoc, unit: ' ms', higherIsBetter: false },
  { name: 'webhook p99 at the fixed rate', pick: (r) => r.webhook?.first?.latency?.p99, unit: ' ms', higherIsBetter: false },
  { name: 'webhook baseline p99 (no docpipe code)', pick: (r) => r.webhook?.baseline?.latency?.p99, unit: ' ms', higherIsBetter: false },
  { name: 'pipeline sandbox children CPU ms per document', pick: (r) => r.pipeline?.helperCpuMsPerDoc, unit: ' ms', higherIsBetter: false },
  { name: 'worker fleet: 1 process documents/s', pick: (r) => r.fleet?.scaling?.[0]?.docsPerSecond, unit: '', higherIsBetter: true },
  { name: 'worker fleet: 4 processes documents/s', pick: (r) => r.fleet?.scaling?.[2]?.docsPerSecond, unit: '', higherIsBetter: true },
  { name: 'database round trips per document (0 ms proxy)', pick: (r) => r.fleet?.near?.proxy?.roundTripsPerDoc, unit: '', higherIsBetter: false },
  { name: 'far worker documents/s', pick: (r) => r.fleet?.far?.docsPerSecond, unit: '', higherIsBetter: true },
];

export function beforeAfterReport(before: { rev: string; commit: string; results: unknown }, after: unknown, options: { markdown?: boolean } = {}): string {
  const show = (v: number | undefined, unit: string) => (v === undefined || Number.isNaN(v) ? '-' : unit === '%' ? pct(v) : `${fmt(v, unit === ' ms' ? 2 : 1)}${unit}`);
  const rows = COMPARED.map((c) => {
    const b = c.pick(before.results);
    const a = c.pick(after);
    const ratio = b !== undefined && a !== undefined && b !== 0 ? a / b : undefined;
    return [c.name, show(b, c.unit), show(a, c.unit), ratio === undefined ? '-' : `${fmt(ratio, 2)}x`];
  });
  return table([`figure`, `before (${before.commit.slice(0, 9)})`, 'after (this tree)', 'after / before'], rows, options);
}
